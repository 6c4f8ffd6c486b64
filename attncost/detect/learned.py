"""Attention whose scores are learned, not computed: a table of N×N logits
(the Random Synthesizer's, sliced to the length), a softmax over its keys,
and the weights applied to values of the input.  No query meets a key,
so there is no Q·Kᵀ to find; the tokens are still mixed by normalised
pairwise weights, and ·V costs what it costs in any attention: 2·d_v per
pair and head.  The masks on the way (a causal masked_fill) name the
pattern, as for computed scores."""
from __future__ import annotations

import sympy
import torch.fx as fx

from ..expr import B, N, as_int, settled
from ..patterns import MaskPattern
from ..rules.flops import node_flops
from ..rules.ops import is_view, packet
from . import masks
from .site import SiteShape, build_sites
from .unfused import softmax_of, walk_forward

aten = __import__("torch").ops.aten


def find_learned_scores(ctx, used: set[str]) -> list:
    found = []
    for node in ctx.traced.nodes:
        if node.op != "call_function" or node.name in used or softmax_of(node) is None:
            continue
        found.extend(_read(ctx, node, *softmax_of(node)))
    return found


def _read(ctx, softmax: fx.Node, scores: fx.Node, axis: int) -> list:
    t = ctx.traced
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
    pv, prob_path, p_side = walk_forward(ctx, softmax)
    if pv is None:
        return []
    operands = ctx.product_operands(pv)
    v_operand = operands[1 - p_side]
    if v_operand not in ctx.activations or ctx.is_weight(v_operand):
        return []
    heads = as_int(sympy.Mul(*shape[:-2]) / (B if B in sympy.Mul(*shape[:-2]).free_symbols
                                             else 1))
    if not heads:
        return []
    pattern = masks.pattern_of(ctx, mask_inputs, heads) if mask_inputs else MaskPattern.full()
    d_v = as_int(t.shape(pv)[-1 if p_side == 0 else -2])
    site_shape = SiteShape("learned", heads, heads, 0, n_q, n_keys,
                           sympy.expand(node_flops(t, pv, ctx.flop_rules)), d_v)
    sites = build_sites(ctx, softmax, site_shape, pattern,
                        nodes=[*path, softmax, *prob_path, pv])
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
        if is_view(node) or pk in (aten._to_copy, aten.clone, aten.slice):
            node = node.args[0]
        elif pk in (aten.masked_fill, aten.masked_fill_):
            mask_inputs.append((node.args[1], "masked_fill"))
            node = node.args[0]
        elif pk in (aten.mul, aten.div) and not isinstance(node.args[1], fx.Node):
            node = node.args[0]
        else:
            return None
    return None
