"""Stop a trace that unrolls a loop over the sequence.

A recurrent or state-space mixer written as ``for t in range(seq_len)``
(Mamba's slow path, RWKV-style loops) turns the symbolic length into a
Python int: make_fx specialises N to the requested value and records every
step, so a trace at N = 2048 records thousands of steps per layer and runs
for minutes, for a formula that holds at that one N.  The shape environment
here notices the moment N, or a count made from it (chunks of N), is
fixed to a constant; above ``UNROLL_LIMIT`` the
trace stops, two traces at small lengths confirm that the graph grows with
N, and the user is told so in one line, unless the analysis costs the loop
from traces at small lengths (tracing/loops.py, which needs no message).
At or below the limit the trace goes on: its formulas hold at that N
only, which the range of N says, unless a fit from short traces holds,
which the analysis then prefers (``analysis._fitted_instead``).
"""
from __future__ import annotations

import contextlib
import logging
from typing import Callable, Iterator

import sympy
from torch.fx.experimental.symbolic_shapes import ShapeEnv

from ..errors import ModelError

#: Largest length a trace may specialise to (and so unroll a loop over).
UNROLL_LIMIT = 64
#: Lengths at which a specialising model is traced to see its graph grow.
PROBE_LENGTHS = (8, 16)


class LengthSpecialized(ModelError):
    """The model fixed N to a Python int above UNROLL_LIMIT."""

    def __init__(self, value: int, steps: int | None = None):
        super().__init__(f"the model's code needs the length as a Python int (N={value})")
        self.value = value
        #: the number the guard fixed: N itself, or a count made from it (chunks)
        self.steps = steps if steps is not None else value


class WatchedShapeEnv(ShapeEnv):
    """A ShapeEnv that raises LengthSpecialized when a watched symbol (one
    that follows N) is replaced by a constant above ``limit``."""

    def watch(self, symbols, limit: int | None) -> None:
        self._attncost_watched = frozenset(symbols)
        self._attncost_limit = limit

    def _maybe_guard_rel(self, expr) -> None:
        """A guard that fixes a function of N to a number above the limit
        (the number of chunks a loop over N runs) stops the trace as fixing
        N would: the loop would run that many times, with symbolic shapes."""
        limit = getattr(self, "_attncost_limit", None)
        watched = getattr(self, "_attncost_watched", frozenset())
        if limit is not None and isinstance(expr, sympy.Eq):
            for side, other in (expr.args, expr.args[::-1]):
                if other.is_Integer and int(other) > limit and side.free_symbols & watched:
                    hints = {x: self.backed_var_to_val.get(x) for x in side.free_symbols & watched}
                    if _holds_far_away(side, other, hints):
                        continue
                    raise LengthSpecialized(max(int(h) for h in hints.values() if h is not None),
                                            int(other))
        return super()._maybe_guard_rel(expr)

    def _get_stack_summary(self, is_debug: bool = False, framework_loc=None):
        """Where in the model's code a symbol or guard arose is not looked
        up: the lookup imports torch's compiler (half a second) for a
        location attncost does not show."""
        from torch._guards import SLoc

        return SLoc(framework_loc, None), ""

    def _set_replacement(self, a, tgt, msg: str) -> None:
        watched = getattr(self, "_attncost_watched", frozenset())
        limit = getattr(self, "_attncost_limit", None)
        if a in watched and getattr(tgt, "is_number", False):
            if limit is not None and int(tgt) > limit:
                raise LengthSpecialized(int(tgt))
            #: N fixed as a number at or below the limit: the trace goes on,
            #: and holds at that N only (``fixed_length``)
            self.attncost_fixed_length = int(tgt)
        super()._set_replacement(a, tgt, msg)


#: Multiples of the traced length (plus an odd offset) at which a guard that
#: pins a function of N to a number is tried: one that holds at each fixes
#: nothing (a length padded to blocks of 512, divided by its count of blocks).
_FAR = (2, 5, 1000)


def _holds_far_away(side, value, hints: dict) -> bool:
    """Does ``side == value`` hold at lengths far from the traced one too?"""
    if any(h is None for h in hints.values()):
        return False
    try:
        return all(side.xreplace({x: sympy.Integer(int(h) * k + 3) for x, h in hints.items()})
                   == value for k in _FAR)
    except (TypeError, ValueError, ZeroDivisionError):
        return False


@contextlib.contextmanager
def quiet_shape_log() -> Iterator[None]:
    """torch logs a warning when a guard raises (LengthSpecialized does),
    and an error with a traceback when a fake tensor's shape check raises
    (the model's own error at a length it does not take): the error that
    follows says it better."""
    loggers = {logging.getLogger("torch.fx.experimental.symbolic_shapes"): logging.ERROR,
               logging.getLogger("torch._subclasses.fake_tensor"): logging.CRITICAL}
    levels = {logger: logger.level for logger in loggers}
    for logger, level in loggers.items():
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, level in levels.items():
            logger.setLevel(level)


def fixed_length(shape_env) -> int | None:
    """The number a trace fixed N to at or below UNROLL_LIMIT (a loop over
    the length unrolled there), or None where N stayed a symbol."""
    return getattr(shape_env, "attncost_fixed_length", None)


class UnrolledLoop(ModelError):
    """The model unrolls a loop over N at ``seq_len``: analyze costs it from
    traces at small lengths instead (tracing/loops.py).  The message, which
    traces at two small lengths to say how the graph grows, is made only
    when it is shown."""

    def __init__(self, seq_len: int, count_nodes: Callable[[int], int | None],
                 steps: int | None = None):
        super().__init__(seq_len)
        self.seq_len = seq_len
        #: how many times the loop would run at seq_len (fewer: a loop over chunks)
        self.steps = steps if steps is not None else seq_len
        self._count_nodes = count_nodes
        self._message: str | None = None

    def __str__(self) -> str:
        if self._message is None:
            self._message = _unrolled_message(self.seq_len, self._count_nodes)
        return self._message


def unrolled_error(seq_len: int, count_nodes: Callable[[int], int | None],
                   steps: int | None = None) -> UnrolledLoop:
    """The error for a model that specialised N at ``seq_len`` (or a count
    made from it at ``steps``): ``count_nodes(n)`` traces at a small n and
    returns its node count."""
    return UnrolledLoop(seq_len, count_nodes, steps)


def _unrolled_message(seq_len: int, count_nodes: Callable[[int], int | None]) -> str:
    counts = {}
    for n in PROBE_LENGTHS:
        try:
            counts[n] = count_nodes(n)
        except Exception:  # noqa: BLE001 - a probe that fails only weakens the message
            counts[n] = None
    (n0, n1), (c0, c1) = PROBE_LENGTHS, (counts[PROBE_LENGTHS[0]], counts[PROBE_LENGTHS[1]])
    if c0 is not None and c1 is not None and c1 > c0:
        per_token = (c1 - c0) / (n1 - n0)
        return (
            f"the model unrolls a loop over the sequence: its graph grows with N ({c0} ops at "
            f"N={n0}, {c1} at N={n1}, about {per_token:.0f} per token), so a trace at "
            f"N={seq_len} would record every step and hold at that N only; pass "
            f"--seq-len {UNROLL_LIMIT} or less to analyse it at one length")
    return (
        f"the model's code turns the length into a Python int (N={seq_len}), so its formulas "
        f"would hold at that N only; pass --seq-len {UNROLL_LIMIT} or less to analyse it at one "
        "length, or keep the length a tensor size in the model")
