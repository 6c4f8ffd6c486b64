"""Attention whose scores are learned, not computed: a table of N×N logits
(the Random Synthesizer's, sliced to the length), a softmax over its keys,
and the weights applied to values of the input.  No query meets a key,
so there is no Q·Kᵀ to find; the tokens are still mixed by normalised
pairwise weights, and ·V costs what it costs in any attention: 2·d_v per
pair and head.  The masks on the way (a causal masked_fill) name the
pattern, as for computed scores.

The Attention Free Transformer (AFT-full) weighs its table by ``exp``
instead, and normalises after the products: exp(w)·(exp(K) ⊙ V) over
exp(w)·exp(K).  Every product of the weights with the input is the site's
(the normaliser's is a term of each pair, as a position term is)."""
from __future__ import annotations

import sympy
import torch
import torch.fx as fx

from ..expr import B, N, as_int, settled
from ..patterns import MaskPattern
from ..rules.flops import node_flops
from ..rules.ops import MATMUL_OPS, is_view, packet
from . import masks
from .site import SiteShape, build_sites
from .unfused import softmax_of, walk_forward

aten = torch.ops.aten


def find_learned_scores(ctx, used: set[str]) -> list:
    found, exps = [], {}
    for node in ctx.traced.nodes:
        if node.op != "call_function" or node.name in used:
            continue
        if softmax_of(node) is not None:
            found.extend(_read(ctx, [node], *softmax_of(node)))
        elif packet(node) is aten.exp and isinstance(node.args[0], fx.Node):
            exps.setdefault(node.args[0], []).append(node)  # exp(w), taken once a product
    for table, weighed in exps.items():
        found.extend(_read(ctx, weighed, table, -1, normalised_after=True))
    return found


def _products_of(ctx, weights: fx.Node, limit: int = 4) -> list[tuple[fx.Node, int]]:
    """(product, the weights' side) of every product the weights meet
    through views."""
    found, frontier = [], [weights]
    for _ in range(limit):
        nxt = []
        for node in frontier:
            for user in node.users:
                if packet(user) in MATMUL_OPS:
                    operands = ctx.product_operands(user)
                    if node in operands:
                        found.append((user, operands.index(node)))
                elif is_view(user):
                    nxt.append(user)
        frontier = nxt
    return found


def _read(ctx, weighed: list[fx.Node], scores: fx.Node, axis: int,
          normalised_after: bool = False) -> list:
    """The site of the scores' table weighed by ``weighed`` (one softmax, or
    each exp of the same table), or none."""
    t, softmax = ctx.traced, weighed[0]
    shape = t.shape(softmax)
    if shape is None or len(shape) < 2 or axis % len(shape) != len(shape) - 1:
        return []
    n_q, n_keys = settled(shape[-2]), settled(shape[-1])
    if not all(N in sympy.sympify(x).free_symbols for x in (n_q, n_keys)):
        return []
    found = _back_to_table(ctx, scores)
    if found is None:
        return []
    mask_inputs, path = found
    if normalised_after:
        products, prob_path = [p for w in weighed for p in _products_of(ctx, w)], []
    else:
        pv, prob_path, p_side = walk_forward(ctx, softmax)
        products = [(pv, p_side)] if pv is not None else []
    products = [(p, side) for p, side in products
                if ctx.product_operands(p)[1 - side] in ctx.activations]
    lead = sympy.Mul(*shape[:-2])
    heads = as_int(lead / (B if B in lead.free_symbols else 1))
    if not products or not heads:
        return []
    pattern = masks.pattern_of(ctx, mask_inputs, heads) if mask_inputs else MaskPattern.full()
    widths = [as_int(t.shape(p)[-1 if side == 0 else -2]) or 0 for p, side in products]
    flops = sum((node_flops(t, p, ctx.flop_rules) for p, _ in products), sympy.Integer(0))
    site_shape = SiteShape("learned", heads, heads, 0, n_q, n_keys, sympy.expand(flops),
                           widths[0], score_term_width=sum(widths[1:]))
    sites = build_sites(ctx, softmax, site_shape, pattern,
                        nodes=[*path, *weighed, *prob_path, *(p for p, _ in products)])
    for site in sites:
        site.block_masks = list(mask_inputs)
    return sites


def _back_to_table(ctx, scores: fx.Node, limit: int = 16):
    """(masks, path) from the scores back to a parameter, through views,
    casts, scaling by numbers and masks; None where the input reaches them."""
    if scores in ctx.activations:
        return None
    mask_inputs, path, node = [], [], scores
    for _ in range(limit):
        if not isinstance(node, fx.Node):
            return None
        if node.op == "placeholder":
            return (mask_inputs, path) if ctx.is_weight(node) else None
        pk = packet(node)
        path.append(node)
        if is_view(node) or pk in (aten._to_copy, aten.clone):
            node = node.args[0]
        elif pk in (aten.masked_fill, aten.masked_fill_):
            mask_inputs.append((node.args[1], "masked_fill"))
            node = node.args[0]
        elif pk in (aten.mul, aten.div) and not isinstance(node.args[1], fx.Node):
            node = node.args[0]
        else:
            return None
    return None
