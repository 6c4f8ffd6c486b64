"""The peak as an expression: live bytes after each op, as sums of terms in
N and B, and the few of them that can be the largest for some N and B.

Every term is a nonnegative monomial, so one candidate bounds another for
all N and B when it has at least the other's coefficient on every term; a
finer test on what is left shifts N = lo + n, B = 1 + b and compares the
coefficients of the difference (it catches N**2 >= N).  What survives is
the envelope: the peak is the Max of its candidates.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import sympy

from ..expr import B, N
from ..paths import layer_or_path
from .model import Allocation, Candidate


def candidates(traced, allocations: list[Allocation]) -> list[Candidate]:
    """Live bytes right after each allocating op, as sums of terms."""
    births: dict[int, list[Allocation]] = {}
    deaths: dict[int, list[Allocation]] = {}
    for a in allocations:
        births.setdefault(a.time, []).append(a)
        if a.death is not None and a.kind != "workspace":
            deaths.setdefault(a.death, []).append(a)
    current: dict[sympy.Expr, sympy.Rational] = {}
    candidates = []
    layer = ""
    for t in sorted(set(births) | set(deaths)):
        for a in deaths.get(t, ()):
            add_terms(current, a.bytes, -1)
        born = births.get(t)
        if not born:
            continue
        snapshot = dict(current)
        for a in born:
            add_terms(snapshot, a.bytes, 1)
            if a.kind != "workspace":
                add_terms(current, a.bytes, 1)
        node = next((a.node for a in born if a.node is not None), None)
        if node is not None:
            layer = layer_or_path(traced.module_path(node))
        candidates.append(Candidate(t, {k: v for k, v in snapshot.items() if v != 0}, layer))
    return candidates


def add_terms(acc: dict, expr: sympy.Expr, sign: int) -> None:
    """Add ``sign`` times ``expr`` to ``acc`` ({term: coefficient})."""
    for term, coeff in _terms(expr):
        acc[term] = acc.get(term, 0) + sign * coeff


@functools.lru_cache(maxsize=16384)
def _terms(expr: sympy.Expr) -> tuple:
    """(term, coefficient) pairs of ``expr`` expanded; integer coefficients
    as Python's, which the envelope compares thousands of times."""
    return tuple((term, int(coeff) if coeff.is_Integer else coeff)
                 for term, coeff in sympy.expand(expr).as_coefficients_dict().items())


def terms_expr(terms: dict) -> sympy.Expr:
    return sympy.Add(*[c * t for t, c in terms.items()]) if terms else sympy.Integer(0)


def max_expr(term_dicts: list[dict]) -> sympy.Expr:
    exprs = [terms_expr(t) for t in term_dicts]
    if not exprs:
        return sympy.Integer(0)
    if len(exprs) == 1:
        return exprs[0]
    return sympy.Max(*exprs, evaluate=False)


def _dominates(a: dict, b: dict) -> bool:
    """a >= b for every N and B: every term is nonnegative, so it is enough
    that a has at least b's coefficient on each term."""
    return all(a.get(k, 0) >= v for k, v in b.items()) and \
        all(v >= 0 for k, v in a.items() if k not in b)


def prune(candidates: list[Candidate], lo: int = 1) -> list[Candidate]:
    """Drop candidates that another one bounds for all N >= lo and B >= 1."""
    front: list[Candidate] = []
    for c in candidates:
        if any(_dominates(f.terms, c.terms) for f in front):
            continue
        front = [f for f in front if not _dominates(c.terms, f.terms)]
        front.append(c)
    # A finer test on what is left: shift N = lo + n, B = 1 + b and compare
    # coefficients of the difference (it catches N**2 >= N).
    polys = [_as_poly(c.terms) for c in front]
    dropped = set()
    for i in range(len(front)):
        for j in range(len(front)):
            if j == i or j in dropped or polys[i] is None or polys[j] is None:
                continue
            if _shifted_nonnegative(polys[j], polys[i], lo):
                if j > i and _shifted_nonnegative(polys[i], polys[j], lo):
                    continue  # equal: keep the earlier one
                dropped.add(i)
                break
    return [c for i, c in enumerate(front) if i not in dropped]


def _as_poly(terms: dict) -> dict[tuple[int, int], sympy.Rational] | None:
    """{(i, j): c} for c·N**i·B**j, or None if a term is not such a monomial."""
    out: dict[tuple[int, int], Any] = {}
    for term, coeff in terms.items():
        powers = term.as_powers_dict()
        if any(s not in (N, B) for s in powers if s != 1) or \
                any(not (p.is_Integer and p >= 0) for s, p in powers.items() if s != 1):
            return None
        key = (int(powers.get(N, 0)), int(powers.get(B, 0)))
        out[key] = out.get(key, 0) + coeff
    return out


def _shifted_nonnegative(a: dict, b: dict, lo: int) -> bool:
    """Is a - b >= 0 for all N >= lo, B >= 1?  (Sufficient test: every
    coefficient of a - b in n = N - lo, b = B - 1 is nonnegative.)"""
    diff: dict[tuple[int, int], Any] = {}
    for sign, poly in ((1, a), (-1, b)):
        for (i, j), c in poly.items():
            for p in range(i + 1):
                cn = math.comb(i, p) * lo ** (i - p)
                for q in range(j + 1):
                    key = (p, q)
                    diff[key] = diff.get(key, 0) + sign * c * cn * math.comb(j, q)
    return all(v >= 0 for v in diff.values())
