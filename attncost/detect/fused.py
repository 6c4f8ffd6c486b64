"""Fused attention: a call of scaled_dot_product_attention (any aten form) or
FlexAttention.  Heads and head dims come from the operands' shapes, KV heads
from how far K was expanded, the pattern from the mask (or is_causal)."""
from __future__ import annotations

import torch.fx as fx

from ..expr import as_int
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
    shape = SiteShape(impl, heads, kv_heads, as_int(qs[-1]) or 0, qs[-2], ks[-2],
                      node_flops(t, node, ctx.flop_rules), as_int(vs[-1]))
    pattern = _pattern(ctx, node, impl, heads)
    mask = schema_args(node).get("attn_mask") if impl == "sdpa" else None
    pattern.content = content_based(ctx, (q, k), [mask] if isinstance(mask, fx.Node) else [])
    return build_sites(ctx, node, shape, pattern, nodes=[node])


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
