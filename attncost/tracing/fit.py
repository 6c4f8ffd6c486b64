"""Costs fitted in N (and B) through traces at chosen lengths.

A model that fixes the length as a number while it runs (a Python loop over
the tokens or over chunks of them) is traced at a few lengths with every
size a number; each number read off those traces (FLOPs, bytes, ops) is a
polynomial in N, linear in B, which the fit finds exactly (rational
arithmetic) and must reproduce at lengths and batches held out of it.

Two sets of lengths (``FitLengths``):

* ``POSITIONS``: a loop over the tokens; the terms are 1, N, N²;
* ``chunked(L)``: a loop over chunks of L tokens, the length padded to
  whole chunks; a cost is then a polynomial in N and the chunk count
  C = ceiling(N/L) (projections per token, work per chunk, attention over
  all pairs): the terms are 1, N, C, N², N·C, C², at lengths of two to
  four chunks chosen so that only one such polynomial passes through them.
  A length that fills its last chunk needs no padding, and the copies that
  padding makes are then not made: where a cost differs there (the peak
  memory), it is fitted apart at whole chunks, and its formula is the
  Piecewise of the two;
* ``past_reach(w)``: where an attention's pattern reaches w positions (a
  window of w keys) and the model builds it at each length (a mask written
  by a Python loop over the length), the traces up to w see every pair and
  follow another polynomial than those past it: the fit is made from one
  token past w (and in N and ceiling(N/w), ``chunked(w, 2)``, where a
  pattern in blocks of w makes its cost step with their count).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import sympy

from ..errors import ModelError
from ..expr import B, N, value_at

#: Batches every fit is made at (a cost is linear in B).
FIT_BATCHES = (1, 2)
#: The chunk count, while fitting; ceiling(N/L) in the formulas.
_CHUNKS = sympy.Symbol("C", positive=True, integer=True)


class FitFailed(ModelError):
    """The traces at the fitted lengths do not follow one polynomial in N
    and B; the message says why, as a clause ("no polynomial ... fits")."""


@dataclass(frozen=True)
class FitLengths:
    """Where a fit is made: the lengths it passes through, the (length,
    batch) traces held out of it, and the chunk length a loop steps by."""

    fitted: tuple[int, ...]
    held_out: tuple[tuple[int, int], ...]
    chunk: int | None = None
    #: for a loop over chunks, the lengths of whole chunks, fitted apart
    #: where a cost differs there
    aligned: "FitLengths | None" = None
    #: the reach of an attention's pattern (a window) the lengths start past
    past: int | None = None

    def terms(self) -> list[sympy.Expr]:
        if self.chunk is None:
            return [N**k for k in range(len(self.fitted))]
        return [sympy.Integer(1), N, _CHUNKS, N**2, N * _CHUNKS, _CHUNKS**2]

    def chunks(self, n: int) -> int:
        return -(-n // self.chunk) if self.chunk else 0

    def through(self, points: list[tuple[int, int]]) -> sympy.Expr:
        """The one combination of ``terms`` through the (n, value) points."""
        if len({v for _, v in points}) == 1:
            return sympy.Integer(points[0][1])
        if self.chunk is None:
            return sympy.expand(sympy.interpolate(points, N))
        terms = self.terms()
        rows = sympy.Matrix([[t.subs({N: n, _CHUNKS: self.chunks(n)}) for t in terms]
                             for n, _ in points])
        coefficients = rows.LUsolve(sympy.Matrix([v for _, v in points]))
        expr = sum((c * t for c, t in zip(coefficients, terms)), sympy.Integer(0))
        return sympy.expand(expr).subs(_CHUNKS, sympy.ceiling(N / self.chunk))

    def shapes(self, batches: tuple[int, ...] = FIT_BATCHES) -> list[tuple[int, int]]:
        """Every (length, batch) a fit traces, the fitted ones first."""
        own = [(n, b) for b in batches for n in self.fitted] + list(self.held_out)
        return own + (self.aligned.shapes(batches) if self.aligned else [])

    def text(self) -> str:
        if self.chunk is None:
            return f"{self.fitted[0]}..{self.fitted[-1]}"
        return ", ".join(map(str, sorted(self.fitted + self.aligned.fitted)))

    def held_text(self) -> str:
        held = self.held_out + (self.aligned.held_out if self.aligned else ())
        return ", ".join(f"N={n} (B={b})" for n, b in held)


#: A loop over the tokens: three lengths, two more held out.
POSITIONS = FitLengths((8, 12, 16), ((20, 1), (24, 3)))
#: Where a loop's peak is another moment at the short lengths (the rest of
#: the model's peak overtaken by the loop's past them), it is fitted again
#: from these longer lengths.
LATE = FitLengths((24, 32, 40), ((48, 1), (56, 3)))
#: Shortest chunk a loop over chunks is fitted for: the lengths of a fit
#: through POSITIONS fit in one (a loop over the tokens records more ops at
#: each of them).
MIN_CHUNK = POSITIONS.fitted[-1]


def multiples(m: int) -> FitLengths:
    """POSITIONS' pattern at multiples of m, for a model that runs only at
    such lengths (it asserts the length divides into buckets of m)."""
    return FitLengths((m, 2 * m, 3 * m), ((4 * m, 1), (5 * m, 3)))


def past_reach(reach: int) -> FitLengths:
    """POSITIONS' spacing from one token past a pattern's ``reach`` (below
    it a window lets every pair through): fitted at lengths of one residue
    mod 4, held out at two others, so a cost that steps with a period of 2
    or 4 (blocks) misses them."""
    first = reach + 1
    return FitLengths((first, first + 4, first + 8), ((first + 13, 1), (first + 18, 3)),
                      past=reach)


def chunked(chunk: int, first: int = 3, past: int | None = None) -> FitLengths:
    """Lengths for a loop over chunks of ``chunk`` tokens, from ``first``
    chunks on (the busiest moment of a short loop may be another one): two
    inside each of three chunk counts, at three offsets from its end (no
    conic in N and C passes through them all), held out one chunk count
    later and, at B=3, in the second; and whole chunks (the same counts;
    held out one later and, at B=3, at the last)."""
    half, third = chunk // 2, chunk // 3
    c0, c1, c2 = (first * chunk, (first + 1) * chunk, (first + 2) * chunk)
    fitted = (c0 - 1, c0 - half, c1 - half, c1 - third, c2 - 1, c2 - third)
    later = c2 + chunk
    aligned = FitLengths((c0, c1, c2), ((later, 1), (c2, 3)), past=past)
    return FitLengths(fitted, ((later - chunk // 4, 1), (c1 - 1, 3)), chunk, aligned, past)


def first_chunks(lengths: FitLengths) -> int:
    """How many chunks the shortest length of a chunked fit spans."""
    return -(-min(lengths.fitted) // lengths.chunk)


def fit(points: dict[tuple[int, int], int], held: dict[tuple[int, int], int],
        batches: tuple[int, ...] = FIT_BATCHES,
        lengths: FitLengths = POSITIONS) -> sympy.Expr | None:
    """The polynomial in N over ``lengths``' terms, and linear in B when two
    ``batches`` are fitted, through ``points`` {(n, b): value}, or None when
    it misses a held-out value."""
    per_batch = {b: lengths.through([(n, points[n, b]) for n in lengths.fitted])
                 for b in batches}
    expr = per_batch[batches[0]]
    if len(batches) == 2:
        b0, b1 = batches
        expr = sympy.expand(expr + (per_batch[b1] - expr) * (B - b0) / (b1 - b0))
    if any(value_at(expr, n, b) != v for (n, b), v in held.items()):
        return None
    return expr


def fit_number(measured: Iterable, read: Callable, what: str,
               batches: tuple[int, ...] = FIT_BATCHES,
               lengths: FitLengths = POSITIONS) -> sympy.Expr:
    """One number read off traces (each with ``seq_len`` and ``batch``) at
    ``batches``, fitted through ``lengths`` and checked at the held-out
    ones; for a loop over chunks, checked at whole chunks too, or else
    fitted apart there.  FitFailed names ``what``."""
    values = {(m.seq_len, m.batch): read(m) for m in measured}
    aligned = lengths.aligned
    expr = _fitted(values, batches, lengths,
                   aligned.shapes(batches) if aligned else [])
    if expr is None and aligned is not None:
        inside, whole = _fitted(values, batches, lengths), _fitted(values, batches, aligned)
        if inside is not None and whole is not None:
            expr = sympy.Piecewise((whole, sympy.Eq(sympy.Mod(N, lengths.chunk), 0)),
                                   (inside, True))
    if expr is None:
        raise FitFailed(f"no polynomial in N fits its {what} at N={lengths.text()} and "
                        f"holds at {lengths.held_text()}")
    return expr


def _fitted(values: dict[tuple[int, int], int], batches: tuple[int, ...], lengths: FitLengths,
            also_held: list[tuple[int, int]] = ()) -> sympy.Expr | None:
    held = [s for s in list(lengths.held_out) + list(also_held)
            if len(batches) > 1 or s[1] in batches]  # a number per sequence: at its batch
    return fit({(n, b): values[n, b] for b in batches for n in lengths.fitted},
               {s: values[s] for s in held}, batches, lengths)


def count_of(expr: sympy.Expr) -> int:
    """Heads read off a trace where N and B are numbers include them as
    factors (B·H·N rows): the count is the fitted monomial's coefficient."""
    plain = expr.replace(sympy.ceiling, lambda *args: _CHUNKS)
    terms = sympy.Poly(plain, N, B, _CHUNKS).terms()
    return int(terms[0][1]) if len(terms) == 1 else int(value_at(expr, 1, 1))
