"""diffusers' diffusion transformers, built tiny from arguments: joint
attention over image and text tokens (SD3's MMDiT, Flux's double- and
single-stream blocks) and Sana's channels-first ReLU linear attention
beside its cross-attention.  The truth of each was read from diffusers'
source (quoted in each model file); FLOPs are checked against
FlopCounterMode over a real forward at the traced length and at lengths
never traced, the per-site counts derived by hand below."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent
for _folder in (HERE, HERE.parent):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

import attncost  # noqa: E402
from attncost.expr import N  # noqa: E402
from oracle import count_flops, load_module  # noqa: E402

_DONE: dict = {}


def _model_file(name: str):
    return load_module(HERE / f"published_diffusers_{name}.py")


def _analysed(name: str, seq_len: int = 64):
    if name not in _DONE:
        _model_file(name)  # skips where diffusers is not installed
        _DONE[name] = attncost.analyze(HERE / f"published_diffusers_{name}.py", seq_len=seq_len,
                                       device="cpu")
    return _DONE[name]


def _real_flops(name: str, n: int, batch: int) -> int:
    mod = _model_file(name)
    torch.manual_seed(0)
    return count_flops(mod.build_model().eval(), (), mod.example_inputs(n, batch))


@pytest.mark.parametrize("name,sites", [("sd3", 2), ("flux", 2), ("chroma", 2)])
def test_joint_attention_runs_over_image_and_text_tokens(name, sites):
    """SD3, Flux and Chroma attend over the N image tokens and the 8 text
    tokens together: dense, bidirectional, N + 8 queries and keys, each
    pair's Q·Kᵀ and P·V 2·(16 + 16) per head.  Chroma fixes the batch it is
    traced at: its FLOPs are checked at three batches."""
    mod = _model_file(name)
    a = _analysed(name)
    assert len(a.sites) == sites
    tokens = N + mod.TEXT
    for s in a.sites:
        assert (s.variant, s.causal, s.heads, s.head_dim) == ("dense", False, mod.HEADS,
                                                               mod.DIM_HEAD)
        assert (s.query_len, s.key_len) == (tokens, tokens)
        for n in (64, 300):
            pairs = (n + mod.TEXT) ** 2
            assert a.at(s.useful_flops, n, 1) == mod.HEADS * pairs * 2 * 2 * mod.DIM_HEAD, n
    for n, b in ((64, 1), (96, 2), (80, 3)):
        assert a.at(a.flops, n, b) == _real_flops(name, n, b), (n, b)


def test_channels_first_linear_attention_beside_cross_attention():
    """Sana's self-attention is linear: 2 heads over N queries and keys,
    V·φ(K)ᵀ and S·φ(Q) with the value padded by a row of ones (its
    normalizer), 2·N·16·17 per head each.  Its cross-attention is dense,
    N queries against the 8 text tokens."""
    mod = _model_file("sana")
    a = _analysed("sana")
    by_kind = {}
    for s in a.sites:
        by_kind.setdefault(s.variant, []).append(s)
    assert sorted((k, len(v)) for k, v in by_kind.items()) == [("dense", mod.DEPTH),
                                                               ("linear", mod.DEPTH)]
    for s in by_kind["linear"]:
        assert (s.heads, s.query_len, s.key_len, s.feature_dim) == (mod.HEADS, N, N,
                                                                    mod.DIM_HEAD)
        for n in (64, 500):
            per_head = 2 * 2 * n * mod.DIM_HEAD * (mod.DIM_HEAD + 1)
            assert a.at(s.useful_flops, n, 1) == mod.HEADS * per_head, n
    for s in by_kind["dense"]:
        assert (s.heads, s.query_len, s.key_len, s.causal) == (mod.HEADS, N, mod.TEXT, False)
        assert a.at(s.useful_flops, 300, 1) == mod.HEADS * 300 * mod.TEXT * 2 * 2 * mod.DIM_HEAD
    for n, b in ((64, 1), (200, 2)):
        assert a.at(a.flops, n, b) == _real_flops("sana", n, b), (n, b)
