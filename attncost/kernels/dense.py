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

import math

import torch
import triton
import triton.language as tl

try:  # host-side TMA descriptors: Hopper and newer, Triton >= 3.3
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # pragma: no cover - older Triton
    TensorDescriptor = None

#: Head dimensions the kernels accept (tl.dot needs >= 16, tl.arange powers of two).
HEAD_DIMS = (16, 32, 64, 128)

#: Block sizes for the Triton interpreter and explicit calls: small, but sizes
#: a GPU's tl.dot accepts too.
INTERPRETER_CONFIG = {"BLOCK_M": 32, "BLOCK_N": 16, "num_warps": 4, "num_stages": 1}


# ---------------------------------------------------------------------------
# Triton building blocks shared by the dense, local and sparse kernels
# ---------------------------------------------------------------------------


@triton.jit
def _load_kv_block(src, kv_row, start_n, n_kv, offs_n, offs_d,
                   HEAD_DIM: tl.constexpr, MASKED: tl.constexpr, USE_TMA: tl.constexpr):
    """One [BLOCK_N, HEAD_DIM] block of K or V, from a TMA descriptor or a pointer."""
    if USE_TMA:
        # Rows past this head's end are the next head's (or TMA's zero fill);
        # the score mask gives them zero weight.
        block = src.load([kv_row + start_n, 0])
    else:
        rows = (kv_row + start_n + offs_n).to(tl.int64)
        ptrs = src + rows[:, None] * HEAD_DIM + offs_d[None, :]
        if MASKED:
            block = tl.load(ptrs, mask=(start_n + offs_n)[:, None] < n_kv, other=0.0)
        else:
            block = tl.load(ptrs)
    return block


@triton.jit
def _attend_block(acc, l_i, m_i, q, K, V, kv_row, start_n, offs_m, n_kv, left, right, qk_scale,
                  BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, MASKED: tl.constexpr,
                  USE_TMA: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Fold one key block into the running (acc, l_i, m_i) of an online softmax.

    m_i is the running row maximum of the log2-scaled scores, l_i the running
    sum of exp2(score - m_i), acc the unnormalized output.  With MASKED, keys
    outside [i - left, i + right] or past n_kv get weight zero; a row that has
    seen no key yet keeps m_i = -inf without producing NaNs.
    """
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    k = _load_kv_block(K, kv_row, start_n, n_kv, offs_n, offs_d, HEAD_DIM, MASKED, USE_TMA)
    qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
    if MASKED:
        cols = start_n + offs_n
        keep = (cols[None, :] < n_kv) \
            & (cols[None, :] <= offs_m[:, None] + right) \
            & (cols[None, :] >= offs_m[:, None] - left)
        qk = tl.where(keep, qk * qk_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
        qk = qk - m_sub[:, None]
        alpha = tl.math.exp2(m_i - m_sub)
    else:
        m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        qk = qk * qk_scale - m_new[:, None]
        alpha = tl.math.exp2(m_i - m_new)
    p = tl.math.exp2(qk)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    v = _load_kv_block(V, kv_row, start_n, n_kv, offs_n, offs_d, HEAD_DIM, MASKED, USE_TMA)
    acc = tl.dot(p.to(q.dtype), v, acc, input_precision=DOT_PRECISION)
    return acc, l_i, m_new


@triton.jit
def _store_output(acc, l_i, m_i, O, LSE, q_row, offs_m, n_q, HEAD_DIM: tl.constexpr):
    """Normalize and store one block of output rows and their natural-log LSE.

    A row that attended to no key (possible only in block-sparse layouts)
    gets a zero output and an LSE of -inf.
    """
    offs_d = tl.arange(0, HEAD_DIM)
    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    out = acc / l_safe[:, None]
    lse = tl.where(empty, float("-inf"), (m_i + tl.math.log2(l_safe)) * 0.6931471805599453)
    row_ok = offs_m < n_q
    rows = (q_row + offs_m).to(tl.int64)
    tl.store(O + rows[:, None] * HEAD_DIM + offs_d[None, :], out.to(O.dtype.element_ty),
             mask=row_ok[:, None])
    tl.store(LSE + rows, lse, mask=row_ok)


@triton.jit
def _load_q_block(Q, q_row, offs_m, n_q, HEAD_DIM: tl.constexpr):
    offs_d = tl.arange(0, HEAD_DIM)
    rows = (q_row + offs_m).to(tl.int64)
    return tl.load(Q + rows[:, None] * HEAD_DIM + offs_d[None, :], mask=(offs_m < n_q)[:, None], other=0.0)


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
    off_bh = tl.program_id(1)
    off_b = off_bh // H
    off_h = off_bh % H
    group = H // H_KV
    q_row = off_bh * n_q
    kv_row = (off_b * H_KV + off_h // group) * n_kv

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

    m_i = tl.zeros([BLOCK_M], dtype=tl.float32) - float("inf")
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    qk_scale = sm_scale * 1.4426950408889634
    q = _load_q_block(Q, q_row, offs_m, n_q, HEAD_DIM)

    for start_n in range(lo, body_lo, BLOCK_N):
        acc, l_i, m_i = _attend_block(acc, l_i, m_i, q, K, V, kv_row, start_n, offs_m, n_kv, left, right,
                                      qk_scale, BLOCK_N, HEAD_DIM, True, USE_TMA, DOT_PRECISION)
    for start_n in range(body_lo, body_hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        acc, l_i, m_i = _attend_block(acc, l_i, m_i, q, K, V, kv_row, start_n, offs_m, n_kv, left, right,
                                      qk_scale, BLOCK_N, HEAD_DIM, False, USE_TMA, DOT_PRECISION)
    for start_n in range(body_hi, hi, BLOCK_N):
        acc, l_i, m_i = _attend_block(acc, l_i, m_i, q, K, V, kv_row, start_n, offs_m, n_kv, left, right,
                                      qk_scale, BLOCK_N, HEAD_DIM, True, USE_TMA, DOT_PRECISION)

    _store_output(acc, l_i, m_i, O, LSE, q_row, offs_m, n_q, HEAD_DIM)


def _set_tma_block_shapes(nargs):
    """Autotune pre-hook: a TMA descriptor's block shape follows the config's BLOCK_N."""
    for name in ("K", "V"):
        desc = nargs[name]
        if TensorDescriptor is not None and isinstance(desc, TensorDescriptor):
            desc.block_shape = [nargs["BLOCK_N"], nargs["HEAD_DIM"]]


def _configs(pairs):
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s, pre_hook=_set_tma_block_shapes)
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


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, same_length: bool = False) -> None:
    """Raise ValueError unless q, k, v have shapes and dtypes the kernels accept."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError("q, k and v must be 4-D: (B, H, N, d) and (B, H_kv, M, d)")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    B, H, N, d = q.shape
    if k.shape[0] != B or k.shape[3] != d:
        raise ValueError(f"k/v shape {tuple(k.shape)} does not match q shape {tuple(q.shape)}")
    if H % k.shape[1] != 0:
        raise ValueError(f"query heads ({H}) must be a multiple of key/value heads ({k.shape[1]})")
    if same_length and k.shape[2] != N:
        raise ValueError(f"q and k/v must have the same length, got {N} and {k.shape[2]}")
    if d not in HEAD_DIMS:
        raise ValueError(f"head_dim must be one of {HEAD_DIMS}, got {d}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError("q, k and v must share one dtype")
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"unsupported dtype {q.dtype}")


def dot_precision(dtype: torch.dtype) -> str:
    """fp32 inputs get IEEE products (no silent TF32); 16-bit inputs ignore it."""
    return "ieee" if dtype == torch.float32 else "tf32"


def tma_supported(*tensors: torch.Tensor) -> bool:
    """Whether K/V blocks can be fetched through host TMA descriptors (sm90+)."""
    if TensorDescriptor is None or not all(t.is_cuda for t in tensors):
        return False
    if torch.cuda.get_device_capability(tensors[0].device)[0] < 9:
        return False
    return all(t.data_ptr() % 16 == 0 for t in tensors)


def kv_sources(k: torch.Tensor, v: torch.Tensor, block_n: int, use_tma: bool):
    """K and V as the kernels take them: 2-D (B*H_kv*M, d) TMA descriptors or raw tensors."""
    if not use_tma:
        return k, v
    d = k.shape[-1]
    k2, v2 = k.view(-1, d), v.view(-1, d)
    return (TensorDescriptor.from_tensor(k2, [block_n, d]),
            TensorDescriptor.from_tensor(v2, [block_n, d]))


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
    sm_scale = 1.0 / math.sqrt(d) if sm_scale is None else float(sm_scale)
    # A band reaching past both sequences is unbounded; clipping it to
    # max(N, M) keeps the autotuning key independent of how that was spelled.
    left, right = min(int(left), max(N, M)), min(int(right), max(N, M))
    o = torch.empty_like(q)
    lse = torch.empty((B, H, N), device=q.device, dtype=torch.float32)
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
# Naive references
# ---------------------------------------------------------------------------


def expand_kv_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """Repeat each key/value head for the query heads that share it (GQA)."""
    return x.repeat_interleave(heads // x.shape[1], dim=1) if x.shape[1] != heads else x


def masked_attention_reference(q, k, v, allowed: torch.Tensor | None, sm_scale: float | None = None):
    """softmax(q k^T * scale, masked to ``allowed``) v in fp32, materializing the scores.

    ``allowed`` broadcasts to (B, H, N, M); None allows everything.  A row
    with no allowed key yields zeros, the convention the kernels follow.
    """
    B, H, N, d = q.shape
    sm_scale = 1.0 / math.sqrt(d) if sm_scale is None else sm_scale
    qf = q.float()
    kf = expand_kv_heads(k.float(), H)
    vf = expand_kv_heads(v.float(), H)
    scores = torch.matmul(qf, kf.transpose(-1, -2)) * sm_scale
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    probs = torch.nan_to_num(probs, nan=0.0)  # rows with no allowed key
    return torch.matmul(probs, vf).to(q.dtype)


def band_mask(n: int, m: int, left: int, right: int, device=None) -> torch.Tensor:
    """(n, m) bool: key j is allowed for query i iff i - left <= j <= i + right."""
    i = torch.arange(n, device=device)[:, None]
    j = torch.arange(m, device=device)[None, :]
    return (j >= i - left) & (j <= i + right)


def dense_reference(q, k, v, causal: bool = False, sm_scale: float | None = None):
    """Naive dense attention: the N x M score matrix, softmax, then P v."""
    N, M = q.shape[2], k.shape[2]
    allowed = band_mask(N, M, N + M, 0, q.device) if causal else None
    return masked_attention_reference(q, k, v, allowed, sm_scale)
