"""How many (query, key) pairs a pattern lets through, as an exact function of N.

A mask is read at one length, but its cost is wanted at every length.  Most
masks are *prefix-stable*: the mask at length n is the top-left n×n block of
the mask at any longer length (positions compared with positions), so one
evaluation at the longest probe length gives the exact count at every
shorter length: count(n) adds, at each step, the new query's keys before it
and the new key's queries before it.

The increments of a pattern built from windows, blocks and strides are
eventually periodic with some period P (1 for causal and windows).  Then,
with q = floor(N/P) and m = N mod P, the count is exactly

    count(N) = α·q² + (β + B(m))·q + γ + H(m),    B(0) = H(0) = 0,

a quadratic in q along each residue class, where B and H are the residue's
own slope and offset.  α, β, γ are fitted on multiples of P; B and H are
read off the counts and must not depend on q; each is written as a
polynomial in m or, for strides that start mid-period, a piecewise-linear
function of m.  The formula is
checked at every length from where it starts to hold up to the probe; one
that holds only over a short tail is no formula, and the count is then
reported as measured.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import sympy
import torch

from ..expr import N

#: Longest period tried for block and strided patterns.
MAX_PERIOD = 1024
#: A formula must hold from this fraction of the probe length up to it.
MIN_VALID_FRACTION = 0.5
#: Most breakpoints a piecewise-linear residue offset may have.
MAX_BREAKPOINTS = 4


@dataclass
class PairCount:
    """Allowed pairs as a function of N, exact for N >= ``valid_from``."""

    expr: sympy.Expr
    valid_from: int
    #: keys a query reaches at most (|i - j| + 1), when it stays bounded as N grows
    reach: int | None
    #: the most keys one query attends to
    keys: int = 0


def pair_counts(allowed: torch.Tensor) -> np.ndarray:
    """counts[n - 1]: allowed pairs in the top-left n×n block, for every n."""
    lower = allowed.tril().sum(dim=-1)            # query n-1's keys 0..n-1
    upper = allowed.triu(1).sum(dim=0)            # key n-1's queries 0..n-2
    return torch.cumsum(lower + upper, 0).to(torch.int64).cpu().numpy()


def is_prefix_stable(big: torch.Tensor, small: torch.Tensor) -> bool:
    """Is the mask at the shorter length the top-left block of the longer one?"""
    n = small.shape[-1]
    return small.shape[-2] == n and bool(torch.equal(big[..., :n, :n], small))


def _period(increments: np.ndarray) -> int | None:
    """The smallest P such that, over the second half, the increments grow
    by the same amount from k to k + P as from k + P to k + 2P: each residue
    class mod P then adds a linear amount per period."""
    tail = increments[len(increments) // 2:]
    for p in range(1, min(MAX_PERIOD, len(tail) // 4) + 1):
        step = tail[p:] - tail[:-p]
        if np.array_equal(step[p:], step[:-p]):
            return p
    return None


def _exact(values: np.ndarray, limit: int) -> list[Fraction]:
    return [Fraction(float(v)).limit_denominator(limit) for v in values]


def _quadratic_on_multiples(counts: np.ndarray, p: int, start: int):
    """α, β, γ with count(qP) = α q² + β q + γ for every multiple of P >= start."""
    qs = np.arange(-(-start // p), len(counts) // p + 1, dtype=np.int64)
    qs = qs[qs >= 1]
    if len(qs) < 4:
        return None
    y = counts[qs * p - 1]
    a = np.stack([qs * qs, qs, np.ones_like(qs)], axis=1).astype(np.float64)
    coef = _exact(np.linalg.lstsq(a, y.astype(np.float64), rcond=None)[0], 8 * p * p)
    fitted = [coef[0] * int(q) * int(q) + coef[1] * int(q) + coef[2] for q in qs]
    return coef if all(f == int(v) for f, v in zip(fitted, y)) else None


def _residue_terms(counts: np.ndarray, coef, p: int, start: int):
    """For each residue m: count(qP + m) - α q² = (β + B(m)) q + γ + H(m)
    exactly, for every q past ``start``.  Returns (B, H) as lists over m, or None."""
    alpha, beta, gamma = coef
    slopes: list[Fraction] = []
    offsets: list[Fraction] = []
    for m in range(p):
        qs = [q for q in range(-(-(start - m) // p), (len(counts) - m) // p + 1) if q * p + m >= 1]
        if len(qs) < 3:
            return None
        ys = [int(counts[q * p + m - 1]) - alpha * q * q for q in qs]
        slope = (ys[1] - ys[0]) / (qs[1] - qs[0])
        offset = ys[0] - slope * qs[0]
        if any(y != slope * q + offset for q, y in zip(qs, ys)):
            return None
        slopes.append(slope - beta)
        offsets.append(offset - gamma)
    return slopes, offsets


def _offset_expr(offsets: list[Fraction], m: sympy.Expr) -> sympy.Expr | None:
    """H(m) as a polynomial of degree <= 2 in m, else piecewise linear, else None."""
    ms = list(range(len(offsets)))
    poly = sympy.interpolate(list(zip(ms[:3], offsets[:3])), sympy.Symbol("m")) if len(ms) >= 3 \
        else sympy.interpolate(list(zip(ms, offsets)), sympy.Symbol("m"))
    if all(poly.subs(sympy.Symbol("m"), x) == h for x, h in zip(ms, offsets)):
        return poly.subs(sympy.Symbol("m"), m)
    slopes = [offsets[i + 1] - offsets[i] for i in range(len(offsets) - 1)]
    breaks = [i + 1 for i in range(len(slopes) - 1) if slopes[i + 1] != slopes[i]]
    if len(breaks) > MAX_BREAKPOINTS:
        return None
    expr = offsets[0] + slopes[0] * m
    for t in breaks:
        expr += (slopes[t] - slopes[t - 1]) * sympy.Max(0, m - t)
    return expr


def fit_pairs(allowed: torch.Tensor) -> PairCount | None:
    """The pairs a prefix-stable (N×N) pattern lets through, as a formula in N."""
    counts = pair_counts(allowed)
    n = len(counts)
    period = _period(np.diff(np.concatenate([[0], counts]))) or 1
    start = max(2, int(n * MIN_VALID_FRACTION))
    coef = _quadratic_on_multiples(counts, period, start)
    terms = _residue_terms(counts, coef, period, start) if coef is not None else None
    if terms is None:
        return None
    q, m = (N, sympy.Integer(0)) if period == 1 else (sympy.floor(N / period), sympy.Mod(N, period))
    slope, offset = (_offset_expr(t, m) if period > 1 else sympy.Integer(0) for t in terms)
    if slope is None or offset is None:
        return None
    alpha, beta, gamma = (sympy.Rational(c.numerator, c.denominator) for c in coef)
    expr = alpha * q * q + (beta + slope) * q + gamma + offset
    if period == 1:
        expr = sympy.expand(expr)
    return PairCount(expr, _valid_from(expr, counts, start), _reach(allowed),
                     int(allowed.sum(dim=-1).max()))


def _valid_from(expr: sympy.Expr, counts: np.ndarray, start: int) -> int:
    """The smallest n (down from ``start``) from which the formula holds."""
    f = sympy.lambdify(N, expr, modules=[{"floor": np.floor, "Mod": np.mod, "Max": np.maximum},
                                          "numpy"])
    lengths = np.arange(1, start + 1, dtype=np.int64)
    values = np.rint(np.asarray(f(lengths.astype(np.float64)), dtype=np.float64)).astype(np.int64)
    bad = np.nonzero(values != counts[:start])[0]
    return int(bad[-1]) + 2 if len(bad) else 1


def _reach(allowed: torch.Tensor) -> int | None:
    """The most keys apart a query and an allowed key are, +1, when that
    stays well below the length (a window or a block); else None."""
    n = allowed.shape[-1]
    flags = allowed.to(torch.uint8)
    rows = allowed.any(dim=-1)
    if not bool(rows.any()):
        return 0
    i = torch.arange(n)[rows]
    first = flags.argmax(dim=-1)[rows]
    last = (n - 1 - flags.flip(-1).argmax(dim=-1))[rows]
    reach = int(torch.maximum(i - first, last - i).max()) + 1
    return reach if reach <= n // 4 else None
