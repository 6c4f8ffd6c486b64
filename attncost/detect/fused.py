"""Fused attention: a call of scaled_dot_product_attention (any aten form) or
FlexAttention.  Heads and head dims come from the operands' shapes, KV heads
from how far K was expanded, the pattern from the mask (or is_causal)."""
from __future__ import annotations

import sympy
import torch.fx as fx

from ..expr import B, N, as_int, settled, simplified
from ..patterns import MaskPattern
from ..rules.flops import node_flops
from ..rules.ops import FLASH_FORWARD_OPS, FLEX_ATTENTION, is_fused_attention, packet, qkv_args, \
    schema_args
from . import masks
from .site import AttentionSite, SiteShape, build_sites, content_based


def find_fused(ctx, used: set[str]) -> list[AttentionSite]:
    return [site for node in ctx.traced.nodes
            if node.op == "call_function" and is_fused_attention(node)
            for site in read_fused(ctx, node)]


def read_fused(ctx, node: fx.Node) -> list[AttentionSite]:
    """The call's site, or one per group of heads that let different pairs through."""
    t = ctx.traced
    q, k, v = qkv_args(node)
    qs, ks, vs = t.shape(q), t.shape(k), t.shape(v)
    if packet(node) in FLASH_FORWARD_OPS:
        qs, ks, vs = [(s[0], s[2], s[1], s[3]) for s in (qs, ks, vs)]
    heads = as_int(qs[1]) or 1
    kv_direct = as_int(ks[1]) or heads
    ratio = as_int(ctx.expand_ratio(k)) or 1
    kv_heads = max(1, kv_direct // ratio) if kv_direct % ratio == 0 else kv_direct
    impl = "flex" if node.target is FLEX_ATTENTION else \
        "flash" if packet(node) in FLASH_FORWARD_OPS else "sdpa"
    n_q, n_k, windows = _lengths(qs, ks, heads)
    shape = SiteShape(impl, heads, kv_heads, as_int(qs[-1]) or 0, n_q, n_k,
                      node_flops(t, node, ctx.flop_rules), as_int(vs[-1]), windows=windows)
    pattern = _pattern(ctx, node, impl, heads)
    mask = schema_args(node).get("attn_mask") if impl == "sdpa" else None
    if windows:  # the pairs the mask lets through in each window, counted
        found = [(mask, "allowed")] if isinstance(mask, fx.Node) else []
        if pattern.kind == "causal" and not found:
            pattern.pairs = _causal_in_windows(qs, ks, heads)
        pattern = masks.windowed_pattern(ctx, pattern, found, (*qs[:-1], n_k), heads, n_q, n_k)
    pattern.content = content_based(ctx, (q, k), [mask] if isinstance(mask, fx.Node) else [])
    sites = build_sites(ctx, node, shape, pattern, nodes=[node])
    if impl == "sdpa" and not windows:  # a block of a computation in chunks, maybe
        for site in sites:
            site.block_masks = [(mask, "allowed")] if isinstance(mask, fx.Node) else []
            site.block_causal = not site.block_masks and \
                bool(schema_args(node).get("is_causal", False))
    return sites


def _lengths(qs, ks, heads: int):
    """The queries each head asks per batch element, its keys, and whether the
    sequence was folded into the batch in windows: a call on (B·windows, H,
    w, d) with w fixed asks the sequence's every query, each of its window's
    w keys (Swin, ViTDet, MaxViT cut the tokens into windows before the
    projections)."""
    n_q, n_k = settled(qs[-2]), settled(ks[-2])
    if N in n_k.free_symbols or N in n_q.free_symbols:
        return qs[-2], ks[-2], False
    rows = settled(simplified(sympy.Mul(*qs[:-1]) / (B * heads)))
    folded = N in rows.free_symbols and N in sympy.Mul(*ks[:-1]).free_symbols
    return (rows, n_k, True) if folded else (qs[-2], ks[-2], False)


def _causal_in_windows(qs, ks, heads: int) -> sympy.Expr | None:
    """Pairs per head that ``is_causal`` lets through on windows folded into
    the batch, (B·windows, H, w_q, ·) × (·, ·, w_k, ·): in each window query
    i sees keys 0..i (the kernels align the triangle top-left)."""
    w_q, w_k = as_int(settled(qs[-2])), as_int(settled(ks[-2]))
    if w_q is None or w_k is None:
        return None
    windows = settled(simplified(sympy.Mul(*qs[:-2]) / (B * heads)))
    return sympy.expand(windows * sum(min(i + 1, w_k) for i in range(w_q)))


def _pattern(ctx, node: fx.Node, impl: str, heads: int) -> MaskPattern:
    """What the call lets through: its mask_mod, attn_mask or is_causal."""
    if impl == "flex":
        block_mask = node.args[4] if len(node.args) > 4 else None
        mask_mod = block_mask[-1] if isinstance(block_mask, tuple) and block_mask else None
        return masks.pattern_of_mask_mod(ctx, mask_mod, heads)
    args = schema_args(node)
    window = _kernel_window(args)
    if window is not None:
        return window
    if isinstance(args.get("attn_mask"), fx.Node):
        return masks.pattern_of(ctx, [(args["attn_mask"], "allowed")], heads)
    if args.get("is_causal", False):
        return MaskPattern.causal_mask()
    return MaskPattern.full()


def _kernel_window(args: dict) -> MaskPattern | None:
    """The sliding window a flash kernel is called with (window_size_left /
    right: keys before and after each query), or None when it has none."""
    left, right = args.get("window_size_left"), args.get("window_size_right")
    if not isinstance(left, int) or left < 0:
        return None
    causal = bool(args.get("is_causal", False)) or right == 0
    if causal:
        return MaskPattern("window", causal=True, window=left + 1)
    if isinstance(right, int) and right == left:
        return MaskPattern("window", window=2 * left + 1, symmetric=True)
    return None
