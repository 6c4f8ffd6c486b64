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


def largest_under(ok: Callable[[int], bool], start: int, cap: int,
                  floor: int = 1) -> int | None:
    """The largest x in [floor, cap] with ok(x), for ok that holds up to some
    x and not above: gallop from ``start`` up (if ok) or down (if not), then
    bisect.  None if ``floor`` is not ok.  Where ok is not monotone (reserved
    memory can dip by a segment as N grows), the answer is a boundary: ok at
    x and not at x + 1."""
    start = min(max(int(start), floor), cap)
    if ok(start):
        good, step = start, 1
        while good < cap:
            probe = min(good + step, cap)
            if not ok(probe):
                return _bisect(ok, good, probe)
            good, step = probe, step * 2
        return good
    bad, step = start, 1
    while bad > floor:
        probe = max(bad - step, floor)
        if ok(probe):
            return _bisect(ok, probe, bad)
        bad, step = probe, step * 2
    return None


#: How finely ``first_failure`` looks below an answer: every 1/SCAN_STEPS of the way.
SCAN_STEPS = 256


def first_failure(ok: Callable[[int], bool], found: int | None, low: int,
                  checkable: Callable[[int], bool] = lambda x: True) -> int | None:
    """For ok that is not monotone (the caching allocator's fragmentation
    comes and goes with N), the boundary below the first length that fails
    between ``low`` and ``found``, looked for every (found - low)/SCAN_STEPS:
    every length checked up to the answer runs.  ``checkable`` skips lengths
    that would cost a new trace."""
    if found is None or found <= low:
        return found
    step = max(1, (found - low) // SCAN_STEPS)
    last_ok = low
    for x in range(low + step, found, step):
        if not checkable(x):
            continue
        if not ok(x):
            return _bisect(ok, last_ok, x)
        last_ok = x
    return found


def _bisect(ok, good: int, bad: int) -> int:
    """ok(good) and not ok(bad): the last x that is ok."""
    while bad - good > 1:
        mid = (good + bad) // 2
        if ok(mid):
            good = mid
        else:
            bad = mid
    return good


@dataclass
class RangedRuns:
    """Whether the model runs at (N, B), for every N, from analyses that each
    hold for a range.

    ``runs(analysis, n, b)`` asks one analysis; ``retrace(n)`` makes an
    analysis at n (raising AttncostError where the model cannot be traced)."""

    runs: Callable[[object, int, int], bool]
    retrace: Callable[[int], object]
    analyses: list = field(default_factory=list)
    traces_left: int = TRACE_BUDGET
    #: lengths no trace reached (the budget spent, or the model failed there)
    unreached: list[tuple[int, str]] = field(default_factory=list)

    def covering(self, n: int):
        for a in self.analyses:
            if hasattr(a, "holds_at"):
                if a.holds_at(n):
                    return a
                continue
            lo, hi = a.n_range
            if lo <= n and (hi is None or n <= hi):
                return a
        return None

    def ok(self, n: int, b: int) -> bool:
        """Runs at (n, b); False where no analysis could be made, so that a
        search stops below it (its answer is then a lower bound)."""
        analysis = self.covering(n)
        if analysis is None:
            analysis = self._trace(n)
        return analysis is not None and self.runs(analysis, n, b)

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


def max_seq_len_across(runs: RangedRuns, batch: int, start: int,
                       cap: int | None = None) -> int | None:
    """The largest N that runs at ``batch``, searched from ``start`` across
    as many traces as it needs."""
    top = MAX_SEQ_LEN_CAP if cap is None else min(int(cap), MAX_SEQ_LEN_CAP)
    return largest_under(lambda n: runs.ok(n, batch), start, top)


def max_batch(runs: Callable[[int, int], bool], seq_len: int,
              cap: int = MAX_BATCH_CAP) -> int | None:
    """The largest batch that runs at ``seq_len`` (None: not even one)."""
    return largest_under(lambda b: runs(seq_len, b), 1, cap)


def unreached_warning(peaks: RangedRuns, found: int | None) -> str | None:
    """One line when the search could not trace a length it needed."""
    if not peaks.unreached:
        return None
    n, why = min(peaks.unreached)
    bound = f"at least {found:,}" if found else "unknown"
    reason = why.split(":")[0].split(" (")[0]
    return f"largest N is {bound}: no trace at N={n:,} ({reason})"
