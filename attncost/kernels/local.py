"""Sliding-window (local) attention beside a naive PyTorch reference.

A window is a short band of keys around each query, so the kernel is the
banded flash kernel of dense.py (one online-softmax implementation for every
variant) launched with a narrow band: each query block visits only the key
blocks that overlap its window, about (w + BLOCK_M) / BLOCK_N of them, which
makes time grow as N * w instead of N^2.  Two windows:

* causal (``causal=True``): query i attends keys max(0, i - w + 1) .. i,
  exactly w keys once i >= w - 1;
* symmetric (``causal=False``): query i attends keys j with |i - j| <= w // 2.

Shapes: q (B, H, N, d); k and v (B, H_kv, N, d) with H % H_kv == 0 (GQA).
"""
from __future__ import annotations

from .blocks import band_mask, masked_attention_reference
from .dense import banded_attention


def window_band(window: int, causal: bool = True) -> tuple[int, int]:
    """(left, right): the keys i - left .. i + right that query i attends."""
    if window < 1:
        raise ValueError(f"window must be a positive number of keys, got {window}")
    return (window - 1, 0) if causal else (window // 2, window // 2)


def local_attention(q, k, v, window: int, causal: bool = True, sm_scale: float | None = None, *,
                    return_lse: bool = False, config: dict | None = None, use_tma: bool | None = None):
    """Sliding-window attention, O(N * w) time and O(N) memory (see module docstring)."""
    if q.dim() == 4 and k.dim() == 4 and q.shape[2] != k.shape[2]:
        raise ValueError(f"local attention needs q and k/v of one length, got {q.shape[2]} and {k.shape[2]}")
    left, right = window_band(window, causal)
    return banded_attention(q, k, v, left, right, sm_scale, return_lse=return_lse, config=config, use_tma=use_tma)


def local_reference(q, k, v, window: int, causal: bool = True, sm_scale: float | None = None):
    """Naive sliding-window attention: full scores with everything outside the window masked."""
    left, right = window_band(window, causal)
    allowed = band_mask(q.shape[2], k.shape[2], left, right, q.device)
    return masked_attention_reference(q, k, v, allowed, sm_scale)
