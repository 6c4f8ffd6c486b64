"""Which sequence positions a site's scores pair, read by running the site on
positions.

Code that cuts the sequence into windows or blocks (unfold, a reshape into
blocks, padding and concatenating neighbours) computes scores whose rows
and columns are not sequence positions.  To know which (query, key) pairs
it lets through, the query and key operands are recomputed with their
source tensors replaced by position codes (position j + 1 along the
sequence axis), and the softmax is evaluated as the model computes it
(weights read as zeros, so the scores are equal and only masks decide):
each allowed entry pairs the query position of its row with the key
position of its column.  The result is an N×N boolean matrix in sequence
coordinates, named and counted like any mask (patterns/).
"""
from __future__ import annotations

import sympy
import torch
import torch.fx as fx

from ..expr import B, N, settled, simplified, value_at
from ..patterns.mask import NEGLIGIBLE_WEIGHT
from ..rules.ops import COPY_OPS, getitem, is_view, packet
from .evaluate import CannotEvaluate, evaluate_node, ones_at, zeros_at
from .graph import is_product
from .masks import polynomial_count, read_pattern

aten = torch.ops.aten

#: Ops that move, copy or transform values at each position without mixing
#: positions (rotary embeddings are muls and adds with position tables; a
#: roll or flip permutes the positions, and the codes travel with them).
_PER_POSITION = frozenset({aten.constant_pad_nd, aten.cat, aten.slice, aten.expand,
                           aten.repeat, aten.mul, aten.div, aten.add, aten.sub, aten.neg,
                           aten.roll, aten.flip}) | COPY_OPS


def _sequence_axes(shape) -> list[int]:
    """Axes of length N (not B·N: the batch folded into the positions)."""
    return [i for i, d in enumerate(shape or ()) if B not in sympy.sympify(d).free_symbols
            and simplified(settled(d) - N) == 0]


def sequence_source(ctx, node: fx.Node, limit: int = 32) -> tuple[fx.Node, int] | None:
    """The farthest tensor, walking back through per-position ops along the
    activation, with one axis of length N, and that axis."""
    found = None
    for _ in range(limit):
        if not isinstance(node, fx.Node) or node.op != "call_function":
            break
        shape = ctx.traced.shape(node)
        axes = _sequence_axes(shape)
        if len(axes) == 1:
            found = (node, axes[0])
        if not (is_view(node) or packet(node) in _PER_POSITION or node.target is getitem):
            break
        inputs = list(node.args[0]) if packet(node) is aten.cat else node.all_input_nodes
        node = next((a for a in inputs if _carries_activations(ctx, a)), None)
    return found


#: Ops that reorder the positions of a sequence without mixing them.
_PERMUTATIONS = frozenset({aten.roll, aten.flip})
#: Ops after which each position holds what it held before, transformed (norms, activations).
_PER_TOKEN = frozenset({aten.native_layer_norm, aten.layer_norm, aten.gelu, aten.silu,
                        aten.relu, aten._to_copy}) | _PER_POSITION


def upstream_order(ctx, source: fx.Node, n: int, limit: int = 48) -> torch.Tensor | None:
    """Which sequence position each position of ``source`` holds at N=n: the
    rolls and flips on the way from the sequence to it, walking back through
    per-token work (projections, norms, activations) that codes cannot pass;
    None when there are none (each position is its own)."""
    moves, node = [], source
    for _ in range(limit):
        if not isinstance(node, fx.Node) or node.op != "call_function":
            break
        if packet(node) in _PERMUTATIONS:
            moves.append(node)
        if is_product(node):
            node = next((a for a in ctx.product_operands(node) if not ctx.is_weight(a)), None)
            continue
        if not (is_view(node) or packet(node) in _PER_TOKEN or node.target is getitem):
            break
        inputs = list(node.args[0]) if packet(node) is aten.cat else node.all_input_nodes
        node = next((a for a in inputs if _carries_activations(ctx, a)), None)
    if not moves:
        return None
    order = torch.arange(n)
    for move in reversed(moves):
        order = _moved(ctx, move, order, n)
    return order


def _moved(ctx, move: fx.Node, order: torch.Tensor, n: int) -> torch.Tensor:
    """``order`` after a roll or flip of the sequence axis (other axes are left alone)."""
    shape = ctx.traced.shape(move.args[0]) or ()
    axes = _sequence_axes(shape)
    if len(axes) != 1:
        raise CannotEvaluate("a roll or flip whose sequence axis is not known")
    axis = axes[0]
    if packet(move) is aten.flip:
        dims = [d % len(shape) for d in move.args[1]]
        return order.flip(0) if axis in dims else order
    shifts, dims = list(move.args[1]), list(move.args[2]) if len(move.args) > 2 else []
    if not dims:
        raise CannotEvaluate("a roll of the flattened tensor")
    for shift, dim in zip(shifts, dims):
        if dim % len(shape) == axis:
            if not isinstance(shift, int):
                shift = value_at(ctx.traced.expr(shift.meta["val"] if isinstance(shift, fx.Node)
                                                 else shift), n, 2)
            order = torch.roll(order, int(shift))
    return order


def _carries_activations(ctx, node) -> bool:
    """Does this value depend on the model's floating inputs through tensors
    (not only through sizes, as position tables do)?"""
    if not isinstance(node, fx.Node):
        return False
    seen, stack = set(), [node]
    while stack:
        n = stack.pop()
        val = n.meta.get("val")
        if n in seen or not (isinstance(val, torch.Tensor) or (
                isinstance(val, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in val))):
            continue
        seen.add(n)
        if n.op == "placeholder":
            if ctx.traced.placeholder_kinds.get(n.name) == "input" and \
                    n.meta["val"].is_floating_point():
                return True
            if ctx.traced.placeholder_kinds.get(n.name) == "parameter":
                return True  # embeddings of token ids: activations too
            continue
        stack.extend(n.all_input_nodes)
    return False


def _codes(ctx, source: fx.Node, axis: int, n: int) -> torch.Tensor:
    """Position + 1 in every entry at that position, in a tensor of the
    source's shape at N=n: per-position rotations and scalings keep the norm
    of each position's vector proportional to it."""
    val = source.meta["val"]
    shape = [value_at(ctx.traced.expr(d), n, 2) for d in val.shape]
    codes = torch.arange(1, shape[axis] + 1, dtype=torch.float32)
    view = [1] * len(shape)
    view[axis] = shape[axis]
    return codes.view(view).expand(shape).contiguous().to(val.dtype)


def _decoded(norms: torch.Tensor) -> torch.Tensor:
    """Positions + 1 from per-position norms (the smallest nonzero is position 1)."""
    positive = norms[norms > 1e-6]
    if not len(positive):
        return torch.zeros_like(norms)
    return norms / positive.min()


def site_weights(ctx, weights: fx.Node, n: int, qk: fx.Node | None = None):
    """What a site applies to V at length n, with every score 0 (what the
    weights make of Q·Kᵀ, ``qk``, where it is known; else zero weights make
    it so), so that only masks decide: the softmax, or where a function
    weighs the scores in its place (``relu(S)**2``, whose masks may come
    after it), the weights that reach ·V with that function read as exp:
    1 where a pair passes, 0 where a mask blocked it, before or after.
    Given as zeros, the scores need none of the layers before them."""
    unweighed = ctx.unweighed.get(weights)
    if unweighed is not None:  # scores of 1 pass through the decay or mask as they are
        return evaluate_node(ctx, weights, n, {unweighed: ones_at(ctx, unweighed, n)})
    given = {qk: zeros_at(ctx, qk, n)} if qk is not None else {}
    anchor = ctx.weighed_by.get(weights)
    if anchor is None:
        return evaluate_node(ctx, weights, n, given)
    scores = torch.as_tensor(evaluate_node(ctx, anchor.args[0], n, given))
    return evaluate_node(ctx, weights, n,
                         {**given, anchor: torch.exp(scores.float()).to(scores.dtype)})


def allowed_positions(ctx, qk: fx.Node, softmax: fx.Node, q_operand, k_operand, n: int,
                      heads: int = 1):
    """The N×N matrix of (query position, key position) pairs the site lets
    through at N=n, or None when its operands do not lead back to positions."""
    q_src, k_src = sequence_source(ctx, q_operand), sequence_source(ctx, k_operand)
    if q_src is None or k_src is None:
        return None
    try:
        q_pos = evaluate_node(ctx, q_operand, n, {q_src[0]: _codes(ctx, *q_src, n)})
        k_pos = evaluate_node(ctx, k_operand, n, {k_src[0]: _codes(ctx, *k_src, n)})
        weights = site_weights(ctx, softmax, n, qk)
        # where the source's positions came from (a roll before the projection)
        q_order, k_order = upstream_order(ctx, q_src[0], n), upstream_order(ctx, k_src[0], n)
    except CannotEvaluate:
        return None
    rows = _decoded(torch.as_tensor(q_pos).double().norm(dim=-1))   # (batch, m)
    cols = _decoded(torch.as_tensor(k_pos).double().norm(dim=-2))   # (batch, k)
    p = torch.as_tensor(weights)
    if p.numel() != rows.shape[0] * rows.shape[-1] * cols.shape[-1]:
        return None  # the weights are laid out otherwise than the scores (diagonals)
    p = p.reshape(rows.shape[0], rows.shape[-1], cols.shape[-1])
    valid = (p.float() >= NEGLIGIBLE_WEIGHT) & _is_position(rows, n)[..., :, None] & \
        _is_position(cols, n)[..., None, :]
    qi = rows[..., :, None].expand_as(p)[valid].round().long() - 1
    kj = cols[..., None, :].expand_as(p)[valid].round().long() - 1
    qi = qi if q_order is None else q_order[qi]
    kj = kj if k_order is None else k_order[kj]
    allowed = torch.zeros(n, n, dtype=torch.bool)
    allowed[qi, kj] = True
    # Each allowed score must be its own (query, key) pair, once per batch
    # element and head: else the codes did not tell positions apart (a 2-D layout).
    one_to_one = int(torch.count_nonzero(valid)) == int(torch.count_nonzero(allowed)) * 2 * heads
    return allowed if bool(allowed.any(dim=1).all()) and one_to_one else None


#: Lengths a site is probed at, longest first: multiples of every power-of-two
#: block up to 128; the two longest the model runs at are used (a model may
#: run only up to its position limit: Longformer's 1,030 positions, or 510
#: where its config says 512).
PROBE_LENGTHS = (2048, 1024, 512, 256, 128)


def probed_pattern(ctx, read) -> MaskPattern | None:
    """The pattern of ``read(n)`` (the N×N pairs a site lets through at
    length n, or None where it cannot be read), at the two longest probe
    lengths where it can, or None."""
    lo, hi = ctx.traced.n_range
    lengths = [n for n in PROBE_LENGTHS if n >= lo and (hi is None or n <= hi)]
    got: dict[int, torch.Tensor | None] = {}

    def allowed_at(n: int):
        if n not in got:
            got[n] = read(n)
        if got[n] is None:
            raise CannotEvaluate("the site's positions could not be read")
        return got[n]

    for longer, shorter in zip(lengths, lengths[1:]):
        try:
            allowed_at(longer)
        except CannotEvaluate:
            continue
        allowed_at.lengths = (longer, shorter)
        pattern = read_pattern(allowed_at, ctx.seq_len)
        return None if pattern.kind == "unknown" else pattern
    return None


def pattern_of_positions(ctx, qk: fx.Node, softmax: fx.Node, q_operand, k_operand,
                         heads: int = 1):
    """The site's pattern in sequence coordinates, or None if it cannot be probed."""
    return probed_pattern(ctx, lambda n: allowed_positions(ctx, qk, softmax, q_operand,
                                                           k_operand, n, heads))


def _is_position(codes: torch.Tensor, n: int) -> torch.Tensor:
    return (codes >= 0.5) & (codes <= n + 0.5) & ((codes - codes.round()).abs() < 1e-3)


def counted_positions(ctx, qk: fx.Node, softmax: fx.Node, q_operand, k_operand, heads: int = 1):
    """The site's allowed pairs counted in sequence positions at several
    lengths, as a polynomial in N (for patterns that are not the same at
    every length, such as windows shifted around the end of the sequence)."""
    def count_at(n: int):
        allowed = allowed_positions(ctx, qk, softmax, q_operand, k_operand, n, heads)
        if allowed is None:
            raise CannotEvaluate("the site's positions could not be read")
        return int(torch.count_nonzero(allowed))

    return polynomial_count(ctx, count_at)


def sequence_sink(ctx, node: fx.Node, width, limit: int = 32) -> tuple[fx.Node, int] | None:
    """The first tensor after ``node``, walking forward through views and
    per-position ops, with one axis of length N and ``width`` features last:
    where a site's output is laid out in sequence positions again."""
    frontier = [node]
    for _ in range(limit):
        nxt = []
        for n in frontier:
            shape = ctx.traced.shape(n)
            axes = _sequence_axes(shape)
            if n is not node and len(axes) == 1 and shape and \
                    simplified(settled(shape[-1]) - width) == 0 and axes[0] != len(shape) - 1:
                return n, axes[0]
            nxt.extend(u for u in n.users if u.op == "call_function" and
                       (is_view(u) or packet(u) in _PER_POSITION or u.target is getitem))
        frontier = nxt
        if not frontier:
            break
    return None


def allowed_by_values(ctx, pv: fx.Node, v_operand: fx.Node, softmax: fx.Node, n: int,
                      qk: fx.Node | None = None):
    """The N×N matrix of (query, key) pairs the site lets through at N=n,
    read from what its output depends on: the values replaced, a group of
    positions at a time, by one-hot vectors (position j sets feature j mod
    F), every other input as the model computes it (weights read as zeros,
    so only masks decide).  Output row i's nonzero features are the keys
    query i reaches.  For layouts the position codes cannot follow (scores
    re-laid out in diagonals); None when the values or output are not found."""
    v_src = sequence_source(ctx, v_operand)
    if v_src is None:
        return None
    source, axis = v_src
    shape = [value_at(ctx.traced.expr(d), n, 2) for d in source.meta["val"].shape]
    features = shape[-1]
    sink = sequence_sink(ctx, pv, ctx.traced.shape(source)[-1])
    if axis == len(shape) - 1 or sink is None:
        return None
    try:
        weights = site_weights(ctx, softmax, n, qk)
        allowed = torch.zeros(n, n, dtype=torch.bool)
        for start in range(0, n, features):
            codes = torch.zeros(shape, dtype=source.meta["val"].dtype)
            count = min(features, n - start)
            index = [slice(None)] * len(shape)
            index[axis] = torch.arange(start, start + count)
            index[-1] = torch.arange(count)
            codes[tuple(index)] = 1
            out = torch.as_tensor(evaluate_node(ctx, sink[0], n, {source: codes,
                                                                  softmax: weights}))
            rows = out.movedim(sink[1], 0).reshape(n, -1, out.shape[-1])[:, 0, :count]
            allowed[:, start:start + count] = rows != 0
    except CannotEvaluate:
        return None
    return allowed if bool(allowed.any(dim=1).all()) else None


def pattern_of_values(ctx, pv: fx.Node, v_operand: fx.Node, softmax: fx.Node,
                      qk: fx.Node | None = None):
    """The site's pattern read from what its output depends on, or None."""
    return probed_pattern(ctx, lambda n: allowed_by_values(ctx, pv, v_operand, softmax, n, qk))
