"""Which variant a site is, and what it needs: the one place that turns a
mask pattern and a site's lengths into a variant, its useful FLOPs and its
complexity class, by the canonical formulas (specs/variants.yaml).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import sympy

from ..expr import B, N, as_int, degree, settled, simplified, value_at
from .formulas import SYMBOLS, formula
from .mask import MaskPattern

#: Computing this many times the needed work is worth saying.
WASTE_FACTOR = 3


@dataclass
class Classification:
    variant: str
    useful_flops: sympy.Expr
    window: int | None
    complexity: str
    #: the canonical formula that the code as written executes
    as_written: str
    #: values of the canonical formula's symbols for this site
    values: dict


def formula_values(heads: int, head_dim: int, head_dim_v: int | None, n_q, n_k,
                   batched: bool = True) -> dict:
    """A site's values of the canonical formulas' symbols.  A site whose
    work has no B (packed sequences, an input with no batch axis) runs once
    whatever the batch: its B is 1."""
    values = {SYMBOLS["B"]: B if batched else 1, SYMBOLS["H"]: heads, SYMBOLS["N"]: n_q,
              SYMBOLS["M"]: n_k, SYMBOLS["d"]: head_dim}
    if head_dim_v is not None:
        values[SYMBOLS["d_v"]] = head_dim_v
    return values


def classify(pattern: MaskPattern, impl: str, values: dict, flops: sympy.Expr) -> Classification:
    """Variant, useful FLOPs, window and complexity class of a site, from its
    mask pattern and its query/key lengths."""
    if pattern.content:
        return _content_based(pattern, impl, values, flops)
    if impl == "cross-covariance":
        f = formula("cross_covariance")
        return Classification("linear", flops, None, f.complexity, "cross_covariance", values)
    n_q, n_k = values[SYMBOLS["N"]], values[SYMBOLS["M"]]
    keys_grow = N in sympy.sympify(n_k).free_symbols
    if impl == "low-rank":
        return _low_rank(values, flops, keys_grow)
    windows = impl in ("unfold", "blocked") and _one_length(n_q, n_k)  # read at one length
    if not keys_grow and (N in sympy.sympify(n_q).free_symbols or windows):
        c = _fixed_keys(impl, values, flops)
        if pattern.kind == "window" and pattern.window:  # read in sequence positions
            c.useful_flops, c.window = _window_useful(pattern, values, flops), pattern.window
        elif pattern.pairs is not None:  # what the blocks and their masks let through
            c.useful_flops = sympy.expand(_per_pair(values, flops) * pattern.pairs)
            c.window = pattern.keys or c.window
        elif c.variant == "local" and pattern.kind in ("full", "causal") and \
                pattern.length is not None and pattern.length < c.window:
            c.useful_flops = _wider_than_traced(pattern, values, flops, c.window)
        elif (windows or pattern.kind == "causal" and pattern.length == as_int(n_k)) and \
                pattern.allowed is not None and pattern.length:
            # one window's mask (read at one length, or a triangle as wide as
            # a block's keys), broadcast over them all
            c.useful_flops = _share_read(pattern, flops)
        return c
    if keys_grow and N not in sympy.sympify(n_q).free_symbols and \
            (pattern.kind == "full" or pattern.same_keys or pattern.pairs is not None):
        # a fixed number of queries over the sequence (learned latents, agent
        # tokens, global tokens, Perceiver AR's last tokens): every pair
        # computed, linear in N; the pairs a mask blocks are not needed (keys
        # a padding mask blocks for every query, a causal mask's offset corner)
        c = _fixed_context(values, flops)
        if pattern.kind != "full" and pattern.pairs is not None:
            # a mask of keys alone (one row) is broadcast over every query
            rows = n_q if pattern.length == 1 else 1
            c.useful_flops = sympy.expand(_per_pair(values, flops) * pattern.pairs * rows)
        return c
    blocks = settled(simplified(sympy.sympify(n_q) / n_k)) if keys_grow else None
    if pattern.kind == "causal" and blocks is not None and blocks.is_Integer and blocks > 1:
        # a causal mask on each of a few groups of queries folded into the
        # batch, its keys as many as one group's queries: each group's
        # triangle, 1/blocks of the causal pairs (the Sparse Transformer's
        # strided pattern, where the groups interleave): sparse, N/blocks
        # keys a query at most
        pairs = blocks * n_k * (n_k + 1) / 2
        values[SYMBOLS["k"]] = n_k
        return Classification("sparse", sympy.expand(_per_pair(values, flops) * pairs), None,
                              formula("sparse").complexity, "dense", values)
    if pattern.kind == "causal" and _one_length(n_q, n_k) and pattern.allowed:
        # traced at one length: the triangle read, broadcast over the scores
        # (blocks of queries under one block's mask: h-transformer's diagonal)
        return Classification("dense", _share_read(pattern, flops), None,
                              formula("causal_dense").complexity, "dense", values)
    if pattern.kind == "causal":
        f = formula("causal_dense")
        return Classification("dense", f.at("useful_flops", values), None, f.complexity,
                              "dense", values)
    if pattern.kind == "window" and pattern.window:
        return Classification("local", _window_useful(pattern, values, flops), pattern.window,
                              formula("local").complexity, "dense", values)
    if pattern.base in ("full", "causal") and simplified(n_k - n_q) == pattern.extra_keys:
        return _extra_keys(pattern, values, flops)
    if pattern.kind == "pattern" and pattern.pairs is not None:
        return _counted(pattern, values, flops)
    if pattern.kind == "pattern" and pattern.density is not None:
        # Measured at one length only: its density times the work, not exact in N.
        variant = "dense" if _all_earlier_keys(pattern) else "sparse"
        return Classification(variant, _share_read(pattern, flops), None,
                              formula("causal_dense" if variant == "dense" else
                                      "sparse").complexity, "dense", values)
    return Classification("dense", flops, None, formula("dense").complexity, "dense", values)


def _share_read(pattern: MaskPattern, flops: sympy.Expr) -> sympy.Expr:
    """The work times the share of pairs the mask read at one length lets
    through (its matrix broadcast over the scores, every entry as often)."""
    return sympy.expand(flops * sympy.Rational(pattern.allowed, pattern.length ** 2))


def _one_length(n_q, n_k) -> bool:
    """Are the site's queries and keys plain numbers (a trace at one length)?"""
    return not (sympy.sympify(n_q).free_symbols | sympy.sympify(n_k).free_symbols)


def _per_pair(values: dict, flops: sympy.Expr) -> sympy.Expr:
    """The work of one (query, key) pair: the site's work over its N_q·N_k pairs."""
    work = sympy.cancel(flops / (values[SYMBOLS["N"]] * values[SYMBOLS["M"]]))
    return work if N not in work.free_symbols else B * settled(sympy.cancel(work / B))


def _window_useful(pattern: MaskPattern, values: dict, flops: sympy.Expr) -> sympy.Expr:
    """A window's useful FLOPs by the canonical local formulas, for every N:
    below the window every query sees all earlier keys (or, symmetric, all keys)."""
    w = pattern.window
    values[SYMBOLS["w"]] = w
    if pattern.symmetric:
        inside = formula("local_symmetric").at("useful_flops", values)
        short = formula("dense").at("useful_flops", {**values, SYMBOLS["M"]: N})
        edge = (w + 1) // 2
    else:
        inside = formula("local").at("useful_flops", values)
        short, edge = formula("causal_dense").at("useful_flops", values), w
    return sympy.Piecewise((short, N <= edge), (inside, True))


def _wider_than_traced(pattern: MaskPattern, values: dict, flops: sympy.Expr,
                       window: int) -> sympy.Expr:
    """A window of ``window`` keys per query that lets every pair (or every
    earlier one) through at the traced length: the window is longer than
    that sequence (Longformer's 512 at N=64, the length padded to it).  Its
    useful work is the window's, centred on each query where the mask lets
    later keys through, not the padded blocks' as computed."""
    wide = MaskPattern("window", causal=pattern.causal, window=window,
                       symmetric=not pattern.causal)
    pattern.notes.append(f"its window ({window:,} keys) is longer than the traced sequence: "
                         "every pair within it is let through there")
    return _window_useful(wide, values, flops)


def _extra_keys(pattern: MaskPattern, values: dict, flops: sympy.Expr) -> Classification:
    """All keys of the sequence, or all earlier ones, and m more that every
    query sees (memory key/values, a null or sink key): dense, the m·N
    extra pairs in the useful work."""
    m, n_q = pattern.extra_keys, values[SYMBOLS["N"]]
    own = formula("causal_dense" if pattern.causal else "dense").at(
        "useful_flops", {**values, SYMBOLS["M"]: n_q})
    pattern.notes = [n for n in pattern.notes if "was measured at" not in n] + [
        f"{m} keys beside the sequence's own that every query sees (memory key/values, a null "
        "or sink key)"]
    return Classification("dense", sympy.expand(own + _per_pair(values, flops) * m * n_q), None,
                          formula("dense").complexity, "dense", values)


def _counted(pattern: MaskPattern, values: dict, flops: sympy.Expr) -> Classification:
    """A pattern whose pairs were counted as a formula in N: local when each
    query reaches a bounded span of keys and the pairs grow as N, else sparse."""
    useful = sympy.expand(_per_pair(values, flops) * pattern.pairs)
    local = pattern.reach is not None and degree(pattern.pairs, N) <= 1
    if pattern.earlier_keys:
        n = pattern.length
        note = _ALL_BUT_ITS_OWN if n and pattern.allowed == n * (n - 1) else _PREFIX
        if note not in pattern.notes:
            pattern.notes.append(note)
    variant = "local" if local else "dense" if _all_earlier_keys(pattern) else "sparse"
    name = "causal_dense" if variant == "dense" else variant
    return Classification(variant, useful, pattern.keys if local else None,
                          formula(name).complexity, "dense", values)


#: The note of a pattern that lets through every pair but a query's own
#: key (locality self-attention's masked diagonal).
_ALL_BUT_ITS_OWN = "each query meets every key but its own (the diagonal masked)"
#: The note of a pattern that lets every earlier key through and more.
_PREFIX = "each query meets every earlier key, and some meet later ones (a prefix seen both ways)"


def _all_earlier_keys(pattern: MaskPattern) -> bool:
    """A pattern that lets through at least every strictly earlier key of
    each query: causal (a causal mask that also hides a query's own key, as
    Reformer's shared query-key attention does), or with later keys as well
    (a prefix seen both ways, a prefix-LM's: GIT's image tokens, PaliGemma's
    prefix): dense, not sparse."""
    n = pattern.length
    return bool(pattern.earlier_keys or pattern.causal and n and pattern.allowed is not None
                and pattern.allowed >= n * (n - 1) // 2)


def _content_based(pattern: MaskPattern, impl: str, values: dict,
                   flops: sympy.Expr) -> Classification:
    """The input's values choose which keys each query meets: sparse, whatever
    its lengths; the useful FLOPs are what the code lets through at most
    (the pattern without the content-chosen part)."""
    static = classify(replace(pattern, content=False), impl, dict(values), flops)
    values[SYMBOLS["k"]] = values[SYMBOLS["M"]]
    return Classification("sparse", static.useful_flops, None, formula("sparse").complexity,
                          "sparse", values)


def _low_rank(values: dict, flops: sympy.Expr, keys_grow: bool) -> Classification:
    """One side of the scores is r summaries of the sequence (keys projected
    or pooled along it, landmarks): linear in N, r per query or per key.
    Where both sides are summaries the work does not grow with N."""
    grows = values[SYMBOLS["M"]] if keys_grow else values[SYMBOLS["N"]]
    r = values[SYMBOLS["N"]] if keys_grow else values[SYMBOLS["M"]]
    values[SYMBOLS["r"]] = as_int(r) or r
    if N not in sympy.sympify(grows).free_symbols:
        return Classification("dense", flops, None, formula("landmarks").complexity,
                              "landmarks", values)
    return Classification("linear", flops, None, formula("low_rank").complexity, "low_rank",
                          values)


def _fixed_keys(impl: str, values: dict, flops: sympy.Expr) -> Classification:
    """Each query meets a fixed number of keys, all of which the code
    computes: a window cut out with unfold, the sequence cut into blocks,
    blocks gathered by index, or a fixed context (cross-attention to a few
    tokens, whose keys do not come from the sequence)."""
    kept = as_int(values[SYMBOLS["M"]])
    if impl in ("unfold", "blocked"):  # a window around each query, or its block
        values[SYMBOLS["w"]] = kept
        return Classification("local", flops, kept, formula("local").complexity, "local", values)
    if impl == "gather":
        values[SYMBOLS["k"]] = kept
        return Classification("sparse", flops, None, formula("sparse").complexity, "sparse", values)
    # a fixed context (an encoder's fixed length, learned tokens): linear in N
    return _fixed_context(values, flops)


def lengths_fitted(site) -> None:
    """A site read in traces at fixed lengths, classified where every size
    was a number, its lengths then fitted in N: a fixed number of queries
    over keys that grow (or the reverse) is a fixed context, as a symbolic
    trace of the same code says."""
    grows = [N in sympy.sympify(x).free_symbols for x in (site.query_len, site.key_len)]
    if site.variant == "dense" and site.formula in ("dense", "causal_dense") and \
            grows.count(True) == 1:
        site.formula, site.complexity = "fixed_context", formula("fixed_context").complexity


def _fixed_context(values: dict, flops: sympy.Expr) -> Classification:
    """Every pair between the sequence and a fixed number of tokens (keys
    or queries) computed and needed: dense, N·M·d."""
    return Classification("dense", flops, None, formula("fixed_context").complexity,
                          "fixed_context", values)


def classify_linear(heads: int, n_q, feature_dim: int, head_dim: int) -> tuple[dict, sympy.Expr]:
    """Kernelized attention: the canonical values and useful FLOPs."""
    values = {SYMBOLS["B"]: B, SYMBOLS["H"]: heads, SYMBOLS["N"]: n_q, SYMBOLS["d"]: head_dim,
              SYMBOLS["r"]: feature_dim}
    return values, formula("linear").at("useful_flops", values)


def matches_formula(flops: sympy.Expr, name: str, values: dict) -> bool:
    """Does the traced count equal the canonical formula of ``name``?"""
    return sympy.expand(formula(name).at("flops", values) - flops) == 0


def waste_factor(flops: sympy.Expr, useful_flops: sympy.Expr, seq_len: int) -> float | None:
    """How many times the work its pattern needs a site computes at N=seq_len,
    when that is at least WASTE_FACTOR; None otherwise."""
    done = value_at(flops, seq_len)
    needed = value_at(useful_flops, seq_len)
    if needed <= 0 or done < WASTE_FACTOR * needed:
        return None
    return done / needed


def subquadratic(sites) -> bool:
    """Does every site need less than N² work (what its pattern lets through)?"""
    return bool(sites) and all(degree(s.useful_flops, N) < 2 for s in sites)
