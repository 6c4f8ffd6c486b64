"""What CPU kernels allocate beyond the outputs the trace records.

* The flash attention kernel (``_scaled_dot_product_flash_attention_for_cpu``,
  aten/src/ATen/native/cpu/FlashAttentionKernel.cpp) splits the queries into
  blocks of 32, 64 or 256 rows (by the query length: under 192, under 768,
  else) and the keys into blocks of at most 512, and gives each thread a
  scratch buffer in the accumulation dtype (float32): the block's scores,
  their running max and sum, and its output rows; with 16-bit inputs a
  second one holds the scores in the input's dtype.  It lives inside the
  call.  The thread count is this process's (``torch.get_num_threads()``):
  the machine the analysis runs on.  Key/value packing for AMX matmuls is
  not modelled.
"""
from __future__ import annotations

import sympy
import torch
import torch.fx as fx

from ..memory.model import Allocation
from .allocation import register_allocation_rule
from .ops import qkv_args

aten = torch.ops.aten

#: Query block rows by query length: (at least this long, rows), longest first.
Q_SPLITS = ((768, 256), (192, 64), (0, 32))
KV_SPLIT = 512
#: How the scratch is labelled (the memory model says whose thread count it is).
SCRATCH_LABEL = "CPU flash attention scratch"
ACCUMULATE_BYTES = 4  # float32, for float32, bfloat16 and float16 inputs


def query_block(length: sympy.Expr) -> sympy.Expr:
    """The rows of one query block, at most the query length."""
    pieces = [(sympy.Min(rows, length), length >= at) for at, rows in Q_SPLITS[:-1]]
    return sympy.Piecewise(*pieces, (sympy.Min(Q_SPLITS[-1][1], length), True))


def flash_scratch_bytes(traced, node: fx.Node, threads: int) -> sympy.Expr:
    """Bytes of the per-thread buffers one call holds while it runs."""
    q, k, _ = qkv_args(node)
    qs, ks = traced.shape(q), traced.shape(k)
    q_rows, kv_rows, head_dim = query_block(qs[-2]), sympy.Min(KV_SPLIT, ks[-2]), qs[-1]
    per_thread = q_rows * kv_rows + 2 * q_rows + q_rows * head_dim
    nbytes = threads * per_thread * ACCUMULATE_BYTES
    itemsize = q.meta["val"].element_size()
    if itemsize < ACCUMULATE_BYTES:  # 16-bit inputs: the scores again, in their dtype
        nbytes += threads * q_rows * kv_rows * itemsize
    return nbytes


FLASH_FOR_CPU = aten._scaled_dot_product_flash_attention_for_cpu


def flash_scratch_rule(extra: int | None = 0):
    """The CPU flash kernel's allocation rule, its scratch ``extra`` bytes
    larger, or without it (``extra=None``): what a fit of the peak of a
    model traced at fixed lengths separates (tracing/loops.py)."""
    def rule(traced, node: fx.Node, traced_allocations: list[Allocation]) -> list[Allocation]:
        if extra is None:
            return list(traced_allocations)
        first = traced_allocations[0]
        threads = torch.get_num_threads()
        nbytes = flash_scratch_bytes(traced, node, threads) + extra
        return list(traced_allocations) + [Allocation(
            first.time, first.time + 1, nbytes, node, len(traced_allocations),
            kind="workspace", label=f"{SCRATCH_LABEL} ({threads} threads)")]
    rule.__name__ = "cpu_flash_attention"
    return rule


#: The traced outputs, and the kernel's scratch alive inside the call.
cpu_flash_attention = register_allocation_rule("cpu", FLASH_FOR_CPU)(flash_scratch_rule())
