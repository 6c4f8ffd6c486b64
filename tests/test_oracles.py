"""FLOP formulas against oracles that do not share the code's assumptions.

Every model here has a value head dim d_v different from the query/key head
dim d_qk (as DeepSeek's MLA has), most with GQA, so an oracle or a rule that
silently takes d_v = d_qk, or counts K/V heads instead of query heads, gives
a different number.  The oracles:

* FlopCounterMode over a real forward with SDPA forced onto its math backend,
  so torch itself counts every matrix product (nothing added by hand);
* FlopCounterMode on the fused SDPA ops themselves (meta tensors), torch's own
  count for the kernels a GPU runs;
* formulas derived by hand below from each model's settings, and a brute-force
  count of the (query, key) pairs a causal mask allows.
"""
from __future__ import annotations

import pytest
import sympy
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

import attncost
from attncost.expr import degree
import attncost.rules.flops as flop_rules_module
from attncost.rules.flops import FLOP_RULES
from conftest import MODELS
from oracle import load_module

aten = torch.ops.aten

TRACE_N, TRACE_B = 40, 2
#: lengths and batches never passed to analyze
POINTS = [(n, b) for n in (7, 33, 64) for b in (1, 3)]

#: Fused attention kernels: FlopCounterMode counts some of them 0 on a CPU, so
#: the oracle below refuses to run if one of them was dispatched.
FUSED_KERNELS = {getattr(aten, name) for name in (
    "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
    "_flash_attention_forward", "_efficient_attention_forward") if hasattr(aten, name)}


class _FusedKernelSeen(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in FUSED_KERNELS:
            self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


def flopcounter(model, args=(), kwargs=None) -> int:
    """FLOPs of one real forward, as FlopCounterMode counts them, with every
    SDPA call decomposed into the matrix products torch really runs."""
    fused = _FusedKernelSeen()
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc, fused:
        model(*args, **(kwargs or {}))
    assert not fused.seen, f"a fused kernel ran, which FlopCounterMode may count 0: {fused.seen}"
    return fc.get_total_flops()


def allowed_pairs(n: int, causal: bool) -> int:
    """(query i, key j) pairs the mask lets through, counted one by one."""
    return sum(1 for i in range(n) for j in range(n) if j <= i or not causal)


_ANALYSES: dict = {}


def analysis(name: str):
    if name not in _ANALYSES:
        _ANALYSES[name] = attncost.analyze(MODELS / f"{name}.py", seq_len=TRACE_N, batch=TRACE_B,
                                           device="cpu")
    return _ANALYSES[name]


def file_oracle(name: str, n: int, b: int) -> int:
    mod = load_module(MODELS / f"{name}.py")
    torch.manual_seed(0)
    return flopcounter(mod.build_model().eval(), mod.example_inputs(n, batch=b))


def hand_settings(name: str):
    """(heads, kv_heads, d_qk, d_v, causal) per attention layer, read off the
    model file's own settings."""
    mod = load_module(MODELS / f"{name}.py")
    if name == "mla_sdpa":
        return list(mod.LAYERS)
    return [(mod.HEADS, mod.KV_HEADS, mod.D_QK, mod.D_V, True)] * 2


# ------------------------------------------------ (a) totals vs FlopCounterMode


@pytest.mark.parametrize("name", ["mla_sdpa", "mla_unfused"])
def test_total_flops_with_dv_ne_dqk_match_flopcounter(name):
    a = analysis(name)
    for n, b in POINTS:
        assert a.at(a.flops, n, b) == file_oracle(name, n, b), (name, n, b)


# ------------------------------------------------ (b) site FLOPs derived by hand


@pytest.mark.parametrize("name", ["mla_sdpa", "mla_unfused"])
def test_site_flops_equal_the_hand_formula(name):
    a = analysis(name)
    layers = hand_settings(name)
    assert len(a.sites) == len(layers)
    for s, (h, _kv, d_qk, d_v, causal) in zip(a.sites, layers):
        assert (s.variant, s.causal, s.heads, s.head_dim) == ("dense", causal, h, d_qk)
        for n, b in POINTS:
            # Q·Kᵀ: B·H·N·N dot products of length d_qk; P·V: B·H·N·N multiply-adds
            # into each of d_v output columns; 2 FLOPs per multiply-add.
            assert a.at(s.flops, n, b) == 2 * b * h * n * n * d_qk + 2 * b * h * n * n * d_v
            assert a.at(s.flops_per_head, n, b) == 2 * b * n * n * (d_qk + d_v)
        assert s.matches_formula, (s.name, s.formula)


def test_unfused_gqa_heads():
    a = analysis("mla_unfused")
    mod = load_module(MODELS / "mla_unfused.py")
    assert [(s.heads, s.kv_heads) for s in a.sites] == [(mod.HEADS, mod.KV_HEADS)] * 2


def test_fused_call_with_dv_ne_dqk_is_read_as_the_cuda_kernel():
    """A CPU runs SDPA with d_v != d_qk in math (bmm, softmax: N×N scores); a
    GPU runs the memory-efficient kernel: on CUDA the site is that kernel's,
    with its own K/V heads, the same FLOPs and no N×N tensor."""
    cpu = analysis("mla_sdpa")
    cuda = attncost.analyze(MODELS / "mla_sdpa.py", seq_len=TRACE_N, batch=TRACE_B,
                            device="cuda")
    layers = hand_settings("mla_sdpa")
    assert [(s.implementation, s.kv_heads) for s in cuda.sites] == \
        [("sdpa", kv) for _, kv, *_ in layers]
    assert [s.implementation for s in cpu.sites] == ["unfused"] * len(layers)
    for n, b in POINTS:
        assert cuda.at(cuda.flops, n, b) == cpu.at(cpu.flops, n, b)
    assert degree(cuda.peak_memory_bytes) == 1 and degree(cpu.peak_memory_bytes) == 2


# ------------------------------------------------ (c) causal useful FLOPs, brute force


@pytest.mark.parametrize("name", ["mla_sdpa", "mla_unfused"])
def test_useful_flops_count_the_allowed_pairs(name):
    a = analysis(name)
    for s, (h, _kv, d_qk, d_v, causal) in zip(a.sites, hand_settings(name)):
        for n, b in POINTS:
            assert a.at(s.useful_flops, n, b) == b * h * allowed_pairs(n, causal) * 2 * (d_qk + d_v)
        # the products run over every pair (the mask only zeroes scores), so
        # the code as written executes the dense formula, exactly
        assert (s.formula, s.matches_formula) == ("dense", True), s.name


# ------------------------------------------------ fused SDPA kernels: torch's own count

#: (heads, kv_heads, d_qk, d_v): MLA-like d_qk > d_v and d_qk < d_v, with and
#: without GQA; the last row has d_v = d_qk, where a d_v bug cannot show.
SHAPES = [(6, 2, 24, 16), (4, 4, 8, 20), (8, 1, 192, 128), (4, 4, 16, 16)]
FUSED_SDPA = [op for op in (aten._scaled_dot_product_efficient_attention,
                            aten._scaled_dot_product_flash_attention,
                            aten._scaled_dot_product_cudnn_attention) if hasattr(aten, op.__name__)]


def _meta(*shape):
    return torch.empty(*shape, device="meta", dtype=torch.bfloat16)


def _torch_count(op, h, kv, d_qk, d_v, n, m, b) -> int:
    """FlopCounterMode's count for one call of a fused SDPA kernel (meta tensors)."""
    q, k, v = _meta(b, h, n, d_qk), _meta(b, kv, m, d_qk), _meta(b, kv, m, d_v)
    args = (q, k, v) if op is aten._scaled_dot_product_flash_attention else (q, k, v, None, False)
    with FlopCounterMode(display=False) as fc:
        op.default(*args)
    return fc.get_total_flops()


def _rule_count(op, h, kv, d_qk, d_v, key_len):
    """attncost's rule for the op, over symbolic (B, H, N, d) shapes."""
    B, N = attncost.B, attncost.N
    return FLOP_RULES.get(op.default)((B, h, N, d_qk), (B, kv, key_len, d_qk), (B, kv, key_len, d_v))


def _fused_rows():
    for op in FUSED_SDPA:
        for h, kv, d_qk, d_v in SHAPES:
            for key_len in ("N", 77):  # self-attention and a fixed-length cross-attention
                yield op, h, kv, d_qk, d_v, key_len


def _disagreements():
    """Rows where attncost's fused-attention rule and FlopCounterMode differ."""
    out = []
    for op, h, kv, d_qk, d_v, key_len in _fused_rows():
        expr = _rule_count(op, h, kv, d_qk, d_v, attncost.N if key_len == "N" else key_len)
        for n, b in POINTS:
            m = n if key_len == "N" else key_len
            got = int(sympy.sympify(expr).subs({attncost.N: n, attncost.B: b}))
            if got != _torch_count(op, h, kv, d_qk, d_v, n, m, b):
                out.append((op.__name__, h, kv, d_qk, d_v, key_len, n, b))
    return out


def test_fused_sdpa_rules_match_flopcounter_with_dv_and_gqa():
    assert _disagreements() == []


def test_oracles_catch_a_product_that_ignores_dv(monkeypatch):
    """Meta-test: with the product taking d_v = d_qk, the oracle comparison
    fails on every row where they differ, and only there (the d_v = d_qk row
    is why the suite could not see it)."""
    def ignores_dv(q, k, v):
        b, h, n_q, d_qk = q
        return 2 * b * h * n_q * k[-2] * d_qk + 2 * b * h * n_q * k[-2] * d_qk

    monkeypatch.setattr(flop_rules_module, "attention_flops", ignores_dv)
    bad = _disagreements()
    caught = {(h, kv, d_qk, d_v) for _, h, kv, d_qk, d_v, *_ in bad}
    assert caught == {s for s in SHAPES if s[2] != s[3]}
    assert {name for name, *_ in bad} == {op.__name__ for op in FUSED_SDPA}


def test_oracles_see_dv_end_to_end():
    """Meta-test: the model-level oracle depends on d_v.  Counting any one
    layer's P·V (or all of them) with d_qk columns instead of d_v gives a
    total FlopCounterMode does not count, so a product ignoring d_v fails."""
    n, b = 33, 3
    counted = file_oracle("mla_sdpa", n, b)
    a = analysis("mla_sdpa")
    assert a.at(a.flops, n, b) == counted
    shifts = [2 * b * h * n * n * (d_qk - d_v)  # P·V counted with d_qk columns
              for h, _kv, d_qk, d_v, _causal in hand_settings("mla_sdpa")]
    for wrong in [*shifts, sum(shifts)]:
        assert a.at(a.flops, n, b) + wrong != counted


# ------------------------------------------------ a transformers MLA config

DEEPSEEK_V3 = dict(model_type="deepseek_v3", architectures=["DeepseekV3ForCausalLM"],
                   hidden_size=64, num_attention_heads=4, num_key_value_heads=4,
                   qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=12, kv_lora_rank=32,
                   q_lora_rank=48, num_hidden_layers=2, first_k_dense_replace=2,
                   intermediate_size=96, moe_intermediate_size=32, n_routed_experts=4,
                   n_shared_experts=1, num_experts_per_tok=2, n_group=1, topk_group=1,
                   vocab_size=128, max_position_embeddings=512)


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_deepseek_v3_mla_matches_flopcounter(write_config, impl):
    transformers = pytest.importorskip("transformers")
    if not hasattr(transformers, "DeepseekV3ForCausalLM"):
        pytest.skip("this transformers has no DeepSeek-V3")
    try:
        config = transformers.AutoConfig.for_model(**DEEPSEEK_V3)
        config._attn_implementation = impl
        torch.manual_seed(0)
        model = transformers.DeepseekV3ForCausalLM(config).eval()
    except Exception as exc:  # noqa: BLE001 - any config this version cannot build
        pytest.skip(f"transformers cannot build the tiny DeepSeek-V3: {exc}")
    folder = write_config("deepseek_v3", **DEEPSEEK_V3)
    a = attncost.analyze(folder, seq_len=48, attn_implementation=impl, kv_cache=False,
                         device="cpu")
    h = DEEPSEEK_V3["num_attention_heads"]
    d_qk = DEEPSEEK_V3["qk_nope_head_dim"] + DEEPSEEK_V3["qk_rope_head_dim"]
    d_v = DEEPSEEK_V3["v_head_dim"]
    assert len(a.sites) == DEEPSEEK_V3["num_hidden_layers"]
    for n in (5, 100):
        ids = torch.zeros(1, n, dtype=torch.long)
        assert a.at(a.flops, n, 1) == flopcounter(model, (ids,), {"use_cache": False}), n
        for s in a.sites:
            assert (s.heads, s.head_dim, s.causal) == (h, d_qk, True)
            assert a.at(s.flops, n, 1) == 2 * h * n * n * d_qk + 2 * h * n * n * d_v
            assert a.at(s.useful_flops, n, 1) == h * allowed_pairs(n, True) * 2 * (d_qk + d_v)
