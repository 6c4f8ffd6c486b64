"""Attention computed in blocks: one computation, many score products.

Memory-efficient attention (and any Python loop over chunks) splits the
queries along the sequence, and the keys too, and takes the scores of each
pair of chunks apart, skipping the pairs a causal mask blocks whole.  The
recognisers read each pair as a site of its own.  Sites whose queries are
slices of one tensor along the sequence and whose keys are slices of
another, in one module call, are one attention: merged here, their work
summed, and their allowed pairs placed at their offsets in one queries ×
keys matrix (at the traced length, where the chunks are those the trace
holds for), which names the pattern.
"""
from __future__ import annotations

import sympy
import torch
import torch.fx as fx

from ..expr import as_int, settled, value_at
from ..patterns.formulas import formula
from ..patterns.mask import MaskPattern, classify_allowed
from ..rules.ops import COPY_OPS, getitem, is_fused_attention, is_view, packet, qkv_args
from .evaluate import CannotEvaluate
from .graph import is_product
from .site import AttentionSite, SiteShape, build_site

aten = torch.ops.aten

#: Ops that cut a tensor into pieces along one axis: getitem picks a piece.
_SPLITS = frozenset(getattr(aten, n) for n in ("split", "split_with_sizes", "chunk",
                                                "tensor_split") if hasattr(aten, n))


def merge_blocks(ctx, sites: list[AttentionSite]) -> list[AttentionSite]:
    """``sites`` with the blocks of one computation made one site each."""
    groups: dict[tuple, list[AttentionSite]] = {}
    for site in sites:
        key = _block_key(ctx, site)
        if key is not None:
            groups.setdefault(key, []).append(site)
    merged: dict[int, AttentionSite | None] = {}
    for key, blocks in groups.items():
        if len(blocks) < 2:
            continue
        one = _merged(ctx, key, blocks)
        if one is not None:
            merged[id(blocks[0])] = one
            merged.update({id(b): None for b in blocks[1:]})
    return [merged.get(id(s), s) for s in sites if merged.get(id(s), s) is not None]


def _block_key(ctx, site: AttentionSite) -> tuple | None:
    """(module, the queries' whole tensor, the keys') for a site whose query
    or key operand is a slice along the sequence; None otherwise."""
    if site.head_indices is not None or site.block_masks is None or not site.nodes:
        return None
    qk = ctx.node(site.nodes[0])
    if qk is None or qk.op != "call_function":
        return None
    q_op, k_op = _queries_and_keys(ctx, qk)
    q, k = _slice_of(ctx, q_op), _slice_of(ctx, k_op)
    if q is None and k is None:
        return None
    return site.name, (q or (q_op, None, 0))[0:2], (k or (k_op, None, 0))[0:2]


def _queries_and_keys(ctx, first: fx.Node) -> tuple[fx.Node, fx.Node]:
    """The query and key operands of a site's first node: Q·Kᵀ's factors,
    or a fused call's q and k."""
    if is_fused_attention(first):
        return qkv_args(first)[:2]
    return ctx.product_operands(first)


def _slice_of(ctx, operand) -> tuple[fx.Node, int, sympy.Expr] | None:
    """(whole tensor, axis, offset) where ``operand`` is, through views and
    copies, one piece of a tensor cut along an axis; else None."""
    node = operand
    for _ in range(16):
        if not isinstance(node, fx.Node) or node.op != "call_function":
            return None
        if node.target is getitem and isinstance(node.args[0], fx.Node) and \
                packet(node.args[0]) in _SPLITS:
            return _piece(ctx, node.args[0], node.args[1])
        if packet(node) is aten.slice and len(node.args) >= 3 and \
                isinstance(node.args[0], fx.Node) and not _whole_slice(node):
            start = node.args[2] if isinstance(node.args[2], int) else None
            return (_whole(node.args[0]), node.args[1], sympy.Integer(start)) \
                if start is not None else None
        if packet(node) is aten.select and isinstance(node.args[0], fx.Node) and \
                isinstance(node.args[2], int):
            index = node.args[2]
            if index < 0:  # from the end: the axis' length must be a number
                size = as_int(_axis_length(ctx, node.args[0], node.args[1]))
                if size is None:
                    return None
                index += size
            return node.args[0], node.args[1], sympy.Integer(index)
        if not (is_view(node) or packet(node) in COPY_OPS or
                (packet(node) is aten.mul and not isinstance(node.args[1], fx.Node))):
            return None
        node = node.args[0]
    return None


def _whole_slice(node: fx.Node) -> bool:
    """Is ``node`` a slice that keeps its whole axis (``x[:, :, i:j]`` first
    slices axis 0 from 0 to the end)?"""
    if packet(node) is not aten.slice:
        return False
    start = node.args[2] if len(node.args) > 2 else 0
    end = node.args[3] if len(node.args) > 3 else None
    return start in (0, None) and (end is None or isinstance(end, int) and end >= 2 ** 62)


def _whole(node: fx.Node) -> fx.Node:
    """The tensor a chain of slices that keep their whole axes views."""
    while isinstance(node, fx.Node) and _whole_slice(node) and isinstance(node.args[0], fx.Node):
        node = node.args[0]
    return node


def _axis_length(ctx, node: fx.Node, axis: int):
    shape = ctx.traced.shape(node)
    return shape[axis] if shape is not None else None


def _piece(ctx, split: fx.Node, index: int):
    """The whole tensor, the axis and the offset of piece ``index`` of a split."""
    pieces = split.meta.get("val")
    whole = split.args[0]
    shape = ctx.traced.shape(whole)
    if not isinstance(pieces, (list, tuple)) or shape is None:
        return None
    axis = split.args[2] if len(split.args) > 2 else split.kwargs.get("dim", 0)
    axis %= len(shape)
    offset = sum((ctx.traced.expr(p.shape[axis]) for p in pieces[:index]), sympy.Integer(0))
    return whole, axis, offset


def _merged(ctx, key: tuple, blocks: list[AttentionSite]) -> AttentionSite | None:
    """One site for the blocks, or None where their pairs cannot be read."""
    (_, (q_whole, q_axis), (k_whole, k_axis)) = key
    n = ctx.traced.seq_len_hint
    q_len, k_len = _length(ctx, q_whole, q_axis, blocks[0].query_len), \
        _length(ctx, k_whole, k_axis, blocks[0].key_len)
    allowed = _assembled(ctx, blocks, n, value_at(q_len, n), value_at(k_len, n))
    if allowed is None:
        return None
    pattern = classify_allowed(allowed)
    lo, hi = ctx.traced.n_range
    at_one_length = pattern.kind == "pattern" and lo == hi
    if at_one_length:
        _spans_read(pattern, allowed)
    first = blocks[0]
    pv_shape = ctx.traced.shape(ctx.node(first.nodes[-1]))
    shape = SiteShape("chunked", first.heads, first.kv_heads, first.head_dim, q_len, k_len,
                      sympy.expand(sum((b.flops for b in blocks), sympy.Integer(0))),
                      as_int(pv_shape[-1]) if pv_shape else None)
    nodes = list(dict.fromkeys(ctx.node(name) for b in blocks for name in b.nodes))
    site = build_site(ctx, ctx.node(first.nodes[0]), shape, pattern, nodes)
    if at_one_length:  # the work of a pair the blocks compute, times the pairs let
        # through (blocks along the diagonal compute part of the matrix)
        computed = sum(value_at(b.query_len, n) * value_at(b.key_len, n) for b in blocks)
        site.useful_flops = sympy.expand(shape.flops * sympy.Rational(pattern.allowed, computed))
    site.notes.append(f"computed in {len(blocks)} blocks of queries × keys; its pairs were "
                      f"read at N={n:,}, where the blocks are those the trace holds for")
    return site


def _spans_read(pattern: MaskPattern, allowed: torch.Tensor) -> None:
    """In a trace at one length, the blocks' pairs there, and, where each
    query's keys lie within a span of at most half the keys (chunks along
    the diagonal), that span and the most keys a query meets: local."""
    pattern.pairs = sympy.Integer(int(allowed.sum()))
    rows = allowed.any(dim=-1)
    if not rows.any():
        return
    cols = torch.arange(allowed.shape[-1]).expand_as(allowed)
    first = torch.where(allowed, cols, allowed.shape[-1]).min(dim=-1).values[rows]
    last = torch.where(allowed, cols, -1).max(dim=-1).values[rows]
    reach = int((last - first).max()) + 1
    if 2 * reach <= allowed.shape[-1]:
        pattern.reach, pattern.keys = reach, int(allowed.sum(dim=-1).max())


def _length(ctx, whole: fx.Node | None, axis: int | None, fallback: sympy.Expr) -> sympy.Expr:
    if whole is None or axis is None:
        return fallback
    shape = ctx.traced.shape(whole)
    return shape[axis] if shape is not None else fallback


def _assembled(ctx, blocks, n: int, n_q: int, n_k: int) -> torch.Tensor | None:
    """The queries × keys matrix of allowed pairs at length n: each block's
    own, placed at its offsets; pairs no block computes are blocked."""
    from .masks import block_allowed

    allowed = torch.zeros(n_q, n_k, dtype=torch.bool)
    for b in blocks:
        q_op, k_op = _queries_and_keys(ctx, ctx.node(b.nodes[0]))
        q0, k0 = (value_at(s[2], n) if s else 0 for s in (_slice_of(ctx, q_op),
                                                           _slice_of(ctx, k_op)))
        rows, cols = value_at(b.query_len, n), value_at(b.key_len, n)
        try:
            part = block_allowed(ctx, b.block_masks, n, rows, cols)
        except CannotEvaluate:
            return None
        if part is None or q0 + rows > n_q or k0 + cols > n_k:
            return None
        if b.block_causal:  # the kernels align the triangle top-left
            part = part & torch.ones(rows, cols, dtype=torch.bool).tril()
        allowed[q0:q0 + rows, k0:k0 + cols] |= part
    return allowed


def merge_pieces(ctx, sites: list[AttentionSite]) -> list[AttentionSite]:
    """``sites`` with the pieces of one block-sparse computation made one
    site: sites of one module call whose queries are pieces of one tensor
    cut along an axis, together all of it, each piece against keys of its
    own (BigBird: the first and last query blocks against every key, the
    second and next-to-last against a few blocks, the rest against a band,
    the global blocks and blocks picked by index)."""
    groups: dict[tuple, list[tuple[AttentionSite, tuple]]] = {}
    for site in sites:
        piece = _query_piece(ctx, site)
        if piece is not None:
            groups.setdefault((site.name, piece[0], piece[1]), []).append((site, piece))
    merged: dict[int, AttentionSite | None] = {}
    for (_, whole, axis), members in groups.items():
        if len(members) < 2 or not _tiles(ctx, whole, axis, [p for _, p in members]) or \
                not _queries_of_the_sequence(ctx, [site for site, _ in members]):
            continue
        parts = [site for site, _ in members]
        merged[id(parts[0])] = _block_sparse(ctx, parts)
        merged.update({id(p): None for p in parts[1:]})
    return [merged.get(id(s), s) for s in sites if merged.get(id(s), s) is not None]


def _query_piece(ctx, site: AttentionSite) -> tuple | None:
    """(whole tensor, axis, offset, length) of the piece of a tensor the
    site's queries are, for a site not merged already; else None."""
    if site.head_indices is not None or site.implementation == "chunked" or not site.nodes:
        return None
    qk = ctx.node(site.nodes[0])
    if qk is None or qk.op != "call_function" or not is_product(qk):
        return None
    q_op = ctx.product_operands(qk)[0]
    found = _slice_of(ctx, q_op)
    if found is None:
        return None
    whole, axis, offset = found
    piece = _piece_node(q_op)
    if piece is None or piece.args[0] is not whole:  # cut otherwise (a split)
        return None
    axis %= len(ctx.traced.shape(whole))
    length = sympy.Integer(1) if packet(piece) is aten.select else ctx.traced.shape(piece)[axis]
    return whole, axis, offset, length


def _piece_node(operand) -> fx.Node | None:
    """The slice or select that cut ``operand`` out, through views and copies."""
    node = operand
    for _ in range(16):
        if not isinstance(node, fx.Node) or node.op != "call_function":
            return None
        if packet(node) in (aten.slice, aten.select):
            return node
        node = node.args[0] if node.args else None
    return None


def _tiles(ctx, whole: fx.Node, axis: int, pieces: list[tuple]) -> bool:
    """Do the pieces cover the whole axis once each, end to end?"""
    shape = ctx.traced.shape(whole)
    if shape is None:
        return False
    n = ctx.traced.seq_len_hint
    spans = sorted((value_at(p[2], n), value_at(p[3], n)) for p in pieces)
    at = 0
    for start, length in spans:
        if start != at:
            return False
        at += length
    return at == value_at(shape[axis], n)


def _queries_of_the_sequence(ctx, parts: list[AttentionSite]) -> bool:
    """Are the pieces' queries, together, the sequence's (not heads cut apart,
    each with every query)?"""
    n = ctx.traced.seq_len_hint
    return sum(value_at(p.query_len, n) for p in parts) == n


def _block_sparse(ctx, parts: list[AttentionSite]) -> AttentionSite:
    """One site for the pieces: their work summed, every pair they compute
    needed; sparse where keys are picked by index, else local."""
    first = parts[0]
    n = ctx.traced.seq_len_hint
    queries = settled(sum((p.query_len for p in parts), sympy.Integer(0)))
    keys = max((p.key_len for p in parts), key=lambda k: value_at(k, n))
    flops = sympy.expand(sum((p.flops for p in parts), sympy.Integer(0)))
    shape = SiteShape("block-sparse", first.heads, first.kv_heads, first.head_dim, queries,
                      keys, flops)
    nodes = list(dict.fromkeys(ctx.node(name) for p in parts for name in p.nodes))
    site = build_site(ctx, ctx.node(first.nodes[0]), shape, MaskPattern.full(), nodes)
    site.variant = "sparse" if any(p.implementation == "gather" for p in parts) else "local"
    site.useful_flops = sympy.expand(sum((p.useful_flops for p in parts), sympy.Integer(0)))
    site.complexity = formula(site.variant).complexity
    pairs = sum(value_at(p.query_len * p.key_len, n) for p in parts)
    site.density = pairs / value_at(queries * keys, n)
    site.notes = list(dict.fromkeys(note for p in parts for note in p.notes))
    site.notes.append(f"computed in {len(parts)} pieces of the queries, each against keys "
                      f"of its own ({', '.join(p.implementation for p in parts)}): every pair "
                      "they compute is counted as needed")
    return site

