"""The symbols every cost is written in, and the one evaluator of expressions.

Every FLOP count, byte count and peak is a SymPy expression in ``N`` (the
sequence length) and ``B`` (the batch), exact for every N the trace holds
for.  ``value_at`` turns one into an integer; nothing else in attncost
substitutes numbers into an expression.
"""
from __future__ import annotations

import functools
from fractions import Fraction
import math
from typing import Mapping, Union

import sympy
from sympy.printing.pycode import PythonCodePrinter

#: The two symbols every expression is written in.
N = sympy.Symbol("N", positive=True, integer=True)
B = sympy.Symbol("B", positive=True, integer=True)

#: A sum kept as {monomial: coefficient}: the form peak-memory candidates take.
Terms = Mapping[sympy.Expr, sympy.Rational]

_MONOMIALS: dict[sympy.Expr, tuple[int, int] | None] = {}


def _monomial(term: sympy.Expr) -> tuple[int, int] | None:
    """(i, j) when ``term`` is N**i * B**j, else None (cached: terms repeat)."""
    mono = _MONOMIALS.get(term, False)
    if mono is False:
        powers = term.as_powers_dict()
        simple = all(s in (N, B) or s == 1 for s in powers) and \
            all(p.is_Integer and p >= 0 for p in powers.values())
        mono = (int(powers.get(N, 0)), int(powers.get(B, 0))) if simple else None
        _MONOMIALS[term] = mono
    return mono


def value_at(expr: Union[sympy.Expr, int, Terms], seq_len: int, batch: int = 1) -> int:
    """An expression in N and B (or a {term: coefficient} sum) at N=seq_len,
    B=batch, as an exact integer."""
    if isinstance(expr, Mapping):
        total = 0
        for term, coeff in expr.items():
            mono = _monomial(term)
            value = seq_len ** mono[0] * batch ** mono[1] if mono is not None else \
                term.xreplace({N: sympy.Integer(seq_len), B: sympy.Integer(batch)})
            total += coeff * value
        return int(total)
    return evaluate(expr, {N: seq_len, B: batch})


def evaluate(expr, values: Mapping[sympy.Symbol, int]) -> int:
    """Any expression at concrete values of its symbols, as an exact integer."""
    result = sympy.sympify(expr).xreplace({s: sympy.Integer(v) for s, v in values.items()})
    if result.free_symbols:
        missing = ", ".join(sorted(str(s) for s in result.free_symbols))
        raise ValueError(f"{expr} needs values for {missing}")
    return int(result)


@functools.lru_cache(maxsize=4096)
def _parsed(condition) -> sympy.Basic:
    return sympy.sympify(condition, locals={"N": N, "B": B})


class _ExactPrinter(PythonCodePrinter):
    """Python code whose rationals are Fractions (1/9 as a float would floor wrong)."""

    def _print_Rational(self, expr):
        return f"Fraction({expr.p}, {expr.q})"

    def _print_Half(self, expr):
        return self._print_Rational(expr)

    def _print_Mod(self, expr):
        # Python's % binds as * does: 64*Mod(N, 3) must not print as 64*N % 3
        return "(({}) % ({}))".format(*(self._print(a) for a in expr.args))


@functools.lru_cache(maxsize=4096)
def _compiled(condition):
    """The condition as a Python function of N and B, evaluated on exact
    fractions (floor, ceiling and Mod of a Fraction are exact), or None."""
    parsed = _parsed(condition)
    if not isinstance(parsed, sympy.Basic) or not parsed.free_symbols <= {N, B} or \
            parsed.atoms(sympy.Piecewise):
        return None
    try:
        return sympy.lambdify((N, B), parsed, modules=["math", {"Fraction": Fraction, "math": math}],
                              printer=_ExactPrinter)
    except Exception:  # noqa: BLE001 - read the slow way
        return None


def holds_at(condition, seq_len: int, batch: int = 1) -> bool | None:
    """A condition on N and B (a trace's guard: ``Eq(Mod(N, 16), 0)``,
    ``N > 2048``) at N=seq_len, B=batch; None where it does not reduce to
    true or false there."""
    fast = _compiled(condition)
    if fast is not None:
        try:
            result = fast(Fraction(seq_len), Fraction(batch))
        except (TypeError, ValueError, ZeroDivisionError, AttributeError, NameError):
            result = None
        if isinstance(result, bool):
            return result
    try:
        result = _parsed(condition).xreplace({N: sympy.Integer(seq_len), B: sympy.Integer(batch)})
    except ZeroDivisionError:  # a size the condition divides by is zero there: no trace runs
        return False
    if result in (sympy.true, sympy.false):
        return bool(result)
    return None


def length_conditions(guards: list[str]) -> list[str]:
    """A trace's conditions on N other than its range: a residue, an
    equality (``Eq(Mod(N, 16), 0)``: a length padded to blocks), or an
    inequality that is not a bound on N (``2*floor(N/2) >= N``: N even)."""
    return [g for g in guards if ("Mod" in g or "Eq(" in g or "Ne(" in g or _not_a_bound(g))
            and N in sympy.sympify(g, locals={"N": N}).free_symbols]


def _not_a_bound(condition: str) -> bool:
    """An inequality in N alone whose sides differ by more than a line in N."""
    guard = _parsed(condition)
    if not isinstance(guard, sympy.core.relational.Relational) or guard.free_symbols != {N}:
        return False
    side = sympy.expand(guard.lhs - guard.rhs)
    return not (side.is_polynomial(N) and sympy.degree(side, N) <= 1)


def pins_batch(condition: str) -> bool:
    """Does ``condition`` fix B to one value (``Eq(B, 2)``: a tensor built
    from a list as long as the batch), rather than hold at every batch?"""
    guard = _parsed(condition)
    if not isinstance(guard, sympy.Eq) or guard.free_symbols != {B}:
        return False
    # an identity in B (``floor((3*B - 1)/B) == 2``: a split of 2·B rows in
    # pieces of B) holds at every batch: it fixes none
    return not all(holds_at(condition, 1, b) for b in range(1, 65))


def fails_at(condition: str, seq_len: int, batch: int = 1) -> bool:
    """Is ``condition`` false at N=seq_len, B=batch (one that cannot be
    read there asks nothing)?"""
    try:
        return holds_at(condition, seq_len, batch) is False
    except (TypeError, ValueError, ZeroDivisionError, sympy.SympifyError):
        return False


def _residue_text(truth: list[bool], start: int) -> str | None:
    """Which residues of N modulo some m <= 64 make ``truth`` (at N = start,
    start + 1, ...) true, in words; None when it has no such period."""
    for m in range(2, 65):
        if all(truth[i] == truth[i % m] for i in range(len(truth))):
            residues = sorted((start + i) % m for i in range(m) if truth[i])
            if residues == [0]:
                return "N even" if m == 2 else f"N a multiple of {m}"
            if m == 2:
                return "N odd"
            if len(residues) == m - 1 and 0 not in residues:
                return f"N not a multiple of {m}"
            return " or ".join(f"N ≡ {r} (mod {m})" for r in residues)
    return None


#: Conditions shown as written, at most, when they have no period together.
SHOWN_CONDITIONS = 2


def on_multiples(expr: sympy.Expr, m: int) -> sympy.Expr:
    """``expr`` where N is a multiple of ``m`` (a trace's condition): floor
    divisions of N by divisors of m's multiples resolved (N//8 as N/8, N//(N//8)
    as 8), checked at four multiples; ``expr`` itself if it does not simplify."""
    if m <= 1 or not isinstance(expr, sympy.Expr) or N not in expr.free_symbols or \
            not expr.atoms(sympy.Function):
        return expr
    k = sympy.Symbol("k", positive=True, integer=True)
    on_k = _floors_cancelled(expr.xreplace({N: m * k}))  # floor((16k + 16)/(k + 1)) is 16
    simpler = sympy.expand(sympy.expand(on_k).xreplace({k: N / m}))
    if simpler.count_ops() >= expr.count_ops():
        return expr
    points = [(m * j, b) for j in (1, 2, 7, 64) for b in (1, 3)]
    return simpler if _agree(simpler, expr, points) else expr


def _floors_cancelled(expr: sympy.Expr) -> sympy.Expr:
    """Each floor and ceiling with its argument cancelled: one whose
    argument is a number (a padded length over its count of blocks) is it."""
    return expr.replace(lambda e: isinstance(e, (sympy.floor, sympy.ceiling)),
                        lambda e: e.func(sympy.cancel(e.args[0])))


def _mod_as_floor(mod: sympy.Mod) -> sympy.Expr:
    """Mod(a, m) = a - m·floor(a/m) (sympy's Mod is floored: exact for integers)."""
    a, m = mod.args
    return a - m * sympy.floor(a / m)


def _floor_as_ceiling(term: sympy.floor) -> sympy.Expr:
    """floor(k·N/m) with k = q·m + m - 1 as (q + 1)·N - ceiling(N/m): what a
    length padded to a multiple of m leaves (floor(N - N/m) = N - ceiling(N/m))."""
    arg = sympy.expand(term.args[0])
    coeff = arg.coeff(N, 1)
    if not (arg - coeff * N == 0 and coeff.is_Rational and coeff > 0 and coeff.q > 1):
        return term
    k, m = coeff.p, coeff.q
    if k % m != m - 1:
        return term
    return (k // m + 1) * N - sympy.ceiling(N / m)


def padded_tidied(expr: sympy.Expr) -> sympy.Expr:
    """``expr`` with the blocks of a length padded to a multiple said as
    ceiling(N/m): ``floor(N/9 + Mod(8*N, 9)/9)`` (the pad, Mod(-N, 9), over
    the block) is ceiling(N/9); and a floor whose argument cancels to a
    number said as that number (a padded length over its count of blocks:
    ``floor((512*f + 512)/(f + 1))`` is 512).  Exact for every integer N,
    checked at several; ``expr`` itself where it is not simpler."""
    if not isinstance(expr, sympy.Expr) or \
            not expr.atoms(sympy.Mod, sympy.floor, sympy.ceiling):
        return expr
    tidy = expr.replace(lambda x: isinstance(x, sympy.Mod), _mod_as_floor)
    tidy = tidy.replace(lambda x: isinstance(x, sympy.floor), _floor_as_ceiling)
    tidy = sympy.expand(_floors_cancelled(tidy))
    if tidy.count_ops() >= expr.count_ops():
        return expr
    points = [(n, b) for n in (1, 2, 7, 8, 9, 10, 63, 64, 65, 1000, 4097) for b in (1, 3)]
    return tidy if _agree(tidy, expr, points) else expr


def shape_text(dims) -> str:
    """A tensor's sizes as printed: (B, 256*floor(N/256 + Mod(511*N, 512)/256))
    -> 'B×512·ceiling(N/512)'."""
    texts = [str(padded_tidied(sympy.sympify(d))).replace("**", "^").replace("*", "·")
             for d in dims]
    return "×".join(f"({t})" if " " in t else t for t in texts) or "scalar"


def _agree(tidy: sympy.Expr, expr: sympy.Expr, points: list) -> bool:
    """Does ``tidy`` equal ``expr`` at each point where ``expr`` has a value
    (a block size written N//(N//16) has none below 16), at four at least?"""
    compared = 0
    for n, b in points:
        try:
            want = value_at(expr, n, b)
        except (TypeError, ValueError, ZeroDivisionError):
            continue
        try:
            if value_at(tidy, n, b) != want:
                return False
        except (TypeError, ValueError, ZeroDivisionError):
            return False
        compared += 1
    return compared >= 4


def excluded_length(condition) -> int | None:
    """The one length ``condition`` rules out (``Ne(2*N - 1, 31)``: a table
    the code resizes at every length but the one it was built for); None
    for any other condition."""
    guard = _parsed(condition)
    if not isinstance(guard, sympy.Ne) or guard.free_symbols != {N}:
        return None
    side = sympy.expand(guard.lhs - guard.rhs)
    if not side.is_polynomial(N) or sympy.degree(side, N) != 1:
        return None
    root = -side.coeff(N, 0) / side.coeff(N, 1)
    return int(root) if root.is_Integer and root > 0 else None


def _lengths_left_out(conditions: list, start: int, batch: int) -> dict[str, int]:
    """The conditions that rule out one length past the first the others
    allow (condition: that length): said apart, "N ≠ 16", where the lengths
    around it follow a pattern; one at the start says where the run begins."""
    out = {c: n for c in conditions if (n := excluded_length(c)) is not None}
    others = [c for c in conditions if c not in out]
    allowed = lambda n: not any(fails_at(c, n, batch) for c in others)  # noqa: E731
    first = next((n for n in range(start, start + 256) if allowed(n) and n not in out.values()),
                 None)
    return {c: n for c, n in out.items() if first is not None and first < n and allowed(n)}


def residues_allowed(conditions: list, start: int = 1, batch: int = 2) -> list[bool] | None:
    """Whether all ``conditions`` hold at N = start .. start + 255 (a
    condition that cannot be read at some N is left out; None when none can).
    A condition that rules out one length inside the run is left out too
    (``conditions_text`` names that length)."""
    left_out = _lengths_left_out(conditions, start, batch)
    if left_out and len(left_out) == len(conditions) <= 3:
        return [True] * 256  # nothing asked but a few lengths left out
    conditions = [c for c in conditions if c not in left_out]
    span = range(start, start + 256)
    truth, read = [True] * len(span), 0
    for c in conditions:
        try:
            held = [holds_at(c, n, batch) is not False for n in span]
        except (TypeError, ValueError, ZeroDivisionError, sympy.SympifyError):
            continue
        read += 1
        truth = [t and h for t, h in zip(truth, held)]
    return truth if read else None


def multiple_asked(truth: list[bool] | None, start: int) -> int:
    """m when ``truth`` (from residues_allowed) is "N a multiple of m", else 1;
    lengths too short for the trace (a run of False first) are passed over."""
    if truth and any(truth) and not truth[0]:
        skip = truth.index(True)
        truth, start = truth[skip:], start + skip
    text = _residue_text(truth, start) if truth and len(truth) >= 128 and not all(truth) else None
    if text and text.startswith("N a multiple of "):
        return int(text.rsplit(" ", 1)[1])
    return 2 if text == "N even" else 1


def _interval_text(truth: list[bool], start: int) -> str | None:
    """The lengths ``truth`` allows when they are one run: "N >= 5", "N = 128
    only", or "128 <= N <= 191" (with the residue they share, if any)."""
    allowed = [start + i for i, t in enumerate(truth) if t]
    first, last = allowed[0], allowed[-1]
    after = truth[first - start:]
    if all(after):
        return f"N >= {first}"
    # a residue kept to the span's end (its last multiple may fall short of it)
    residue = _residue_text(after, first) if len(after) >= 128 else None
    if residue:
        return f"N >= {first}, {residue}"
    if last == start + len(truth) - 1:  # up to the span's end: from some N on
        return None
    if first == last:
        return f"N = {first} only"
    inside = truth[first - start:last - start + 1]
    residue = _residue_text(inside, first) if not all(inside) else None
    return f"{first} <= N <= {last}" + (f", {residue}" if residue else "")


def conditions_text(conditions: list, start: int = 1, batch: int = 2,
                    truth: list[bool] | None = None) -> str | None:
    """What a trace's conditions on N ask together, in words: the residues
    they allow ("N a multiple of 16") when they have a period of at most
    64 from ``start``; else the first of them as written and how many more.
    None when they ask nothing there."""
    if not conditions:
        return None
    but = ", ".join(f"N ≠ {n}" for n in sorted(set(
        _lengths_left_out(conditions, start, batch).values()))) or None
    truth = truth if truth is not None else residues_allowed(conditions, start, batch)
    if truth is not None and all(truth):
        return but
    text = _residue_text(truth, start) if truth is not None and any(truth) else None
    if text is None and truth is not None and any(truth):
        text = _interval_text(truth, start)
    if text is not None:
        return f"{text}, {but}" if but else text
    shown = [condition_text(c, start) for c in conditions[:SHOWN_CONDITIONS]]
    more = len(conditions) - len(shown)
    return "; ".join(shown) + (f" and {more} more conditions on N" if more > 0 else "")


def condition_text(condition, start: int = 1) -> str:
    """A condition on N in words when it only asks N's residue modulo some
    m <= 64 ("N even", "N a multiple of 16", "N ≡ 3 (mod 8)"), checked on
    four periods from ``start``; else as written."""
    try:
        truth = [holds_at(condition, n) for n in range(start, start + 256)]
    except (TypeError, ValueError, sympy.SympifyError):
        return _as_written(condition)
    if None in truth or all(truth) or not any(truth):
        return _as_written(condition)
    return _residue_text(truth, start) or _as_written(condition)


_RELATIONS = {sympy.Eq: "=", sympy.Ne: "≠"}


def _as_written(condition) -> str:
    """``Ne(N, B)`` as "N ≠ B", ``Eq(a, b)`` as "a = b"; others as sympy
    writes them ("N >= 8")."""
    try:
        guard = _parsed(condition)
    except (TypeError, ValueError, sympy.SympifyError):
        return str(condition)
    relation = _RELATIONS.get(type(guard))
    return f"{guard.lhs} {relation} {guard.rhs}" if relation else str(guard)


def leading_term(expr: sympy.Expr, symbol: sympy.Symbol = N) -> sympy.Expr:
    """The highest-degree term of ``expr`` in ``symbol`` (other symbols kept)."""
    expr = sympy.expand(expr)
    if expr == 0 or symbol not in expr.free_symbols:
        return expr
    try:
        poly = sympy.Poly(expr, symbol)
    except sympy.PolynomialError:  # floor division and the like: no single term leads
        return expr
    deg = poly.degree()
    return sympy.expand(poly.coeff_monomial(symbol**deg) * symbol**deg)


@functools.lru_cache(maxsize=8192)
def degree(expr: sympy.Expr, symbol: sympy.Symbol = N) -> int:
    """Degree in ``symbol``; for a non-polynomial (floor division), the growth
    rate measured between two large values.  Cached: the layers of a model
    repeat the same sizes."""
    expr = sympy.expand(expr)
    if symbol not in expr.free_symbols:
        return 0
    try:
        return int(sympy.Poly(expr, symbol).degree())
    except sympy.PolynomialError:
        other = {s: 1 for s in expr.free_symbols if s != symbol}
        lo = float(expr.xreplace({**other, symbol: 2**20}))
        hi = float(expr.xreplace({**other, symbol: 2**21}))
        return round(math.log2(hi / lo)) if lo > 0 else 0


@functools.lru_cache(maxsize=8192, typed=True)
def simplified(expr) -> sympy.Expr:
    """``sympy.simplify``, remembered: a model's layers ask about the same
    shapes, and simplifying one takes a millisecond."""
    return sympy.simplify(expr)


def as_int(expr) -> int | None:
    """An expression that is a constant, as an int; None if it depends on N or B."""
    expr = simplified(expr)
    return int(expr) if expr.is_Integer else None


#: Lengths every block size up to 16 (and any power of two up to 2**10) divides:
#: where a model that cuts the sequence into blocks runs.
ROUND_LENGTHS = (720720 * 2**10, 720720 * 2**12)


def settled(expr) -> sympy.Expr:
    """A length as the model runs it: ``N//(N//8)`` (a block size that the
    trace wrote through N) is 8, ``(N//8)*(N//(N//8))`` is N, wherever the
    sequence divides into its blocks; other expressions are kept."""
    expr = sympy.sympify(expr)
    if N not in expr.free_symbols or expr.is_polynomial(N):
        return expr
    a, b = (value_at(expr, n) for n in ROUND_LENGTHS)
    if a == b:
        return sympy.Integer(a)
    ratio = sympy.Rational(a, ROUND_LENGTHS[0])
    if ratio == sympy.Rational(b, ROUND_LENGTHS[1]):
        return ratio * N
    return expr
