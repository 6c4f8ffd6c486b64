"""What one forward reserves: attncost's memory model replayed through the
caching allocator (allocator.py).

The events are the memory model's allocations in program order (each
parameter and buffer, the library workspace, each input, then the
forward's tensors), sized at one (N, B): reserved memory is a value at that
point, never a formula, because segments and rounding make it a step
function of the sizes.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import sympy

from ..expr import value_at
from .allocator import CachingAllocator

@dataclass
class AllocatorRun:
    """What the allocator did over one program, in bytes: the peaks are what
    ``torch.cuda.max_memory_reserved`` and ``max_memory_allocated`` report
    (allocated counts whole blocks: requests rounded, remainders not split)."""

    reserved_peak_bytes: int
    allocated_peak_bytes: int
    segments_peak: int
    oom: bool
    #: the index in the events of the request that ran out of memory
    oom_event: int | None
    #: at the end, or when memory ran out
    reserved_bytes: int
    allocated_bytes: int
    segments: int


def simulate(events, *, limit: int | None = None, expandable_segments: bool = False,
             max_split_size: int | None = None) -> AllocatorRun:
    """Replay ``("alloc", key, nbytes)`` and ``("free", key)`` in program
    order on an empty allocator; stops at the first request that does not
    fit under ``limit`` (bytes the process may reserve).  A zero-byte
    request allocates nothing, as in the source."""
    allocator = CachingAllocator(limit, expandable_segments, max_split_size)
    live: dict = {}
    oom_event = None
    for i, event in enumerate(events):
        if event[0] == "free":
            block = live.pop(event[1])
            if block is not None:
                allocator.free(block)
            continue
        block = allocator.malloc(event[2]) if event[2] > 0 else None
        if block is None and event[2] > 0:
            oom_event = i
            break
        live[event[1]] = block
    a = allocator
    return AllocatorRun(a.reserved_peak, a.allocated_peak, a.segments_peak, oom_event is not None,
                        oom_event, a.reserved, a.allocated, a.segments)


def events_at(memory_model, n: int, b: int = 1) -> list[tuple]:
    """The allocator's events for one forward of ``memory_model`` at N=n,
    B=b: each parameter and buffer, the library workspace, each input, then
    the forward's tensors in order, frees before allocations at the same
    step (``Allocation.alive_at``: alive from ``time`` until before ``death``)."""
    return _plan(memory_model).events(memory_model, n, b)


def reserved_peak(memory_model, n: int, b: int = 1, expandable_segments: bool = False) -> int:
    """``max_memory_reserved`` of one forward at N=n, B=b on an empty allocator."""
    run = simulate(events_at(memory_model, n, b), expandable_segments=expandable_segments)
    return run.reserved_peak_bytes


def runs_under(memory_model, n: int, b: int, limit: int,
               expandable_segments: bool = False) -> bool:
    """Whether one forward at N=n, B=b runs with at most ``limit`` bytes
    allowed to the allocator (``set_per_process_memory_fraction``)."""
    run = simulate(events_at(memory_model, n, b), limit=limit,
                   expandable_segments=expandable_segments)
    return not run.oom


class _Plan:
    """A memory model's events with sizes as expressions, built once: the
    order is the same at every N and B, only the sizes change."""

    def __init__(self, memory_model):
        self.exprs: list = []
        self._index: dict = {}
        self.prefix: list[tuple] = []
        self.forwards: dict = {}
        traced = memory_model._traced
        for kind in ("parameter", "buffer", "workspace", "input"):
            sizes = ([("workspace", memory_model.workspace_bytes)] if kind == "workspace" else
                     [((kind, node.name, k), nbytes) for node in traced.placeholders(kind)
                      for k, nbytes in enumerate(traced.output_bytes(node))])
            for key, nbytes in sizes:
                self._add(self.prefix, key, nbytes)

    def _add(self, ops: list, key, nbytes) -> None:
        expr = sympy.sympify(nbytes)
        k = self._index.get(expr)
        if k is None:
            k = self._index[expr] = len(self.exprs)
            self.exprs.append(sympy.expand(expr).as_coefficients_dict())
        ops.append(("alloc", key, k))

    def _forward(self, memory_model, b: int) -> list[tuple]:
        """The profile's allocations as (step, phase, index) ordered events."""
        profile = memory_model._profile(b)
        ops = self.forwards.get(id(profile))
        if ops is None:
            steps = []
            for i, a in enumerate(profile.allocations):
                steps.append((a.time, 1, i))
                if a.death is not None:  # freed at death; never alive: right after its birth
                    steps.append((a.death, 0, i) if a.death > a.time else (a.time, 2, i))
            steps.sort()
            ops = []
            for _, phase, i in steps:
                if phase == 1:
                    self._add(ops, ("tensor", i), profile.allocations[i].bytes)
                else:
                    ops.append(("free", ("tensor", i), None))
            self.forwards[id(profile)] = ops
        return ops

    def events(self, memory_model, n: int, b: int) -> list[tuple]:
        ops = self.prefix + self._forward(memory_model, b)
        values = [value_at(terms, n, b) for terms in self.exprs]
        return [(action, key, values[k]) if action == "alloc" else (action, key)
                for action, key, k in ops]


_PLANS: dict[int, _Plan] = {}


def _plan(memory_model) -> _Plan:
    """The plan of a memory model, kept while the model lives."""
    key = id(memory_model)
    plan = _PLANS.get(key)
    if plan is None:
        plan = _PLANS[key] = _Plan(memory_model)
        weakref.finalize(memory_model, _PLANS.pop, key, None)
    return plan
