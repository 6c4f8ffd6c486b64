"""Bytes one GPU sends in a collective, for the ring algorithms NCCL and
gloo use at these sizes.

With ``p`` GPUs in the group and a full tensor of ``size`` bytes, a ring
all-gather or reduce-scatter runs ``p - 1`` steps, each passing one
``size / p`` chunk to the next GPU: ``(p - 1) / p · size`` per GPU.  A ring
all-reduce is a reduce-scatter then an all-gather: ``2 (p - 1) / p · size``
(Patarasuk and Yuan, "Bandwidth optimal all-reduce algorithms for clusters
of workstations", 2009; the NCCL performance notes use the same factors).
A ring pass of one block per step (context parallelism) sends the block
``p - 1`` times.  Results are whole bytes, rounded up.
"""
from __future__ import annotations


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def all_gather_bytes(size: int, group: int) -> int:
    """Bytes one GPU sends to gather a ``size``-byte tensor over ``group`` GPUs."""
    return _ceil_div((group - 1) * size, group) if group > 1 else 0


def reduce_scatter_bytes(size: int, group: int) -> int:
    """Bytes one GPU sends to reduce-scatter a ``size``-byte tensor."""
    return all_gather_bytes(size, group)


def all_reduce_bytes(size: int, group: int) -> int:
    """Bytes one GPU sends in a ring all-reduce of a ``size``-byte tensor."""
    return _ceil_div(2 * (group - 1) * size, group) if group > 1 else 0


def ring_pass_bytes(block: int, group: int) -> int:
    """Bytes one GPU sends passing its ``block`` around a ring until every
    GPU has seen every block (ring attention's K/V exchange)."""
    return (group - 1) * block if group > 1 else 0
