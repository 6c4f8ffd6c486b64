"""Building blocks the dense, local, sparse and linear kernels share.

* Triton functions, inlined into each kernel: which rows a program's head
  reads, the online-softmax state, loading a block of Q, K or V, folding a
  key block into the softmax, and storing the normalized output;
* host helpers: input checks, the dot precision for a dtype, the K/V fetch
  path (TMA descriptors on sm90+, raw pointers elsewhere) and the output
  buffers a flash-style call allocates;
* the naive references' common part: masked softmax attention over the full
  score matrix, grouped-query head expansion and band masks.

Importing this module imports Triton; set TRITON_INTERPRET before it to run
the kernels under the interpreter.
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


# ---------------------------------------------------------------------------
# Triton functions
# ---------------------------------------------------------------------------


@triton.jit
def head_rows(off_bh, H, H_KV, n_q, n_kv):
    """First row of this (batch, query head) in Q/O and of the key/value head it shares (GQA)."""
    off_b = off_bh // H
    off_h = off_bh % H
    group = H // H_KV
    q_row = off_bh * n_q
    kv_row = (off_b * H_KV + off_h // group) * n_kv
    return q_row, kv_row


@triton.jit
def online_softmax_state(BLOCK_M: tl.constexpr, HEAD_DIM: tl.constexpr):
    """(acc, l_i, m_i) before any key: zero output and sum, a running maximum of -inf."""
    m_i = tl.zeros([BLOCK_M], dtype=tl.float32) - float("inf")
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    return acc, l_i, m_i


@triton.jit
def load_q_block(Q, q_row, offs_m, n_q, HEAD_DIM: tl.constexpr):
    """One [BLOCK_M, HEAD_DIM] block of queries; rows past n_q read as zeros."""
    offs_d = tl.arange(0, HEAD_DIM)
    rows = (q_row + offs_m).to(tl.int64)
    return tl.load(Q + rows[:, None] * HEAD_DIM + offs_d[None, :], mask=(offs_m < n_q)[:, None], other=0.0)


@triton.jit
def load_kv_block(src, kv_row, start_n, n_kv, offs_n, offs_d,
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
def attend_block(acc, l_i, m_i, q, K, V, kv_row, start_n, offs_m, n_kv, left, right, qk_scale,
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
    k = load_kv_block(K, kv_row, start_n, n_kv, offs_n, offs_d, HEAD_DIM, MASKED, USE_TMA)
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
    v = load_kv_block(V, kv_row, start_n, n_kv, offs_n, offs_d, HEAD_DIM, MASKED, USE_TMA)
    acc = tl.dot(p.to(q.dtype), v, acc, input_precision=DOT_PRECISION)
    return acc, l_i, m_new


@triton.jit
def store_output(acc, l_i, m_i, O, LSE, q_row, offs_m, n_q, HEAD_DIM: tl.constexpr):
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


# ---------------------------------------------------------------------------
# Host helpers
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


def softmax_scale(sm_scale: float | None, head_dim: int) -> float:
    """The score scale: 1 / sqrt(d) unless the caller gives one."""
    return 1.0 / math.sqrt(head_dim) if sm_scale is None else float(sm_scale)


def empty_output(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The output (like q) and its fp32 log-sum-exp per query: all a flash-style call allocates."""
    B, H, N, _ = q.shape
    return torch.empty_like(q), torch.empty((B, H, N), device=q.device, dtype=torch.float32)


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


def set_tma_block_shapes(nargs) -> None:
    """Autotune pre-hook: a TMA descriptor's block shape follows the config's BLOCK_N."""
    for name in ("K", "V"):
        desc = nargs[name]
        if TensorDescriptor is not None and isinstance(desc, TensorDescriptor):
            desc.block_shape = [nargs["BLOCK_N"], nargs["HEAD_DIM"]]


# ---------------------------------------------------------------------------
# Naive references: what every reference is built from
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
