"""Stop a trace that unrolls a loop over the sequence.

A recurrent or state-space mixer written as ``for t in range(seq_len)``
(Mamba's slow path, RWKV-style loops) turns the symbolic length into a
Python int: make_fx specialises N to the requested value and records every
step, so a trace at N = 2048 records thousands of steps per layer and runs
for minutes, for a formula that holds at that one N.  The shape environment
here notices the moment N is fixed to a constant; above ``UNROLL_LIMIT`` the
trace stops, two traces at small lengths confirm that the graph grows with
N, and the user is told so in one line.  At or below the limit the trace
goes on: its formulas hold at that N only, which the range of N says.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Callable, Iterator

from torch.fx.experimental.symbolic_shapes import ShapeEnv

from ..errors import ModelError

#: Largest length a trace may specialise to (and so unroll a loop over).
UNROLL_LIMIT = 64
#: Lengths at which a specialising model is traced to see its graph grow.
PROBE_LENGTHS = (8, 16)


class LengthSpecialized(ModelError):
    """The model fixed N to a Python int above UNROLL_LIMIT."""

    def __init__(self, value: int):
        super().__init__(f"the model's code needs the length as a Python int (N={value})")
        self.value = value


class WatchedShapeEnv(ShapeEnv):
    """A ShapeEnv that raises LengthSpecialized when a watched symbol (one
    that follows N) is replaced by a constant above ``limit``."""

    def watch(self, symbols, limit: int | None) -> None:
        self._attncost_watched = frozenset(symbols)
        self._attncost_limit = limit

    def _set_replacement(self, a, tgt, msg: str) -> None:
        watched = getattr(self, "_attncost_watched", frozenset())
        limit = getattr(self, "_attncost_limit", None)
        if limit is not None and a in watched and getattr(tgt, "is_number", False) and \
                int(tgt) > limit:
            raise LengthSpecialized(int(tgt))
        super()._set_replacement(a, tgt, msg)


@contextlib.contextmanager
def quiet_shape_log() -> Iterator[None]:
    """torch logs a warning when a guard raises (LengthSpecialized does):
    the error that follows says it better."""
    logger = logging.getLogger("torch.fx.experimental.symbolic_shapes")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def unrolled_error(seq_len: int, count_nodes: Callable[[int], int | None]) -> ModelError:
    """The message for a model that specialised N at ``seq_len``:
    ``count_nodes(n)`` traces at a small n and returns its node count."""
    counts = {}
    for n in PROBE_LENGTHS:
        try:
            counts[n] = count_nodes(n)
        except Exception:  # noqa: BLE001 - a probe that fails only weakens the message
            counts[n] = None
    (n0, n1), (c0, c1) = PROBE_LENGTHS, (counts[PROBE_LENGTHS[0]], counts[PROBE_LENGTHS[1]])
    if c0 is not None and c1 is not None and c1 > c0:
        per_token = (c1 - c0) / (n1 - n0)
        return ModelError(
            f"the model unrolls a loop over the sequence: its graph grows with N ({c0} ops at "
            f"N={n0}, {c1} at N={n1}, about {per_token:.0f} per token), so a trace at "
            f"N={seq_len} would record every step and hold at that N only; pass "
            f"--seq-len {UNROLL_LIMIT} or less to analyse it at one length")
    return ModelError(
        f"the model's code turns the length into a Python int (N={seq_len}), so its formulas "
        f"would hold at that N only; pass --seq-len {UNROLL_LIMIT} or less to analyse it at one "
        "length, or keep the length a tensor size in the model")
