"""The work each calibration case times, on the CUDA device (torch imported).

``prepare(case, dtype)`` allocates the case's tensors and returns a callable
that launches its work once; it runs the work once first, so a kernel torch
cannot run for that shape raises here and the case is left out.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn.functional as F

from .measure import Case


def prepare(case: Case, dtype: torch.dtype) -> Callable[[], object]:
    if case.table == "launch":
        fn = _launch_stream(case.ops)
    elif case.table == "matmul":
        fn = _matmul(case.shape, dtype)
    elif case.table == "bandwidth":
        fn = _copy(case.shape["size"])
    elif case.table.startswith("flex_"):
        fn = _flex(case, dtype)
    else:
        fn = _sdpa(case, dtype)
    fn()
    torch.cuda.synchronize()
    return fn


def _launch_stream(ops: int):
    x = torch.zeros(1, device="cuda")

    def fn():
        for _ in range(ops):
            x.add_(1)
    return fn


def _matmul(shape: dict, dtype):
    a = torch.randn(shape["m"], shape["k"], device="cuda", dtype=dtype)
    b = torch.randn(shape["k"], shape["n"], device="cuda", dtype=dtype)
    return functools.partial(torch.mm, a, b)


def _copy(size: int):
    src = torch.empty(size, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    return functools.partial(dst.copy_, src)


def _qkv(case: Case, dtype):
    heads, n = case.shape["heads"], case.shape["seq_len"]
    head_dim = int(case.table.rsplit("_d", 1)[1])
    return [torch.randn(1, heads, n, head_dim, device="cuda", dtype=dtype) for _ in range(3)]


def _sdpa(case: Case, dtype):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
               "math": SDPBackend.MATH}[case.table.split("_")[0]]
    q, k, v = _qkv(case, dtype)
    causal = "_causal_" in case.table

    def fn():
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return fn


def _flex(case: Case, dtype):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    q, k, v = _qkv(case, dtype)
    n, window = case.shape["seq_len"], case.shape.get("window")

    def mask_mod(b, h, q_idx, kv_idx):
        allowed = q_idx >= kv_idx
        if window is not None:
            allowed = allowed & (q_idx - kv_idx < window)
        return allowed

    block_mask = create_block_mask(mask_mod, None, None, n, n, device="cuda")
    compiled = torch.compile(flex_attention, dynamic=False)
    return functools.partial(compiled, q, k, v, block_mask=block_mask)
