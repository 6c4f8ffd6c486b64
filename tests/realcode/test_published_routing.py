"""Published attention whose keys are not one per query head, or whose
tokens are chosen by the input: keys shared by every head (multi-query,
x-transformers' einsum on head-less keys) or by groups of heads, a fixed
context that is not the sequence, and tokens routed to a heavy attention
(CoLT5).  Truth from each package's source (see the model files), FLOPs
against FlopCounterMode on a real forward, at the traced length and at one
never traced (batch 2)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import attncost

HERE = Path(__file__).parent
for _folder in (HERE, HERE.parent):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

from oracle import count_flops, load_module  # noqa: E402
from published_support import require  # noqa: E402


def _real_flops(model, mod, n: int, batch: int) -> int:
    torch.manual_seed(0)
    return count_flops(model.eval(), mod.example_inputs(n, batch=batch))


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_xtransformers_keys_shared_by_heads(kv_heads, tmp_path, monkeypatch):
    require("x_transformers")
    monkeypatch.setenv("XT_KV_HEADS", str(kv_heads))
    mod = load_module(HERE / "published_xtransformers_shared_keys.py")
    model = mod.build_model(kv_heads)
    attends = [m for m in model.modules() if type(m).__name__ == "Attention"]
    assert {m.to_k.out_features // 16 for m in attends} == {kv_heads}  # the truth, in the code
    a = attncost.analyze(HERE / "published_xtransformers_shared_keys.py", seq_len=128,
                         device="cpu")
    assert len(a.sites) == 4
    assert {(s.heads, s.kv_heads) for s in a.sites} == {(4, kv_heads)}
    self_attn = [s for s in a.sites if s.causal]
    cross = [s for s in a.sites if not s.causal]
    assert len(self_attn) == len(cross) == 2
    for s in cross:  # 4 heads × N queries × 10 context keys × (16 + 16)
        assert s.complexity == "N*M*d"
        assert a.at(s.flops, 300, 1) == 2 * 4 * 300 * mod.CONTEXT * (16 + 16)
    assert a.at(a.flops, 128, 1) == _real_flops(model, mod, 128, 1)
    assert a.at(a.flops, 200, 2) == _real_flops(model, mod, 200, 2)


def test_colt5_routed_tokens_are_chosen_by_the_input():
    require("colt5_attention")
    mod = load_module(HERE / "published_colt5.py")
    a = attncost.analyze(HERE / "published_colt5.py", seq_len=256, device="cpu")
    light = [s for s in a.sites if s.variant == "local"]
    heavy = [s for s in a.sites if s.variant == "sparse"]
    assert len(light) == 1 and len(heavy) == 1 and len(a.sites) == 2
    # 32 routed queries × (32 routed keys + the null key), 2 heads of 16, at any length
    for n in (256, 1024):
        assert a.at(heavy[0].flops, n, 1) == 2 * 2 * mod.ROUTED * (mod.ROUTED + 1) * (16 + 16)
    assert heavy[0].heads == 2
    model = mod.build_model()
    assert tuple(model.heavy_attn.null_kv.shape) == (2, 2, 16)
    assert a.at(a.flops, 256, 1) == _real_flops(model, mod, 256, 1)
    assert a.at(a.flops, 320, 2) == _real_flops(model, mod, 320, 2)


def test_sinkhorn_buckets_are_chosen_by_the_input():
    """Each bucket of queries meets its own bucket's keys and those of the
    2 key buckets its sort net ranks highest: a top-k of scores computed
    from the input, scattered into a matrix that picks the buckets' keys by
    a product.  Sparse and chosen by content, 96 keys per query."""
    require("sinkhorn_transformer")
    mod = load_module(HERE / "published_sinkhorn.py")
    a = attncost.analyze(HERE / "published_sinkhorn.py", seq_len=256, device="cpu")
    assert [(s.variant, s.causal, s.content_based, s.heads) for s in a.sites] == \
        [("sparse", False, True, 2)] * 2
    keys = mod.BUCKET * (mod.TOP_BUCKETS + 1)
    for s in a.sites:  # 2 heads × N queries × 96 keys × (16 + 16)
        assert a.at(s.useful_flops, 512, 2) == 2 * 2 * 2 * 512 * keys * (16 + 16)
    model = mod.build_model()
    assert a.at(a.flops, 256, 1) == _real_flops(model, mod, 256, 1)
    assert a.at(a.flops, 512, 2) == _real_flops(model, mod, 512, 2)


def test_xtransformers_memory_keys_every_query_sees():
    require("x_transformers")
    mod = load_module(HERE / "published_xtransformers_memory_kv.py")
    model = mod.build_model()
    memories = [m.mem_k for m in model.modules() if hasattr(m, "mem_k") and m.mem_k is not None]
    assert [tuple(t.shape) for t in memories] == [(2, mod.MEMORY, 16)] * 2  # the truth, in the code
    a = attncost.analyze(HERE / "published_xtransformers_memory_kv.py", seq_len=128, device="cpu")
    assert [(s.variant, s.causal, s.heads) for s in a.sites] == [("dense", True, 2)] * 2
    for s in a.sites:
        n = 1024  # causal pairs, plus the 4 memory keys for every query, by brute force
        i, j = torch.arange(n)[:, None], torch.arange(n + mod.MEMORY)[None, :]
        pairs = int((j - mod.MEMORY <= i).sum())
        assert a.at(s.useful_flops, n, 1) == 2 * pairs * 2 * (16 + 16)
    assert a.at(a.flops, 128, 1) == _real_flops(model, mod, 128, 1)
    assert a.at(a.flops, 200, 2) == _real_flops(model, mod, 200, 2)


def test_xtransformers_sparse_topk_keeps_k_keys_a_query():
    """The top-k is compared by value: with the weights read as zeros every
    logit ties with the k-th and every causal pair was counted as kept.
    Distinct logits keep min(TOPK, i + 1) keys for query i."""
    require("x_transformers")
    mod = load_module(HERE / "published_xtransformers_sparse_topk.py")
    model = mod.build_model()
    a = attncost.analyze(HERE / "published_xtransformers_sparse_topk.py", seq_len=128,
                         device="cpu")
    assert [(s.variant, s.causal, s.heads) for s in a.sites] == [("sparse", True, 2)] * 2
    for s in a.sites:
        for n in (128, 1000):
            kept = sum(min(mod.TOPK, i + 1) for i in range(n))
            assert a.at(s.useful_flops, n, 1) == 2 * kept * 2 * (16 + 16), n
            assert a.at(s.flops, n, 1) == 2 * n * n * 2 * (16 + 16)
    assert a.at(a.flops, 128, 1) == _real_flops(model, mod, 128, 1)
    assert a.at(a.flops, 200, 2) == _real_flops(model, mod, 200, 2)
