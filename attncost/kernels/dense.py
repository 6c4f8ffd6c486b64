"""Dense attention: a flash-style Triton forward beside a naive PyTorch reference.

The kernel streams blocks of K and V past a block of queries with an online
softmax (exp2, the softmax scale folded into log2(e)), so it never holds an
N x M score matrix: what it allocates is the output and one fp32 log-sum-exp
per query, which is what the ``dense`` formula in specs/variants.yaml declares.

The same kernel attends each query i to a band of keys [i - left, i + right]:
full attention is an unbounded band, causal attention has right = 0, and the
sliding windows of local.py are short bands.  Key blocks wholly outside the
band are never visited, blocks wholly inside it run without any masking, and
only the blocks that straddle an edge of the band (or the end of the
sequence) pay for the mask.

Shapes: q (B, H, N, d); k and v (B, H_kv, M, d) with H % H_kv == 0 (GQA).
"""
from __future__ import annotations

import triton
import triton.language as tl

# The online softmax, the K/V fetch and the masked reference live in blocks.py.
from .blocks import (attend_block, band_mask, check_qkv, dot_precision, empty_output, head_rows, kv_sources,
                    load_q_block, masked_attention_reference, online_softmax_state, set_tma_block_shapes,
                    softmax_scale, store_output, tma_supported)

#: Block sizes for the Triton interpreter and explicit calls: small, but sizes
#: a GPU's tl.dot accepts too.
INTERPRETER_CONFIG = {"BLOCK_M": 32, "BLOCK_N": 16, "num_warps": 4, "num_stages": 1}


@triton.jit
def _banded_attn_fwd(Q, K, V, O, LSE, sm_scale, n_q, n_kv, H, H_KV, left, right,
                     HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     USE_TMA: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Attention of each query i to keys [i - left, i + right] (clipped to [0, n_kv)).

    Grid: (cdiv(n_q, BLOCK_M), B * H).  The key range of a query block splits
    into a masked head, an unmasked body and a masked tail; for causal
    attention the head is empty and the tail is the diagonal.
    """
    num_m = tl.cdiv(n_q, BLOCK_M)
    start_m = num_m - 1 - tl.program_id(0)  # longest rows first: better tail balance when causal
    q_row, kv_row = head_rows(tl.program_id(1), H, H_KV, n_q, n_kv)

    m0 = start_m * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    last_row = tl.minimum(m0 + BLOCK_M, n_q) - 1

    # Key blocks any row of this block needs: [lo, hi).
    lo = tl.maximum(m0 - left, 0) // BLOCK_N * BLOCK_N
    hi = tl.minimum(last_row + right + 1, n_kv)
    # Key blocks every row of this block sees whole: [body_lo, body_hi).
    body_lo = tl.cdiv(tl.maximum(last_row - left, 0), BLOCK_N) * BLOCK_N
    body_lo = tl.minimum(tl.maximum(body_lo, lo), hi)
    body_hi = tl.minimum(m0 + right + 1, n_kv) // BLOCK_N * BLOCK_N
    body_hi = tl.maximum(body_hi, body_lo)

    acc, l_i, m_i = online_softmax_state(BLOCK_M, HEAD_DIM)
    qk_scale = sm_scale * 1.4426950408889634  # log2(e): the scores go through exp2
    q = load_q_block(Q, q_row, offs_m, n_q, HEAD_DIM)

    for start_n in range(lo, body_lo, BLOCK_N):
        acc, l_i, m_i = attend_block(acc, l_i, m_i, q, K, V, kv_row, start_n, offs_m, n_kv, left, right,
                                     qk_scale, BLOCK_N, HEAD_DIM, True, USE_TMA, DOT_PRECISION)
    for start_n in range(body_lo, body_hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        acc, l_i, m_i = attend_block(acc, l_i, m_i, q, K, V, kv_row, start_n, offs_m, n_kv, left, right,
                                     qk_scale, BLOCK_N, HEAD_DIM, False, USE_TMA, DOT_PRECISION)
    for start_n in range(body_hi, hi, BLOCK_N):
        acc, l_i, m_i = attend_block(acc, l_i, m_i, q, K, V, kv_row, start_n, offs_m, n_kv, left, right,
                                     qk_scale, BLOCK_N, HEAD_DIM, True, USE_TMA, DOT_PRECISION)

    store_output(acc, l_i, m_i, O, LSE, q_row, offs_m, n_q, HEAD_DIM)


def _configs(pairs):
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s, pre_hook=set_tma_block_shapes)
        for bm, bn, w, s in pairs
    ]


# A short list: every config is compiled and timed once per tuning key.
_FLASH_CONFIGS = _configs([
    (128, 64, 4, 3),
    (128, 64, 4, 4),
    (128, 128, 8, 2),
    (128, 128, 8, 3),
])

#: Autotuned entry point; `left` and `right` are in the key, so windows and
#: full attention are tuned apart.
_banded_attn_fwd_tuned = triton.autotune(
    configs=_FLASH_CONFIGS, key=["n_q", "n_kv", "left", "right", "HEAD_DIM"]
)(_banded_attn_fwd)


# ---------------------------------------------------------------------------
# Python wrappers
# ---------------------------------------------------------------------------


def banded_attention(q, k, v, left: int, right: int, sm_scale: float | None = None, *,
                     return_lse: bool = False, config: dict | None = None, use_tma: bool | None = None):
    """Query i attends to keys max(0, i - left) .. min(M - 1, i + right).

    ``config`` (BLOCK_M, BLOCK_N, num_warps, num_stages) bypasses autotuning;
    without one a CUDA call autotunes and an interpreter call uses
    INTERPRETER_CONFIG.  ``use_tma`` forces the K/V fetch path (default: TMA
    descriptors where the GPU has them).
    """
    check_qkv(q, k, v)
    if left < 0 or right < 0:
        raise ValueError("left and right must be non-negative")
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    B, H, N, d = q.shape
    H_kv, M = k.shape[1], k.shape[2]
    sm_scale = softmax_scale(sm_scale, d)
    # A band reaching past both sequences is unbounded; clipping it to
    # max(N, M) keeps the autotuning key independent of how that was spelled.
    left, right = min(int(left), max(N, M)), min(int(right), max(N, M))
    o, lse = empty_output(q)
    if use_tma is None:
        use_tma = tma_supported(q, k, v)
    tuned = config is None and q.is_cuda
    if not tuned:
        config = {**INTERPRETER_CONFIG, **(config or {})}
    block_n = _FLASH_CONFIGS[0].kwargs["BLOCK_N"] if tuned else config["BLOCK_N"]
    k_src, v_src = kv_sources(k, v, block_n, use_tma)
    args = (q, k_src, v_src, o, lse, sm_scale, N, M, H, H_kv, left, right)
    if tuned:
        grid = lambda meta: (triton.cdiv(N, meta["BLOCK_M"]), B * H)  # noqa: E731
        _banded_attn_fwd_tuned[grid](*args, HEAD_DIM=d, USE_TMA=use_tma, DOT_PRECISION=dot_precision(q.dtype))
    else:
        grid = (triton.cdiv(N, config["BLOCK_M"]), B * H)
        _banded_attn_fwd[grid](*args, HEAD_DIM=d, BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"],
                               USE_TMA=use_tma, DOT_PRECISION=dot_precision(q.dtype),
                               num_warps=config["num_warps"], num_stages=config["num_stages"])
    return (o, lse) if return_lse else o


def flash_attention(q, k, v, causal: bool = False, sm_scale: float | None = None, *,
                    return_lse: bool = False, config: dict | None = None, use_tma: bool | None = None):
    """Dense attention softmax(q k^T * scale) v, O(N) extra memory.

    Causal masking is top-left aligned (query i sees keys 0..i), as in
    ``F.scaled_dot_product_attention(is_causal=True)``.  Returns the output
    (B, H, N, d) in q's dtype and, with ``return_lse``, the fp32 natural-log
    log-sum-exp of the scaled scores per query (B, H, N).
    """
    unbounded = q.shape[2] + k.shape[2] if q.dim() == 4 and k.dim() == 4 else 0
    return banded_attention(q, k, v, left=unbounded, right=0 if causal else unbounded, sm_scale=sm_scale,
                            return_lse=return_lse, config=config, use_tma=use_tma)


# ---------------------------------------------------------------------------
# Naive reference
# ---------------------------------------------------------------------------


def dense_reference(q, k, v, causal: bool = False, sm_scale: float | None = None):
    """Naive dense attention: the N x M score matrix, softmax, then P v."""
    N, M = q.shape[2], k.shape[2]
    allowed = band_mask(N, M, N + M, 0, q.device) if causal else None
    return masked_attention_reference(q, k, v, allowed, sm_scale)
