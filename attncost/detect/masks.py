"""Read an attention mask off the graph by evaluating it on concrete data.

A mask is whatever the model computes to block scores: ``tril`` of ones, a
comparison of position ranges, a band, a random pattern passed in as data.
Rather than recognise each way of writing it, attncost runs the part of the
graph that builds the mask at a small concrete length and hands the result
to patterns.mask, which names it.
"""
from __future__ import annotations

import copy
import functools

import sympy
import torch
import torch.fx as fx

from ..expr import N, fails_at, length_conditions, shape_text, value_at
from ..patterns.mask import MaskPattern, allowed_pairs, classify_allowed
from ..patterns.measure import fit_pairs, is_prefix_stable
from ..rules.ops import MATMUL_OPS, packet
from .evaluate import CannotEvaluate, evaluate_node, evaluation_batch, zeros_at

#: Longest length at which a mask is evaluated (its N×N entries are built):
#: a window longer than this looks causal.
PROBE_CAP = 8192
#: Shortest probe: long enough that windows and blocks repeat in it.
PROBE_MIN = 1024


def probe_lengths(ctx) -> tuple[int, int]:
    """The length a mask is read at, and a shorter one to check that the
    mask at a length is the top-left block of the mask at a longer one."""
    lo, hi = ctx.traced.n_range
    n = min(max(ctx.seq_len, PROBE_MIN), PROBE_CAP)
    n = max(n, lo, 2)
    if hi is not None:
        n = min(n, hi)
    n = _where_the_trace_holds(ctx, n, lo) or n
    return n, _where_the_trace_holds(ctx, max(n // 2, lo, 1), lo) or max(n // 2, lo, 1)


def _where_the_trace_holds(ctx, n: int, lo: int) -> int | None:
    """The longest length from ``n`` down to ``lo`` where the trace's
    conditions on N hold (a length padded to blocks: ``Eq(Mod(N, 16), 0)``
    inside a range that allows 128..135), None if none does."""
    conditions, batch = length_conditions(ctx.traced.guards), evaluation_batch(ctx.traced)
    for m in range(n, max(lo, 1) - 1, -1):
        if not any(fails_at(c, m, batch) for c in conditions):
            return m
    return None


def _first(allowed: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The first (queries × keys) matrix, and whether all the others equal it."""
    lead = allowed.reshape(-1, *allowed.shape[-2:])
    return lead[0], all(torch.equal(lead[0], m) for m in lead[1:])


def read_pattern(allowed_at, seq_len: int) -> MaskPattern:
    """Name what ``allowed_at(n)`` (a boolean matrix, or raises
    CannotEvaluate) lets through, and count its pairs as a function of N."""
    n, shorter = allowed_at.lengths
    try:
        big = allowed_at(n)
    except CannotEvaluate as why:
        return MaskPattern("unknown", notes=[f"mask not evaluated: {why}"])
    if big is None:
        return MaskPattern("unknown")
    if big.dim() < 2:
        return MaskPattern.full()
    first, same = _first(big)
    pattern = classify_allowed(first)
    if not same:
        pattern.notes.append("the mask differs across batch or heads; the first is shown")
    if pattern.kind == "pattern":
        _count_pairs(pattern, first, allowed_at, (n, shorter), seq_len)
    return pattern


def _count_pairs(pattern: MaskPattern, first: torch.Tensor, allowed_at, lengths: tuple[int, int],
                 seq_len: int) -> None:
    """Give a measured pattern its pair count as an exact formula in N, or
    say that its density was measured at one length.  ``lengths``: the
    length ``first`` was read at (its keys may be fewer: a fixed number of
    them), and a shorter one."""
    n, shorter = lengths
    if getattr(allowed_at, "one_length", False):  # a trace that holds at one length:
        # its pairs there, a number (a range that starts at the probe is
        # read at one length too, and still counted as a formula in N)
        pattern.pairs = sympy.Integer(int(torch.count_nonzero(first)))
        pattern.density = int(pattern.pairs) / first.numel()
        return
    try:
        short = _first(allowed_at(shorter))[0]
        stable = is_prefix_stable(first, short)
        side = _side(((n, first.shape[-2]), (shorter, short.shape[-2])))
    except CannotEvaluate:
        stable, side = False, N
    count = fit_pairs(first) if stable else None
    if count is None:
        pattern.pairs = None if stable else _counted_at_lengths(allowed_at, n)
        if pattern.pairs is None:
            pattern.notes.append(f"its density ({pattern.density:.2%}) was measured at "
                                 f"N={pattern.length}; it is not a formula in N")
        elif seq_len < n // 4 and not _counts_at(allowed_at, pattern.pairs, seq_len):
            pattern.notes.append(f"its pairs were counted at N={n // 4:,}..{n:,}; at "
                                 f"N={seq_len} the formula is an estimate")
    else:  # fitted in the matrix's side: put back in N
        pattern.pairs = sympy.expand(count.expr.subs(N, side))
        pattern.pairs_from = _first_length(side, count.valid_from)
        pattern.reach, pattern.keys = count.reach, count.keys
        if seq_len < pattern.pairs_from:
            pattern.notes.append(f"its pair count is exact for N >= {pattern.pairs_from}; at "
                                 f"N={seq_len} the formula is an estimate")
    if pattern.pairs is not None:  # the density at the length asked about
        pattern.density = value_at(pattern.pairs, seq_len) / value_at(side, seq_len) ** 2


def _side(read: tuple[tuple[int, int], ...]) -> sympy.Expr:
    """The side of a mask's matrix as a function of N, from (length, side)
    read at two lengths: N, or N + c where c tokens come before the
    sequence (a prefix of learned or image tokens), or a·N + c."""
    (n, side), (m, short) = read
    if n == m or (side, short) == (n, m) or side <= short:
        return N
    a = sympy.Rational(side - short, n - m)
    return a * N + (side - a * n)


def _first_length(side: sympy.Expr, valid_side: int) -> int:
    """The first N whose matrix is at least ``valid_side`` on a side."""
    a, c = side.as_coefficients_dict()[N], side.subs(N, 0)
    return max(1, int(sympy.ceiling((valid_side - c) / a)))


def _counts_at(allowed_at, pairs: sympy.Expr, n: int) -> bool:
    """Does the formula give the pairs counted at ``n`` (the length asked
    about, below the lengths it was fitted at)?"""
    try:
        return int(torch.count_nonzero(_first(allowed_at(n))[0])) == value_at(pairs, n)
    except CannotEvaluate:
        return False


def _counted_at_lengths(allowed_at, n: int):
    """The pairs of a pattern that is not the same at every length (which
    keys a top-k picks among ties moves with N; how many it picks does not),
    counted at n/4, n/2 and 3n/4, as a polynomial of degree at most 2 that
    must give the count at n; None where it does not, or a length cannot
    be read."""
    lengths = [n // 4, n // 2, 3 * n // 4]
    try:
        counts = [int(torch.count_nonzero(_first(allowed_at(m))[0])) for m in lengths]
        whole = int(torch.count_nonzero(_first(allowed_at(n))[0]))
    except CannotEvaluate:
        return None
    poly = sympy.expand(sympy.interpolate(list(zip(lengths, counts)), N))
    return poly if n % 4 == 0 and value_at(poly * 1, n) == whole else None


class _MaskReader:
    """The allowed pairs of one or more masks applied to one score matrix,
    evaluated at any length (cached: layers share their masks)."""

    def __init__(self, ctx, masks: list[tuple[fx.Node, str]]):
        self.ctx, self.masks = ctx, masks
        self.lengths = probe_lengths(ctx)
        lo, hi = ctx.traced.n_range
        self.one_length = lo == hi

    def __call__(self, n: int) -> torch.Tensor | None:
        allowed, everything = None, None
        for mask, polarity in self.masks:
            value = _evaluated(self.ctx, mask, n, decay_free=polarity == "scale")
            if value is None:
                return None
            value = _queries_by_keys(torch.as_tensor(value), mask, self.ctx.mask_layouts)
            value, one = _allowed(value, polarity)
            if bool(one.all()):  # a bias (weights read as zeros) blocks nothing
                everything = value
                continue
            allowed = value if allowed is None else allowed & value
        allowed = allowed if allowed is not None else everything
        if allowed is not None and allowed.dim() >= 2 and allowed.shape[-2] == 1 \
                and allowed.shape[-1] == n:
            # a mask of keys only (padding) applies to every query
            allowed = allowed.expand(*allowed.shape[:-2], n, n)
        return allowed


def block_allowed(ctx, masks: list[tuple[fx.Node, str]], n: int, rows: int,
                  cols: int) -> torch.Tensor:
    """The (rows × cols) pairs one block of scores lets through at length n:
    all, without masks; raises CannotEvaluate where its masks cannot say."""
    if not masks:
        return torch.ones(rows, cols, dtype=torch.bool)
    allowed = _MaskReader(ctx, masks)(n)
    if allowed is None or allowed.dim() < 2:
        raise CannotEvaluate("a block's mask has no value")
    first, _ = _first(allowed)
    if tuple(first.shape) != (rows, cols):
        raise CannotEvaluate("a block's mask does not line up with its scores")
    return first


def _queries_by_keys(value: torch.Tensor, mask: fx.Node, layouts: dict) -> torch.Tensor:
    """A mask's value with its (queries × keys) matrix last: moved there where
    the scores it meets lay them out elsewhere (sequence first: (q, k, b, h)),
    else its trailing axes of size 1 dropped."""
    if mask not in layouts:
        return _without_singleton_tail(value, _singleton_tail(mask))
    rank, q_axis, k_axis = layouts[mask]
    if value.dim() > rank:
        return _without_singleton_tail(value, _singleton_tail(mask))
    value = value.reshape((1,) * (rank - value.dim()) + tuple(value.shape))
    return value.movedim((q_axis, k_axis), (-2, -1))


def _singleton_tail(mask: fx.Node) -> int:
    """Trailing axes of size 1 in every tensor the mask is applied to (an
    einsum lays its scores out as (b, h, q, k, 1)): they are not the keys."""
    tails = []
    for user in mask.users:
        val = user.meta.get("val")
        if not isinstance(val, torch.Tensor) or val.dim() < 3:
            return 0
        shape, k = list(val.shape), 0
        while len(shape) - k > 2 and shape[-1 - k] == 1:
            k += 1
        tails.append(k)
    return min(tails, default=0)


def _without_singleton_tail(value: torch.Tensor, tail: int) -> torch.Tensor:
    """``value`` without its last ``tail`` axes, where they are of size 1."""
    while tail and value.dim() > 2 and value.shape[-1] == 1:
        value, tail = value.squeeze(-1), tail - 1
    return value


def _allowed(value: torch.Tensor, polarity: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``allowed_pairs`` of a mask, and one (queries × keys) matrix of it that
    has all its values.  A mask whose batch and head matrices are copies of
    one (a batch of two) is read on the first only, the rest broadcast:
    the same pairs for half the work on N×N entries."""
    if value.dim() > 2:
        lead = value.reshape(-1, *value.shape[-2:])
        if len(lead) > 1 and all(torch.equal(lead[0], m) for m in lead[1:]):
            one = allowed_pairs(lead[:1], polarity)
            return one[0].expand(value.shape), one
    allowed = allowed_pairs(value, polarity)
    return allowed, allowed


#: Exponentials whose value is never an exact zero, whatever the input.
_DECAYS = frozenset(getattr(torch.ops.aten, n) for n in ("exp", "exp2")
                    if hasattr(torch.ops.aten, n))


def _evaluated(ctx, mask: fx.Node, n: int, decay_free: bool = False):
    """A mask's value at length n.  ``decay_free``: a factor multiplied into
    the scores whose decay is computed from the input (exp of a gate's
    cumulative sum) is read with those exponentials as 1: the input weighs
    the pairs; only the structure (a tril) blocks them, not an exponential
    that underflows at the weights read as zeros."""
    cache = ctx.mask_values
    key = (mask, n) if not decay_free else (mask, n, "decay_free")
    if key not in cache:
        try:
            given = {**(_decays_as_one(ctx, mask, n) if decay_free else {}),
                     **_ties_broken(ctx, mask, n)}
            cache[key] = evaluate_node(ctx, mask, n, given or None)
        except CannotEvaluate as why:
            cache[key] = why
    value = cache[key]
    if isinstance(value, CannotEvaluate):
        raise value
    return value


def _ancestors(mask: fx.Node, stop=lambda node: False):
    """The ops ``mask`` is computed from, each once, not past those ``stop``
    says (they are yielded, their inputs not)."""
    seen, stack = set(), [mask]
    while stack:
        node = stack.pop()
        if not isinstance(node, fx.Node) or node in seen or node.op != "call_function":
            continue
        seen.add(node)
        yield node
        if not stop(node):
            stack.extend(node.all_input_nodes)


def _ties_broken(ctx, mask: fx.Node, n: int) -> dict:
    """For a mask that keeps the scores at or above their k-th largest (a
    top-k compared by value: x-transformers' sparse top-k), the products
    those scores come from, given as distinct values: with the weights read
    as zeros every score ties and every pair would be kept, where k are."""
    given = {}
    for node in _ancestors(mask):
        if packet(node) is torch.ops.aten.topk:
            for product in _products_behind(ctx, node.args[0]):
                shape = zeros_at(ctx, product, n).shape
                given[product] = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    return given


def _products_behind(ctx, scores: fx.Node, limit: int = 64) -> list[fx.Node]:
    """The products of two activations (Q·Kᵀ) that ``scores`` are computed
    from, the nearest on each path back; none behind a product with a
    weight (a router's logits: its experts' choice is no threshold on the
    scores)."""
    found, seen, stack = [], set(), [scores]
    while stack and len(seen) < limit:
        node = stack.pop()
        if not isinstance(node, fx.Node) or node in seen or node not in ctx.activations:
            continue
        seen.add(node)
        if packet(node) in MATMUL_OPS:
            if not any(ctx.is_weight(o) for o in ctx.product_operands(node)):
                found.append(node)
            continue
        stack.extend(node.all_input_nodes)
    return found


def _decays_as_one(ctx, mask: fx.Node, n: int) -> dict:
    """The exponentials computed from the input on the way to ``mask``, each
    given as ones of its shape."""
    def decay(node: fx.Node) -> bool:
        return getattr(node.target, "overloadpacket", None) in _DECAYS and \
            node in ctx.activations

    return {node: torch.ones_like(torch.as_tensor(evaluate_node(ctx, node, n)))
            for node in _ancestors(mask, stop=decay) if decay(node)}


def _group_heads(head_of, heads: int, n: int) -> list[list[int]] | None:
    """Heads whose (queries × keys) matrices at length n are equal, grouped;
    None when all heads let the same pairs through."""
    reps: list[torch.Tensor] = []
    groups: list[list[int]] = []
    for h in range(heads):
        matrix = head_of(h, n)
        at = next((g for g, rep in enumerate(reps) if torch.equal(rep, matrix)), None)
        if at is None:
            reps.append(matrix)
            groups.append([h])
        else:
            groups[at].append(h)
    return groups if len(groups) > 1 else None


def read_by_head(head_of, heads: int, lengths: tuple[int, int],
                 seq_len: int) -> MaskPattern | None:
    """The pattern of each group of heads that lets the same pairs through
    (``head_of(h, n)``: head h's matrix at length n), the first group's as
    the pattern and every group's in its ``head_groups``; None when the
    heads do not differ (or cannot be told apart)."""
    if heads <= 1:
        return None
    try:
        groups = _group_heads(head_of, heads, lengths[0])
    except CannotEvaluate:
        return None
    if groups is None:
        return None
    parts = []
    for group in groups:
        at = functools.partial(head_of, group[0])
        at.lengths = lengths
        parts.append((group, read_pattern(at, seq_len)))
    pattern = copy.deepcopy(parts[0][1])
    pattern.head_groups = parts
    return pattern


def _has_head_axis(mask: fx.Node, heads: int) -> bool:
    """Is the mask laid out with an axis of the heads before its (queries ×
    keys) matrix?  (Most masks broadcast one matrix over every head.)"""
    val = mask.meta.get("val") if isinstance(mask, fx.Node) else None
    return isinstance(val, torch.Tensor) and val.dim() >= 3 and val.shape[-3] == heads


def _tensor_head_of(reader: "_MaskReader", heads: int):
    """Head h's matrix of the masks ``reader`` combines, when their
    next-to-last-but-one axis is the heads and every batch has the same."""
    def head_of(h: int, n: int) -> torch.Tensor:
        allowed = reader(n)
        if allowed is None or allowed.dim() < 3 or allowed.shape[-3] != heads:
            raise CannotEvaluate("the masks have no head axis")
        per = allowed.reshape(-1, heads, *allowed.shape[-2:])
        if any(not torch.equal(per[0], other) for other in per[1:]):
            raise CannotEvaluate("the masks differ across the batch")
        return per[0, h]
    return head_of


def pattern_of(ctx, masks: list[tuple[fx.Node, str]], heads: int = 1) -> MaskPattern:
    """The pattern of the masks applied to one score matrix, each with its
    polarity: allowed (True lets through), blocked (True blocks),
    masked_fill (as the mask of masked_fill), additive (a float added to
    the scores).  Layers that share their masks (every layer of a model
    reads the same causal or sliding-window mask) are read once: the
    pattern is kept in ``ctx.mask_values`` and each site gets its own copy."""
    key = ("pattern", tuple(masks), ctx.seq_len, heads)
    if key not in ctx.mask_values:
        reader = _MaskReader(ctx, masks)
        by_head = heads > 1 and any(_has_head_axis(m, heads) for m, _ in masks)
        pattern = (by_head and read_by_head(_tensor_head_of(reader, heads), heads,
                                            reader.lengths, ctx.seq_len)) or \
            read_pattern(reader, ctx.seq_len)
        additive = [m for m, p in masks if p == "additive"]
        if additive and pattern.kind == "full" and _is_float(additive[0]):
            shape = ctx.traced.shape(additive[0])
            pattern.notes.append(f"an additive bias ({shape_text(shape)}) is applied to the "
                                 "scores" if shape else "an additive bias is applied to the scores")
        ctx.mask_values[key] = pattern
    return copy.deepcopy(ctx.mask_values[key])


#: Lengths a blocked site's mask is counted at: multiples of every block up to 1024.
COUNT_LENGTHS = (1024, 2048, 3072, 4096)


def counted_pairs(ctx, masks: list[tuple[fx.Node, str]], scores_shape, heads: int):
    """Allowed (query, key) pairs per head of a site whose scores, of
    ``scores_shape`` (sizes in N and B), are laid out in blocks or windows
    (not N×N), as a polynomial in N: the mask, broadcast to the scores,
    counted at several lengths; None if it does not fit a polynomial of
    degree <= 2 or cannot be evaluated."""
    reader = _MaskReader(ctx, masks)

    def count_at(n: int):
        shape = [value_at(d, n, 2) for d in scores_shape]
        allowed = reader(n)
        if allowed is None:
            raise CannotEvaluate("a mask has no value")
        return sympy.Rational(_count_as(allowed, shape), 2 * heads)

    return polynomial_count(ctx, count_at)


def windowed_pattern(ctx, pattern: MaskPattern, masks: list[tuple[fx.Node, str]], scores_shape,
                     heads: int, n_q, n_keys) -> MaskPattern:
    """``pattern`` of a site whose queries each meet a fixed number of keys
    (windows, blocks), with the pairs its masks let through counted, and
    their density over the pairs computed."""
    if masks and (pattern.pairs is None or _fewer_than_queries(pattern.pairs, n_q)
                  or N in sympy.sympify(n_keys).free_symbols):
        # a count read on the first window's matrix alone (a mask of keys per
        # block, different at the edges) holds for that window, not the site
        pattern.pairs = counted_pairs(ctx, masks, scores_shape, heads)
    if pattern.pairs is not None:
        pattern.notes = []
        queries = value_at(n_q, ctx.seq_len)
        keys = value_at(n_keys, ctx.seq_len)
        pattern.density = float(value_at(pattern.pairs, ctx.seq_len) / (queries * keys))
        if pattern.kind == "full" and pattern.density < 1:  # the first block is not all
            pattern.kind = "pattern"
    return pattern


def _fewer_than_queries(pairs, n_q) -> bool:
    """Does a count of pairs stay fixed while the queries grow with N (each
    query weighs at least one key)?"""
    return N not in sympy.sympify(pairs).free_symbols and N in sympy.sympify(n_q).free_symbols


def polynomial_count(ctx, count_at):
    """``count_at(n)`` (pairs at length n, or raises CannotEvaluate) as a
    polynomial in N: fitted at three lengths of COUNT_LENGTHS, checked at the
    fourth; None if it does not fit or cannot be evaluated there."""
    lo, hi = ctx.traced.n_range
    lengths = [n for n in COUNT_LENGTHS if n >= lo and (hi is None or n <= hi)]
    if len(lengths) < 4:
        return None
    try:
        counts = [count_at(n) for n in lengths]
    except CannotEvaluate:
        return None
    poly = sympy.interpolate(list(zip(lengths[:3], counts[:3])), N)
    return sympy.expand(poly) if value_at(poly * 1, lengths[3]) == counts[3] else None


def _count_as(allowed: torch.Tensor, shape: list[int]) -> int:
    """Allowed entries of a mask broadcast to the scores' shape, or to a view
    of them with the batch, window and head axes split differently (a mask
    added where the scores are (B, windows, H, w, w)): broadcasting repeats
    every entry of the mask equally often."""
    total = int(torch.Size(shape).numel())
    if total % max(allowed.numel(), 1):
        raise CannotEvaluate("the mask does not line up with the scores")
    return int(torch.count_nonzero(allowed)) * (total // allowed.numel())


def _is_float(node: fx.Node) -> bool:
    val = node.meta.get("val")
    return isinstance(val, torch.Tensor) and val.is_floating_point()


def pattern_of_mask_mod(ctx, mask_mod, heads: int = 1) -> MaskPattern:
    """The pattern of a FlexAttention mask_mod (a graph of (b, h, q_idx, kv_idx)),
    evaluated on the grid of positions at a small length, head by head."""
    if mask_mod is None:
        return MaskPattern.full()
    fn = mask_mod
    if isinstance(mask_mod, fx.Node) and mask_mod.op == "get_attr":
        fn = getattr(ctx.traced.graph_module, mask_mod.target)

    def head_of(h: int, n: int) -> torch.Tensor:
        q, kv = torch.arange(n).view(n, 1), torch.arange(n).view(1, n)
        zero, head = torch.zeros((), dtype=torch.long), torch.tensor(h, dtype=torch.long)
        try:
            with torch.no_grad():
                out = fn(zero, head, q, kv)
        except Exception as exc:
            raise CannotEvaluate(f"mask_mod raised {type(exc).__name__}") from None
        out = out[0] if isinstance(out, (tuple, list)) else out
        return torch.as_tensor(out).to(torch.bool).expand(n, n).contiguous()

    lengths = probe_lengths(ctx)
    allowed_at = functools.partial(head_of, 0)
    allowed_at.lengths = lengths
    return read_by_head(head_of, heads, lengths, ctx.seq_len) or \
        read_pattern(allowed_at, ctx.seq_len)
