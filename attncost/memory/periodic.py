"""Extend a replay of two periods of repeated layers to the whole stack.

The eager replay of a deep model runs every layer, though the layers of a
stack that repeats with period p (tracing/repeat.py) allocate and free
alike.  The model is replayed with its first 2p layers only (the cut the
trace uses); the first period's ops, with when each storage dies relative
to the period's start, stand for every period followed by another, and the
second's for the last one; the work after the stack moves by the periods
added.  The result is the replay the whole stack would give.  Any doubt
(layers that run out of order or with ops between them, two periods that
differ op for op or in when their own storages die, a value made before the
stack that dies inside the second period, a partial last period) gives
None: the caller replays every layer.
"""
from __future__ import annotations

from dataclasses import dataclass

from .replay import Op, Replay, Storage


@dataclass
class Stack:
    """Where the replayed layers ran: ``starts[k]`` is the op index at which
    layer k began, ``starts[2p]`` where the last one ended."""

    starts: list[int]
    period: int
    count: int  # layers of the whole stack

    @property
    def span(self) -> int:
        """Ops in one period."""
        return self.starts[self.period] - self.starts[0]


def layer_starts(calls: list[tuple[int, str, int]], traced_count: int) -> list[int] | None:
    """From (layer, "pre" | "post", op index) hook calls: each layer's start
    and the end of the last, or None unless each layer ran once, in order,
    with no op between one layer and the next."""
    expected = [(k, edge) for k in range(traced_count) for edge in ("pre", "post")]
    if [(k, edge) for k, edge, _ in calls] != expected:
        return None
    at = [t for _, _, t in calls]
    if any(at[2 * k + 1] != at[2 * k + 2] for k in range(traced_count - 1)):
        return None
    return [at[2 * k] for k in range(traced_count)] + [at[-1]]


def _same_ops(short: Replay, first: int, second: int, span: int) -> bool:
    """The two periods run the same ops and allocate the same storages."""
    for i in range(span):
        a, b = short.ops[first + i], short.ops[second + i]
        if a.func != b.func or a.half_softmax != b.half_softmax or len(a.new) != len(b.new):
            return False
        for sa, sb in zip(a.new, b.new):
            if (sa is None) != (sb is None) or (
                    sa is not None and short.storages[sa].nbytes != short.storages[sb].nbytes):
                return False
    return True


def _same_lifetimes(short: Replay, stack: Stack) -> bool:
    """A storage of the first period freed inside it has its twin in the
    second freed as far into it; one that outlives the first period has a
    twin that outlives the stack; nothing made before the stack dies inside
    the second period."""
    s0, span = stack.starts[0], stack.span
    end_of_stack = s0 + 2 * span
    for i in range(span):
        for sa, sb in zip(short.ops[s0 + i].new, short.ops[s0 + span + i].new):
            if sa is None:
                continue
            da, db = short.storages[sa].death, short.storages[sb].death
            if da is not None and da < s0 + span:
                if db != da + span:
                    return False
            elif db is not None and db < end_of_stack:
                return False
    return all(st.death is None or not s0 + span < st.death < end_of_stack
               for st in short.storages if st.op < s0)


def extend(short: Replay, stack: Stack) -> Replay | None:
    """The replay of all ``stack.count`` layers from ``short`` (2p layers),
    or None where the two periods do not allow it."""
    p, s0, span = stack.period, stack.starts[0], stack.span
    if stack.count % p or stack.starts[2 * p] - stack.starts[p] != span or \
            not _same_ops(short, s0, s0 + span, span) or not _same_lifetimes(short, stack):
        return None
    periods = stack.count // p
    added = (periods - 2) * span
    end_of_stack = s0 + 2 * span
    ops: list[Op] = []
    storages: list[Storage] = []

    def copy(i: int, at: int, death_of) -> None:
        op = short.ops[i]
        new: list[int | None] = []
        for sid in op.new:
            if sid is None:
                new.append(None)
                continue
            st = short.storages[sid]
            new.append(len(storages))
            storages.append(Storage(at, st.output, st.nbytes, death_of(st.death)))
        ops.append(Op(op.func, new, op.half_softmax))

    def after_stack(d: int | None) -> int | None:
        return None if d is None else (d + added if d >= end_of_stack else d)

    for i in range(s0):
        copy(i, i, after_stack)
    for q in range(periods - 1):  # each followed by another period: the first period's pattern
        shift = q * span

        def in_period(d: int | None, shift=shift) -> int | None:
            return None if d is None else (d + shift if d <= end_of_stack else d + added)
        for i in range(s0, s0 + span):
            copy(i, i + shift, in_period)
    for i in range(s0 + span, len(short.ops)):  # the last period and the work after the stack
        copy(i, i + added, lambda d: None if d is None else d + added)
    return Replay(ops, storages, short.end + added, short.batch)
