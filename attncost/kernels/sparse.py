"""Block-sparse attention over a block layout, beside a naive PyTorch reference.

A layout is a bool tensor (L, nb, nb) with L = 1 (shared by all heads) or
L = H, nb = cdiv(N, block_size): query block r attends key block c iff
layout[h, r, c].  The kernel reads it as per-row lists of nonzero column
blocks (``layout_to_block_lists``) and visits only those, so its cost is
proportional to the number of nonzero blocks: with a fixed number per row,
time grows as N * k where k is the keys per query.

A query row whose block row is empty attends to nothing; its output is
defined as zeros (and its log-sum-exp as -inf), in the kernel and in the
reference alike.

Layout builders: ``strided_layout`` (Sparse Transformer), ``bigbird_layout``
(global + window + seeded random blocks, the "fixed" BigBird pattern) and
``sliding_block_layout``.

Shapes: q (B, H, N, d); k and v (B, H_kv, N, d) with H % H_kv == 0 (GQA).
"""
from __future__ import annotations

from fractions import Fraction
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from .blocks import (attend_block, check_qkv, dot_precision, empty_output, head_rows, kv_sources,
                    load_q_block, masked_attention_reference, online_softmax_state, set_tma_block_shapes,
                    softmax_scale, store_output, tma_supported)

#: Layout block sizes the kernel accepts (one block is one tl.dot tile).
BLOCK_SIZES = (16, 32, 64, 128)


@triton.jit
def _block_sparse_fwd(Q, K, V, O, LSE, COUNTS, COLS, sm_scale, n, H, H_KV, LAYOUT_HEADS, num_blocks, max_nnz,
                      HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                      EVEN_N: tl.constexpr, USE_TMA: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """One program per (query block, batch * head): attend the listed key blocks.

    Grid: (num_blocks, B * H).  Column lists ascend, so only the last listed
    block can run past n; every other block runs unmasked.
    """
    row_block = tl.program_id(0)
    off_bh = tl.program_id(1)
    q_row, kv_row = head_rows(off_bh, H, H_KV, n, n)
    off_h = off_bh % H
    layout_row = (off_h % LAYOUT_HEADS) * num_blocks + row_block
    count = tl.load(COUNTS + layout_row)
    col_base = COLS + layout_row.to(tl.int64) * max_nnz

    offs_m = row_block * BLOCK_M + tl.arange(0, BLOCK_M)
    acc, l_i, m_i = online_softmax_state(BLOCK_M, HEAD_DIM)
    qk_scale = sm_scale * 1.4426950408889634  # log2(e): the scores go through exp2
    q = load_q_block(Q, q_row, offs_m, n, HEAD_DIM)

    n_body = count
    if not EVEN_N:
        last_col = tl.load(col_base + tl.maximum(count - 1, 0))
        n_body = tl.where((count > 0) & (last_col == num_blocks - 1), count - 1, count)
    for idx in range(0, n_body):
        start_n = tl.multiple_of(tl.load(col_base + idx) * BLOCK_N, BLOCK_N)
        acc, l_i, m_i = attend_block(acc, l_i, m_i, q, K, V, kv_row, start_n, offs_m, n, n, n, qk_scale,
                                     BLOCK_N, HEAD_DIM, False, USE_TMA, DOT_PRECISION)
    for idx in range(n_body, count):
        start_n = tl.load(col_base + idx) * BLOCK_N
        acc, l_i, m_i = attend_block(acc, l_i, m_i, q, K, V, kv_row, start_n, offs_m, n, n, n, qk_scale,
                                     BLOCK_N, HEAD_DIM, True, USE_TMA, DOT_PRECISION)

    store_output(acc, l_i, m_i, O, LSE, q_row, offs_m, n, HEAD_DIM)


_block_sparse_fwd_tuned = triton.autotune(
    configs=[
        triton.Config({}, num_warps=w, num_stages=s, pre_hook=set_tma_block_shapes)
        for w, s in ((4, 3), (8, 2), (8, 3))
    ],
    key=["n", "max_nnz", "HEAD_DIM", "BLOCK_N"],
)(_block_sparse_fwd)


# ---------------------------------------------------------------------------
# Layouts
# ---------------------------------------------------------------------------


class BlockLists(NamedTuple):
    """A block layout as per-row lists: counts (L, nb) and ascending cols (L, nb, max_nnz), int32."""

    counts: torch.Tensor
    cols: torch.Tensor
    num_blocks: int


def _block_grid(num_blocks: int, device=None):
    r = torch.arange(num_blocks, device=device)[:, None]
    c = torch.arange(num_blocks, device=device)[None, :]
    return r, c


def sliding_block_layout(num_blocks: int, window_blocks: int, causal: bool = True, heads: int = 1,
                         device=None) -> torch.Tensor:
    """Each block row attends the ``window_blocks`` blocks ending at the diagonal
    (causal) or the blocks within window_blocks // 2 of it (symmetric)."""
    r, c = _block_grid(num_blocks, device)
    if causal:
        mask = (r - c >= 0) & (r - c < window_blocks)
    else:
        mask = (r - c).abs() <= window_blocks // 2
    return mask.expand(heads, num_blocks, num_blocks).clone()


def strided_layout(num_blocks: int, local_blocks: int, stride: int, causal: bool = True, heads: int = 1,
                   device=None) -> torch.Tensor:
    """Sparse Transformer "strided" pattern: the last ``local_blocks`` blocks plus
    every block whose distance from the row is a multiple of ``stride``."""
    if stride < 1:
        raise ValueError("stride must be positive")
    r, c = _block_grid(num_blocks, device)
    dist = r - c
    if causal:
        mask = (dist >= 0) & ((dist < local_blocks) | (dist % stride == 0))
    else:
        mask = (dist.abs() < local_blocks) | (dist % stride == 0)
    return mask.expand(heads, num_blocks, num_blocks).clone()


def bigbird_layout(num_blocks: int, global_blocks: int = 1, window_blocks: int = 3, random_blocks: int = 2,
                   heads: int = 1, seed: int = 0, device=None) -> torch.Tensor:
    """BigBird's fixed pattern: the first ``global_blocks`` block rows and columns
    are global, a symmetric window of ``window_blocks`` blocks around the diagonal,
    and ``random_blocks`` further blocks per row drawn with ``seed`` (per head)."""
    r, c = _block_grid(num_blocks)
    base = ((r - c).abs() <= window_blocks // 2) | (r < global_blocks) | (c < global_blocks)
    layout = base.expand(heads, num_blocks, num_blocks).clone()
    free = num_blocks - int(base.sum(dim=1).min())
    take = min(random_blocks, max(free, 0))
    if take > 0:
        gen = torch.Generator().manual_seed(seed)
        scores = torch.rand(heads, num_blocks, num_blocks, generator=gen)
        scores = scores.masked_fill(layout, -1.0)  # draw among blocks not already kept
        picks = scores.topk(take, dim=-1).indices
        layout.scatter_(-1, picks, True)
    return layout.to(device) if device is not None else layout


def layout_to_block_lists(layout: torch.Tensor) -> BlockLists:
    """Per block row, the nonzero column blocks in ascending order (padded with 0)."""
    if layout.dim() != 3 or layout.shape[1] != layout.shape[2]:
        raise ValueError(f"layout must be (L, nb, nb), got {tuple(layout.shape)}")
    layout = layout.to(torch.bool)
    counts = layout.sum(dim=-1).to(torch.int32)
    max_nnz = max(int(counts.max()) if counts.numel() else 0, 1)
    # A stable sort of "not kept" puts kept columns first, in ascending order.
    order = torch.argsort((~layout).to(torch.int8), dim=-1, stable=True)[..., :max_nnz]
    cols = torch.where(torch.arange(max_nnz, device=layout.device) < counts[..., None].long(), order, 0)
    return BlockLists(counts.contiguous(), cols.to(torch.int32).contiguous(), layout.shape[1])


def token_mask(layout: torch.Tensor, seq_len: int, block_size: int) -> torch.Tensor:
    """The layout expanded to a (L, N, N) token-level mask."""
    full = layout.repeat_interleave(block_size, dim=1).repeat_interleave(block_size, dim=2)
    return full[:, :seq_len, :seq_len]


def keys_per_query(layout: torch.Tensor, seq_len: int, block_size: int) -> Fraction:
    """k of the ``sparse`` formula: attended (query, key) pairs per head over N.

    Exact for ragged N: a block that runs past N counts only its real rows and
    columns.  Averaged over the layout's heads.
    """
    nb = layout.shape[-1]
    sizes = torch.full((nb,), block_size, dtype=torch.int64)
    sizes[-1] = seq_len - block_size * (nb - 1)
    pairs = torch.einsum("hrc,r,c->", layout.to(torch.int64).cpu(), sizes, sizes)
    return Fraction(int(pairs), layout.shape[0] * seq_len)


# ---------------------------------------------------------------------------
# Wrapper and reference
# ---------------------------------------------------------------------------


def block_sparse_attention(q, k, v, layout, block_size: int, sm_scale: float | None = None, *,
                           return_lse: bool = False, config: dict | None = None, use_tma: bool | None = None):
    """Attention restricted to the nonzero blocks of ``layout``.

    ``layout``: a bool (L, nb, nb) tensor or its ``layout_to_block_lists``
    (convert once when calling repeatedly).  ``config`` (num_warps,
    num_stages) bypasses autotuning.  Rows of an empty block row get zeros.
    """
    check_qkv(q, k, v, same_length=True)
    if block_size not in BLOCK_SIZES:
        raise ValueError(f"block_size must be one of {BLOCK_SIZES}, got {block_size}")
    lists = layout if isinstance(layout, BlockLists) else layout_to_block_lists(layout)
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    B, H, N, d = q.shape
    H_kv = k.shape[1]
    nb = triton.cdiv(N, block_size)
    if lists.num_blocks != nb:
        raise ValueError(f"layout has {lists.num_blocks} block rows; N={N} with block_size={block_size} needs {nb}")
    layout_heads = lists.counts.shape[0]
    if layout_heads not in (1, H):
        raise ValueError(f"layout must have 1 or H={H} heads, got {layout_heads}")
    counts = lists.counts.to(q.device)
    cols = lists.cols.to(q.device)
    sm_scale = softmax_scale(sm_scale, d)
    o, lse = empty_output(q)
    if use_tma is None:
        use_tma = tma_supported(q, k, v)
    k_src, v_src = kv_sources(k, v, block_size, use_tma)
    args = (q, k_src, v_src, o, lse, counts, cols, sm_scale, N, H, H_kv, layout_heads, nb, cols.shape[-1])
    meta = dict(HEAD_DIM=d, BLOCK_M=block_size, BLOCK_N=block_size, EVEN_N=N % block_size == 0,
                USE_TMA=use_tma, DOT_PRECISION=dot_precision(q.dtype))
    grid = (nb, B * H)
    if config is None and q.is_cuda:
        _block_sparse_fwd_tuned[grid](*args, **meta)
    else:
        config = {"num_warps": 4, "num_stages": 1, **(config or {})}
        _block_sparse_fwd[grid](*args, **meta, num_warps=config["num_warps"], num_stages=config["num_stages"])
    return (o, lse) if return_lse else o


def block_sparse_reference(q, k, v, layout: torch.Tensor, block_size: int, sm_scale: float | None = None):
    """Naive block-sparse attention: the layout expanded to a token mask over full scores."""
    N = q.shape[2]
    allowed = token_mask(layout.to(torch.bool).to(q.device), N, block_size)
    return masked_attention_reference(q, k, v, allowed[None], sm_scale)
