"""Every kernel against its naive PyTorch reference, on small fp32 shapes.

Without a GPU the kernels run under the Triton interpreter (see conftest.py),
so shapes stay tiny; block sizes are ones a GPU's tl.dot accepts (>= 16).
The references are checked against torch itself where torch has the op.
"""
import json
import math
from fractions import Fraction

import pytest
import torch
import torch.utils._python_dispatch

pytest.importorskip("triton")

from attncost.kernels import blocks, dense, harness, linear, local, sparse  # noqa: E402

from attncost.kernels import VARIANTS  # noqa: E402

from .conftest import interpreter_unavailable  # noqa: E402

pytestmark = pytest.mark.skipif(interpreter_unavailable() is not None, reason=str(interpreter_unavailable()))

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
#: The interpreter runs the TMA-descriptor path anywhere; a GPU needs sm90+.
HAS_TMA = DEVICE == "cpu" or blocks.tma_supported(torch.empty(16, device=DEVICE))
ATOL = 2e-4
SMALL = {"BLOCK_M": 32, "BLOCK_N": 16, "num_warps": 4, "num_stages": 1}
TALL = {"BLOCK_M": 16, "BLOCK_N": 32, "num_warps": 4, "num_stages": 1}


def qkv(batch=1, heads=2, kv_heads=2, n=40, d=16, m=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    m = n if m is None else m
    q = torch.randn(batch, heads, n, d, generator=gen)
    k = torch.randn(batch, kv_heads, m, d, generator=gen)
    v = torch.randn(batch, kv_heads, m, d, generator=gen)
    return q.to(DEVICE), k.to(DEVICE), v.to(DEVICE)


def assert_close(out, ref, atol=ATOL):
    assert out.shape == ref.shape
    assert torch.isfinite(out).all()
    err = (out.float() - ref.float()).abs().max().item()
    assert err <= atol, f"max abs error {err:.3g} > {atol:g}"


# ---------------------------------------------------------------------------
# References against torch
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n,m", [(24, 24), (30, 17)])
def test_dense_reference_matches_sdpa(causal, n, m):
    q, k, v = qkv(heads=4, kv_heads=2, n=n, m=m)
    ref = dense.dense_reference(q, k, v, causal=causal)
    sdpa = torch.nn.functional.scaled_dot_product_attention(
        q, blocks.expand_kv_heads(k, 4), blocks.expand_kv_heads(v, 4), is_causal=causal)
    assert_close(ref, sdpa, 1e-5)


def test_local_reference_matches_row_by_row_softmax():
    q, k, v = qkv(n=20)
    w = 5
    ref = local.local_reference(q, k, v, w, causal=True)
    for i in (0, 1, 4, 5, 19):
        lo = max(0, i - w + 1)
        scores = q[:, :, i:i + 1] @ k[:, :, lo:i + 1].transpose(-1, -2) / math.sqrt(q.shape[-1])
        row = torch.softmax(scores, -1) @ v[:, :, lo:i + 1]
        assert_close(ref[:, :, i:i + 1], row, 1e-5)


def test_linear_reference_matches_regrouped_product():
    q, k, v = qkv(n=24)
    phi_q, phi_k = torch.nn.functional.elu(q) + 1, torch.nn.functional.elu(k) + 1
    state = phi_k.transpose(-1, -2) @ v
    expected = (phi_q @ state) / (phi_q @ phi_k.sum(2, keepdim=True).transpose(-1, -2))
    assert_close(linear.linear_reference(q, k, v, "elu"), expected, 1e-5)


# ---------------------------------------------------------------------------
# Dense
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("use_tma", [False, True])
@pytest.mark.parametrize("config", [SMALL, TALL], ids=["block_m32_n16", "block_m16_n32"])
def test_dense_matches_reference(causal, use_tma, config):
    if use_tma and not HAS_TMA:
        pytest.skip("no TMA on this GPU")
    q, k, v = qkv(batch=2, heads=2, kv_heads=2, n=40)  # 40: not a multiple of any block
    out, lse = dense.flash_attention(q, k, v, causal=causal, config=config, use_tma=use_tma, return_lse=True)
    assert_close(out, dense.dense_reference(q, k, v, causal=causal))
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        scores = scores.masked_fill(~blocks.band_mask(40, 40, 40, 0, q.device), float("-inf"))
    assert_close(lse, torch.logsumexp(scores, -1))


@pytest.mark.parametrize("causal", [False, True])
def test_dense_gqa_and_head_dim_32(causal):
    q, k, v = qkv(heads=4, kv_heads=2, n=33, d=32)
    out = dense.flash_attention(q, k, v, causal=causal, config=SMALL, use_tma=False)
    assert_close(out, dense.dense_reference(q, k, v, causal=causal))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n,m", [(20, 53), (53, 20)])
def test_dense_query_and_key_lengths_differ(n, m, causal):
    q, k, v = qkv(n=n, m=m)
    out = dense.flash_attention(q, k, v, causal=causal, config=SMALL, use_tma=HAS_TMA)
    assert_close(out, dense.dense_reference(q, k, v, causal=causal))


def test_dense_exact_multiple_of_block_and_custom_scale():
    q, k, v = qkv(n=64)
    out = dense.flash_attention(q, k, v, causal=True, sm_scale=0.3, config=SMALL)
    assert_close(out, blocks.masked_attention_reference(q, k, v, blocks.band_mask(64, 64, 64, 0, q.device), 0.3))


def test_dense_rejects_bad_shapes():
    q, k, v = qkv(heads=3, kv_heads=2)
    with pytest.raises(ValueError, match="multiple"):
        dense.flash_attention(q, k, v)
    q, k, v = qkv(d=24)
    with pytest.raises(ValueError, match="head_dim"):
        dense.flash_attention(q, k, v)


# ---------------------------------------------------------------------------
# Local
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("window", [1, 7, 16, 33])
def test_local_matches_reference(causal, window):
    q, k, v = qkv(n=70)  # 70: ragged for blocks of 16 and 32
    out = local.local_attention(q, k, v, window, causal=causal, config=SMALL, use_tma=window % 2 == 1 and HAS_TMA)
    assert_close(out, local.local_reference(q, k, v, window, causal=causal))


def test_local_window_edges():
    q, k, v = qkv(n=50)
    out = local.local_attention(q, k, v, 8, causal=True, config=TALL)
    # The first query sees only itself; the last sees exactly the 8 keys ending at it.
    assert_close(out[:, :, 0], v[:, :, 0], 1e-5)
    last = torch.softmax(q[:, :, -1:] @ k[:, :, -8:].transpose(-1, -2) / 4.0, -1) @ v[:, :, -8:]
    assert_close(out[:, :, -1:], last)


@pytest.mark.parametrize("causal", [True, False])
def test_local_window_larger_than_sequence_is_dense(causal):
    q, k, v = qkv(n=40)
    out = local.local_attention(q, k, v, 500, causal=causal, config=SMALL)
    assert_close(out, dense.dense_reference(q, k, v, causal=causal))


def test_local_gqa():
    q, k, v = qkv(heads=4, kv_heads=1, n=45)
    out = local.local_attention(q, k, v, 12, causal=True, config=SMALL)
    assert_close(out, local.local_reference(q, k, v, 12, causal=True))


# ---------------------------------------------------------------------------
# Block-sparse
# ---------------------------------------------------------------------------


def test_layout_builders():
    slide = sparse.sliding_block_layout(6, 2, causal=True)
    assert slide.shape == (1, 6, 6)
    assert slide[0].sum(1).tolist() == [1, 2, 2, 2, 2, 2]
    assert not slide[0].triu(1).any()
    strided = sparse.strided_layout(8, 1, 3)
    assert strided[0, 7].nonzero().flatten().tolist() == [1, 4, 7]
    big = sparse.bigbird_layout(10, global_blocks=1, window_blocks=3, random_blocks=2, heads=2, seed=5)
    assert big.shape == (2, 10, 10)
    assert big[:, 0].all() and big[:, :, 0].all()  # global row and column
    assert all(big[0, i, j] for i in range(10) for j in range(10) if abs(i - j) <= 1)
    assert (big[:, 5].sum(-1) == 3 + 1 + 2).all()  # window + global + random
    assert torch.equal(big, sparse.bigbird_layout(10, 1, 3, 2, heads=2, seed=5))
    assert not torch.equal(big, sparse.bigbird_layout(10, 1, 3, 2, heads=2, seed=6))


def test_block_lists_and_keys_per_query():
    layout = torch.tensor([[[1, 0, 1], [0, 0, 0], [1, 1, 1]]], dtype=torch.bool)
    lists = sparse.layout_to_block_lists(layout)
    assert lists.counts.tolist() == [[2, 0, 3]]
    assert lists.cols[0, 0, :2].tolist() == [0, 2]
    assert lists.cols[0, 2].tolist() == [0, 1, 2]
    # N = 40 with blocks of 16: the last block holds 8 rows and 8 columns.
    pairs = 16 * 16 + 16 * 8 + 8 * (16 + 16 + 8)
    assert sparse.keys_per_query(layout, 40, 16) == Fraction(pairs, 40)


@pytest.mark.parametrize("kind", ["strided", "bigbird", "sliding"])
@pytest.mark.parametrize("use_tma", [False, True])
def test_block_sparse_matches_reference(kind, use_tma):
    if use_tma and not HAS_TMA:
        pytest.skip("no TMA on this GPU")
    n, block = 72, 16  # 5 block rows, the last one ragged
    nb = 5
    layout = {
        "strided": sparse.strided_layout(nb, 1, 2),
        "bigbird": sparse.bigbird_layout(nb, 1, 1, 1, seed=3),
        "sliding": sparse.sliding_block_layout(nb, 3, causal=False),
    }[kind]
    q, k, v = qkv(heads=2, kv_heads=1, n=n)
    out = sparse.block_sparse_attention(q, k, v, layout, block, use_tma=use_tma)
    assert_close(out, sparse.block_sparse_reference(q, k, v, layout, block))


def test_block_sparse_empty_row_gives_zeros():
    n, block = 64, 32
    layout = torch.tensor([[[1, 0], [0, 0]]], dtype=torch.bool)
    q, k, v = qkv(n=n, d=32)
    out, lse = sparse.block_sparse_attention(q, k, v, layout, block, return_lse=True)
    assert torch.equal(out[:, :, 32:], torch.zeros_like(out[:, :, 32:]))
    assert torch.isneginf(lse[:, :, 32:]).all()
    assert_close(out, sparse.block_sparse_reference(q, k, v, layout, block))


def test_block_sparse_per_head_layout():
    n, block = 48, 16
    layout = torch.rand(4, 3, 3, generator=torch.Generator().manual_seed(1)) > 0.4
    q, k, v = qkv(heads=4, kv_heads=2, n=n)
    out = sparse.block_sparse_attention(q, k, v, layout, block)
    assert_close(out, sparse.block_sparse_reference(q, k, v, layout, block))


def test_block_sparse_rejects_mismatched_layout():
    q, k, v = qkv(n=40)
    with pytest.raises(ValueError, match="block rows"):
        sparse.block_sparse_attention(q, k, v, sparse.sliding_block_layout(2, 1), 16)


# ---------------------------------------------------------------------------
# Linear
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("feature_map", ["elu", "favor"])
@pytest.mark.parametrize("causal", [False, True])
def test_linear_matches_reference(feature_map, causal):
    q, k, v = qkv(batch=2, heads=2, kv_heads=1, n=37)  # 37: ragged for chunks of 16
    projection = linear.random_projection(16, 32, seed=2, device=DEVICE) if feature_map == "favor" else None
    out = linear.linear_attention(q, k, v, feature_map, causal, projection=projection)
    assert_close(out, linear.linear_reference(q, k, v, feature_map, causal, projection=projection))


def test_linear_non_causal_keys_longer_than_queries():
    q, k, v = qkv(n=20, m=45, d=32)
    out = linear.linear_attention(q, k, v, "elu")
    assert_close(out, linear.linear_reference(q, k, v, "elu"))


@pytest.mark.parametrize("is_query", [True, False])
def test_favor_features_match_reference(is_query):
    x = qkv(n=30)[0] * 2.0
    projection = linear.random_projection(16, 16, seed=0, device=DEVICE)
    got = linear.compute_features(x, "favor", projection, is_query=is_query)
    want = linear.feature_map_reference(x, "favor", projection, is_query=is_query)
    assert_close(got, want, 1e-5)
    assert (got > 0).all()


def test_random_projection_is_orthogonal_within_blocks():
    w = linear.random_projection(16, 32, seed=0).double()
    directions = w / w.norm(dim=1, keepdim=True)
    gram = directions[:16] @ directions[:16].T
    assert torch.allclose(gram, torch.eye(16, dtype=torch.float64), atol=1e-5)


# ---------------------------------------------------------------------------
# Memory: what each call allocates is what the formula declares
# ---------------------------------------------------------------------------


class AllocatedBytes(torch.utils._python_dispatch.TorchDispatchMode):
    """Sums the bytes of every tensor a factory op creates while active."""

    FACTORIES = ("empty", "zeros", "full", "ones")

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if any(name in str(func) for name in self.FACTORIES):
            self.total += out.nbytes
        return out


@pytest.mark.parametrize("variant", VARIANTS)
def test_allocations_match_memory_formula(variant):
    from attncost.patterns.formulas import formula

    n, d = 64, 16
    q, k, v = qkv(heads=2, kv_heads=2, n=n, d=d)
    lists = sparse.layout_to_block_lists(sparse.sliding_block_layout(4, 2).to(q.device))
    calls = {
        "dense": (lambda: dense.flash_attention(q, k, v), {}),
        "causal_dense": (lambda: dense.flash_attention(q, k, v, causal=True), {}),
        "local": (lambda: local.local_attention(q, k, v, 16), {"w": 16}),
        "sparse": (lambda: sparse.block_sparse_attention(q, k, v, lists, 16), {"k": 24}),
        "linear": (lambda: linear.linear_attention(q, k, v, "elu"), {"r": d}),
    }
    call, symbols = calls[variant]
    if q.is_cuda:
        call()  # autotuning allocates benchmark buffers on the first call
    with AllocatedBytes() as allocated:
        call()
    measured = allocated.total + q.nbytes + k.nbytes + v.nbytes
    predicted = formula(variant).evaluate("memory_bytes", B=1, H=2, N=n, d=d, s=4, **symbols)
    assert measured == predicted


# ---------------------------------------------------------------------------
# Harness
# ---------------------------------------------------------------------------


def test_run_validation_cpu_json_shape(tmp_path):
    plot = tmp_path / "validation.png"
    messages = []
    report = harness.run_validation(device="cpu", plot=str(plot), progress=messages.append)
    json.dumps(report)  # plain JSON types only
    assert report["device"] == "cpu"
    assert [r["variant"] for r in report["results"]] == list(VARIANTS)
    for res in report["results"]:
        assert set(res) >= {"variant", "correct", "max_abs_error", "formula", "points",
                            "fitted_exponent", "formula_exponent", "ok"}
        assert set(res["formula"]) >= {"flops", "memory_bytes"}
        assert res["correct"] is True and res["ok"] is True
        assert isinstance(res["max_abs_error"], float)
        assert res["points"] == [] and res["fitted_exponent"] is None
        assert res["formula_exponent"] == (2 if res["variant"].endswith("dense") else 1)
    assert plot.stat().st_size > 0
    assert messages


def test_run_validation_rejects_unknown_variant():
    with pytest.raises(ValueError, match="unknown variant"):
        harness.run_validation(["nope"], device="cpu")


def test_fit_exponent_uses_the_larger_points():
    ns = [1024, 2048, 4096, 8192, 16384]
    seconds = [1e-5, 1.1e-5] + [1e-12 * n ** 2 for n in ns[2:]]  # small N: launch-bound
    assert harness.fit_exponent(ns, seconds) == pytest.approx(2.0)
    assert harness.fit_exponent([1024], [1.0]) is None


# ---------------------------------------------------------------------------
# Compilation for a Hopper GPU (no GPU needed: Triton's own ptxas)
# ---------------------------------------------------------------------------

_COMPILE_FOR_HOPPER = r'''
import sys
try:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
except ImportError:
    sys.exit(77)
from attncost.kernels import dense, linear, sparse

def build(fn, types, constexprs, num_warps):
    signature = {name: types.get(name, "constexpr") for name in fn.arg_names}
    try:
        src = ASTSource(fn=fn, signature=signature, constexprs=constexprs)
    except TypeError:
        sys.exit(77)  # an ahead-of-time API this test does not know
    triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps, "num_stages": 2})

bf16 = "*bf16"
desc = "tensordesc<bf16[128,128]>"
attn = {"Q": bf16, "O": bf16, "LSE": "*fp32", "sm_scale": "fp32", "H": "i32", "H_KV": "i32"}
build(dense._banded_attn_fwd, {**attn, "K": desc, "V": desc, "n_q": "i32", "n_kv": "i32", "left": "i32",
      "right": "i32"}, {"HEAD_DIM": 128, "BLOCK_M": 128, "BLOCK_N": 128, "USE_TMA": True, "DOT_PRECISION": "tf32"}, 8)
build(sparse._block_sparse_fwd, {**attn, "K": bf16, "V": bf16, "COUNTS": "*i32", "COLS": "*i32", "n": "i32",
      "LAYOUT_HEADS": "i32", "num_blocks": "i32", "max_nnz": "i32"},
      {"HEAD_DIM": 64, "BLOCK_M": 64, "BLOCK_N": 64, "EVEN_N": False, "USE_TMA": False, "DOT_PRECISION": "tf32"}, 4)
build(linear._feature_map_fwd, {"X": bf16, "W": "*fp32", "OUT": bf16, "STAB": "*fp32", "n": "i32",
      "x_scale": "fp32", "eps": "fp32"}, {"HEAD_DIM": 64, "R": 64, "BLOCK_N": 64, "FAVOR": True, "STAB_MODE": 1,
      "DOT_PRECISION": "tf32"}, 4)
build(linear._linear_causal_fwd, {"PHIQ": bf16, "PHIK": bf16, "V": bf16, "O": bf16, "n": "i32", "H": "i32",
      "H_KV": "i32"}, {"HEAD_DIM": 64, "R": 64, "BLOCK_C": 64, "BLOCK_DV": 32, "DOT_PRECISION": "tf32",
      "STATE_PRECISION": "tf32"}, 4)
'''


@pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU runs the kernels themselves")
def test_kernels_compile_for_hopper():
    """What the interpreter cannot see (layouts, shared memory, TMA) fails here, not on the GPU."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(harness.__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-c", _COMPILE_FOR_HOPPER], env=env, capture_output=True, text=True)
    if proc.returncode == 77:
        pytest.skip("this Triton has no ahead-of-time compile API the test knows")
    assert proc.returncode == 0, proc.stderr[-3000:]
