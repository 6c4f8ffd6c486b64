"""Independent memory oracle that sees inside fused kernels: every CPU
allocation and free of a real no-grad forward, as torch's profiler records
them (``profile_memory=True``), in the order they happened.

``tests/memtrack.py`` follows op outputs through the dispatcher, so a fused
op (nn.MultiheadAttention's fast path) shows only what it returns; the
allocator sees its packed QKV, its scores and its copies too.

peak = weights and buffers + inputs + the largest running sum of the
allocations made during the forward.

oneDNN is turned off for the run: on a CPU with bfloat16 instructions
(avx512_bf16, AMX) it takes bfloat16 matmuls, with a scratch buffer of its
own that depends on the CPU, and attncost models torch's kernels, which
every CPU runs alike.
"""
from __future__ import annotations

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._pytree import tree_flatten


def _unique_bytes(tensors) -> int:
    seen = {}
    for t in tensors:
        if isinstance(t, torch.Tensor):
            s = t.untyped_storage()
            seen.setdefault(s._cdata, int(s.nbytes()))
    return sum(seen.values())


def allocation_peak(model: torch.nn.Module, inputs) -> int:
    """Peak bytes of one no-grad forward on a CPU, kernel scratch included."""
    call = (lambda: model(**inputs)) if isinstance(inputs, dict) else (lambda: model(*inputs))
    with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False):
        call()  # warm-up: one-time allocations are not the forward's
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            out = call()
            del out
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    state = list(model.parameters()) + list(model.buffers())
    return _unique_bytes(state) + _unique_bytes(tree_flatten(inputs)[0]) + peak
