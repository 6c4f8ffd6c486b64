"""Scores concatenated from several products, one softmax over them all.

Block-sparse attention written by hand (BigBird's ``bigbird_block_sparse_
attention``) computes, for a group of query blocks, the scores against
each kind of key block apart (the first block, a band of neighbours,
blocks picked by index, the last block), concatenates them along the keys,
takes one softmax over the row, and applies each slice of the weights to
its own values, summing the products.  That is one attention whose keys
are the union: one site, its work every product's, its keys the
concatenation's width.
"""
from __future__ import annotations

import sympy
import torch
import torch.fx as fx

from ..expr import B, as_int, settled, simplified
from ..patterns import MaskPattern
from ..rules.flops import node_flops
from ..rules.ops import BIASED_MATMUL_OPS, MATMUL_OPS, getitem, is_view, packet
from . import masks
from .graph import PROB_OPS, SCORE_OPS
from .heads import heads_and_queries
from .site import AttentionSite, SiteShape, build_sites

aten = torch.ops.aten


def read_concatenated(ctx, softmax: fx.Node, scores: fx.Node, axis: int) -> list[AttentionSite]:
    """The site of a softmax over scores concatenated along the keys, or none."""
    from .unfused import _implementation, _walk_back  # the chain from one product

    shape = ctx.traced.shape(softmax)
    if shape is None or axis % len(shape) != len(shape) - 1:
        return []
    cat = _concatenation(scores)
    if cat is None:
        return []
    pieces = [_walk_back(piece) for piece in cat.args[0]]
    if any(qk is None for qk, _, _ in pieces):
        return []
    operands = [ctx.product_operands(qk) for qk, _, _ in pieces]
    if any(ctx.is_weight(o) for pair in operands for o in pair):
        return []
    applied = _applications(softmax)
    if not applied or any(ctx.is_weight(value) for _, value in applied):
        return []
    products = [qk for qk, _, _ in pieces] + [pv for pv, _ in applied]
    flops = sympy.expand(sum((node_flops(ctx.traced, p, ctx.flop_rules) for p in products),
                             sympy.Integer(0)))
    n_keys = settled(shape[-1])
    if len(shape) == 5 and as_int(shape[1]):  # (batch, heads, query blocks, rows, keys)
        heads, n_q = as_int(shape[1]), settled(shape[2] * shape[3])
    else:
        heads, n_q = heads_and_queries(ctx, shape, len(shape) - 1, operands[0][0])
    kinds = {_implementation(ctx, pair, n_keys, MaskPattern.full()) for pair in operands}
    implementation = "gather" if "gather" in kinds else "blocked"
    pattern = _pattern_of_pieces(ctx, cat.args[0], pieces, heads)
    q_width = as_int(ctx.traced.shape(operands[0][0])[-1]) or 0
    v_shape = ctx.traced.shape(applied[0][0])
    ratio = as_int(ctx.expand_ratio(operands[0][1])) or 1  # keys repeated for grouped heads
    kv_heads = heads // ratio if ratio > 1 and heads % ratio == 0 else heads
    site_shape = SiteShape(implementation, heads, kv_heads, q_width, n_q, n_keys, flops,
                           as_int(v_shape[-1]) if v_shape else None)
    nodes = [n for qk, _, path in pieces for n in (qk, *path)] + [cat, softmax] + \
        [pv for pv, _ in applied]
    return build_sites(ctx, softmax, site_shape, pattern, nodes=nodes)


def _pattern_of_pieces(ctx, scores: list[fx.Node], pieces: list, heads: int) -> MaskPattern:
    """What the concatenated scores let through: each piece's pairs, its
    masks counted where it has some (a causal triangle on the local keys, a
    segment mask on the global ones: long-short attention), all of them
    where it has none; summed, per head.  Full where no piece is masked."""
    if not any(found for _, found, _ in pieces):
        return MaskPattern.full()
    total = sympy.Integer(0)
    for piece, (_, found, _) in zip(scores, pieces):
        shape = ctx.traced.shape(piece)
        count = masks.counted_pairs(ctx, found, shape, heads) if found else \
            settled(simplified(sympy.Mul(*shape) / (B * heads)))
        if count is None or B in sympy.sympify(count).free_symbols:
            return MaskPattern("full", density=1.0, notes=[
                "its scores are concatenated from several products; the masks on them could "
                "not be counted: every pair it computes is counted as needed"])
        total += count
    return MaskPattern("pattern", pairs=sympy.expand(total))


def _concatenation(scores: fx.Node, limit: int = 8) -> fx.Node | None:
    """The concatenation along the last axis that ``scores`` is, through
    score ops on it alone (a scale applied to the whole row), or None."""
    node = scores
    for _ in range(limit):
        if not isinstance(node, fx.Node) or node.op != "call_function":
            return None
        if packet(node) is aten.cat:
            pieces = node.args[0]
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
            rank = len(pieces[0].meta["val"].shape) if pieces else 0
            return node if len(pieces) >= 2 and rank and dim % rank == rank - 1 else None
        if not (packet(node) in SCORE_OPS or is_view(node)):
            return None
        node = _scores_operand(node)
    return None


def _scores_operand(node: fx.Node) -> fx.Node | None:
    """The operand of a score op that carries the scores: its only tensor,
    or, beside a mask or bias broadcast to them (PEGASUS-X adds its padding
    mask to the concatenation), the one tensor of the op's own shape."""
    tensors = [a for a in node.args if isinstance(a, fx.Node)]
    if len(tensors) == 1:
        return tensors[0]
    shape = node.meta["val"].shape if "val" in node.meta else None
    same = [a for a in tensors if shape is not None and "val" in a.meta and
            getattr(a.meta["val"], "shape", None) == shape]
    return same[0] if len(same) == 1 else None


def _applications(softmax: fx.Node, limit: int = 16) -> list[tuple[fx.Node, fx.Node]]:
    """Every product that applies a slice of the weights to values: (the
    product, its values), found through slices and views of the weights."""
    found, frontier = [], [softmax]
    for _ in range(limit):
        nxt = []
        for node in frontier:
            for user in node.users:
                pk = packet(user)
                if pk in MATMUL_OPS:
                    first = 1 if pk in BIASED_MATMUL_OPS else 0
                    factors = list(user.args[first:first + 2])
                    if node in factors and len(factors) == 2:
                        found.append((user, factors[1 - factors.index(node)]))
                elif pk in PROB_OPS or is_view(user) or user.target is getitem:
                    nxt.append(user)
        frontier = nxt
        if not frontier:
            break
    return found
