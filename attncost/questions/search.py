"""The largest N (or batch) under a budget, when one trace does not hold for every N.

A trace holds for the range of N its guards allow (a branch on the length,
a loop unrolled N times).  Outside that range its formulas say nothing about
the model, so the search traces again at a length it needs and keeps every
analysis by the range it holds for.  Lengths are searched on exact integers
(gallop, then bisect), each probe a formula evaluation where a trace covers
it and a new trace where none does, up to a budget of traces.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..errors import AttncostError, first_line

#: No answer is larger than this (a 1T-token context).
MAX_SEQ_LEN_CAP = 2**40
#: No batch answer is larger than this.
MAX_BATCH_CAP = 2**24
#: Traces a search may add before it settles for what it has proved.
TRACE_BUDGET = 12


def largest_under(f: Callable[[int], int], budget: int, start: int, cap: int,
                  floor: int = 1) -> int | None:
    """The largest x in [floor, cap] with f(x) <= budget, for f that does not
    decrease: gallop from ``start`` up (if it fits) or down (if not), then
    bisect.  None if ``floor`` does not fit."""
    start = min(max(int(start), floor), cap)
    if f(start) <= budget:
        good, step = start, 1
        while good < cap:
            probe = min(good + step, cap)
            if f(probe) > budget:
                return _bisect(f, budget, good, probe)
            good, step = probe, step * 2
        return good
    bad, step = start, 1
    while bad > floor:
        probe = max(bad - step, floor)
        if f(probe) <= budget:
            return _bisect(f, budget, probe, bad)
        bad, step = probe, step * 2
    return None


def _bisect(f, budget: int, good: int, bad: int) -> int:
    """f(good) fits, f(bad) does not: the last x that fits."""
    while bad - good > 1:
        mid = (good + bad) // 2
        if f(mid) <= budget:
            good = mid
        else:
            bad = mid
    return good


@dataclass
class RangedPeaks:
    """A peak function over every N, from analyses that each hold for a range.

    ``peak(analysis, n, b)`` evaluates one analysis; ``retrace(n)`` makes an
    analysis at n (None where the model cannot be traced there)."""

    peak: Callable[[object, int, int], int]
    retrace: Callable[[int], object]
    analyses: list = field(default_factory=list)
    traces_left: int = TRACE_BUDGET
    #: lengths no trace reached (the budget spent, or the model failed there)
    unreached: list[tuple[int, str]] = field(default_factory=list)

    def covering(self, n: int):
        for a in self.analyses:
            lo, hi = a.n_range
            if lo <= n and (hi is None or n <= hi):
                return a
        return None

    def at(self, n: int, b: int) -> float:
        """Peak bytes at (n, b); infinite where no analysis could be made, so
        that a search stops below it (its answer is then a lower bound)."""
        analysis = self.covering(n)
        if analysis is None:
            analysis = self._trace(n)
        if analysis is None:
            return float("inf")
        return self.peak(analysis, n, b)

    def _trace(self, n: int):
        if self.traces_left <= 0:
            self.unreached.append((n, "no traces left in this search"))
            return None
        self.traces_left -= 1
        try:
            analysis = self.retrace(n)
        except AttncostError as exc:
            self.unreached.append((n, first_line(exc)))
            return None
        self.analyses.append(analysis)
        return analysis

    def retraced(self) -> bool:
        return len(self.analyses) > 1


def max_seq_len_across(peaks: RangedPeaks, batch: int, budget: int, start: int,
                       cap: int | None = None) -> int | None:
    """The largest N that fits ``budget`` at ``batch``, searched from
    ``start`` across as many traces as it needs."""
    top = MAX_SEQ_LEN_CAP if cap is None else min(int(cap), MAX_SEQ_LEN_CAP)
    return largest_under(lambda n: peaks.at(n, batch), budget, start, top)


def max_batch(peak: Callable[[int, int], int], seq_len: int, budget: int,
              cap: int = MAX_BATCH_CAP) -> int | None:
    """The largest batch that fits ``budget`` at ``seq_len`` (None: not even one)."""
    return largest_under(lambda b: peak(seq_len, b), budget, 1, cap)


def unreached_warning(peaks: RangedPeaks, found: int | None) -> str | None:
    """One line when the search could not trace a length it needed."""
    if not peaks.unreached:
        return None
    n, why = min(peaks.unreached)
    bound = f"at least {found:,}" if found else "unknown"
    reason = why.split(":")[0].split(" (")[0]
    return f"largest N is {bound}: no trace at N={n:,} ({reason})"
