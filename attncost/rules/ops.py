"""Families of aten ops and what their schemas say (views, in-place writes).

The op sets here are facts about aten, shared by the FLOP rules, the
recognisers and the memory model.
"""
from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx as fx

aten = torch.ops.aten


def _ops(*names: str) -> frozenset:
    return frozenset(getattr(aten, n) for n in names if hasattr(aten, n))


#: Every aten form of scaled_dot_product_attention.
SDPA_OPS = tuple(
    getattr(aten, n) for n in (
        "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_fused_attention_overrideable", "scaled_dot_product_attention",
        "_scaled_dot_product_attention_math",
    ) if hasattr(aten, n)
)
#: Kernels that take (B, N, H, d) layouts.
FLASH_FORWARD_OPS = (aten._flash_attention_forward, aten._efficient_attention_forward)


def _flex_attention_op():
    try:
        from torch._higher_order_ops.flex_attention import flex_attention
    except ImportError:  # pragma: no cover - older torch
        return None
    return flex_attention


FLEX_ATTENTION = _flex_attention_op()
FUSED_ATTENTION_OPS = frozenset(SDPA_OPS) | frozenset(FLASH_FORWARD_OPS) | (
    frozenset({FLEX_ATTENTION}) if FLEX_ATTENTION is not None else frozenset())

SOFTMAX_OPS = _ops("_softmax", "softmax", "_safe_softmax")
MATMUL_OPS = frozenset({aten.bmm, aten.mm, aten.baddbmm, aten.addmm})
#: Products whose first argument is a bias added to the product.
BIASED_MATMUL_OPS = frozenset({aten.baddbmm, aten.addmm})
#: Ops that pick elements by index (block-sparse attention written in PyTorch).
GATHER_OPS = _ops("index", "gather", "index_select", "take_along_dim")
#: Ops that rank values: indices they return keep the best-ranked.
RANKING_OPS = _ops("topk", "sort", "argsort")
#: Ops that write values at the positions an index names.
SCATTER_OPS = _ops("scatter", "scatter_", "scatter_add", "scatter_add_", "index_put",
                   "index_put_")
#: Ops that make a tensor whose values do not depend on their tensor
#: arguments (only its shape, dtype or device does).
FACTORY_LIKE_OPS = _ops(
    "zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like",
    "new_zeros", "new_ones", "new_empty", "new_full", "empty_strided", "sym_size",
    "sym_numel", "sym_stride",
)
#: Copies that keep the values: a value seen through them is the same value.
COPY_OPS = _ops("_to_copy", "clone", "contiguous")

#: Ops whose output aliases their input: they allocate nothing.
VIEW_OPS = _ops(
    "view", "_unsafe_view", "reshape", "expand", "t", "transpose", "permute",
    "unsqueeze", "squeeze", "slice", "select", "alias", "as_strided", "detach",
    "unfold", "split", "split_with_sizes", "unbind", "chunk", "narrow", "diagonal",
    "view_as", "expand_as", "_reshape_alias", "lift_fresh", "movedim", "unflatten",
)

getitem = operator.getitem


def packet(node: fx.Node):
    """The op of a node without its overload (aten.bmm for aten.bmm.default)."""
    return getattr(node.target, "overloadpacket", node.target)


def op_name(node: fx.Node) -> str:
    """aten.bitwise_not.default -> bitwise_not."""
    p = packet(node)
    return getattr(p, "__name__", None) or str(getattr(node.target, "__name__", node.target))


def is_fused_attention(node: fx.Node) -> bool:
    return node.target in FUSED_ATTENTION_OPS or packet(node) in FUSED_ATTENTION_OPS


def is_sdpa(node: fx.Node) -> bool:
    return node.target in SDPA_OPS or packet(node) in SDPA_OPS


def is_view(node: fx.Node) -> bool:
    """Does this node alias an input instead of allocating?"""
    if packet(node) in VIEW_OPS:
        return True
    schema = getattr(node.target, "_schema", None)
    if schema is not None and schema.returns:
        info = schema.returns[0].alias_info
        if info is not None and not info.is_write:
            return True
    return False


#: Elementwise functions whose aten op returns a buffer beside the output
#: (``F.logsigmoid``: output and buffer), so that torch tags them no pointwise.
POINTWISE_WITH_BUFFER = frozenset(getattr(aten, n) for n in ("log_sigmoid_forward",)
                                  if hasattr(aten, n))


def is_function_of_one(node: fx.Node) -> bool:
    """Is this an elementwise function of one tensor (numbers aside):
    ``acos(x)``, ``1 - x``, ``x ** 2``, ``logsigmoid(x)`` (its op, then the
    output taken from it)?  Applied to scores, it weighs them."""
    if node.op != "call_function":
        return False
    if node.target is getitem and node.args[1] == 0 and isinstance(node.args[0], fx.Node):
        return packet(node.args[0]) in POINTWISE_WITH_BUFFER
    tags = getattr(node.target, "tags", ())
    return (torch.Tag.pointwise in tags or packet(node) in POINTWISE_WITH_BUFFER) and \
        sum(isinstance(a, fx.Node) for a in (*node.args, *node.kwargs.values())) == 1


def writes_input(node: fx.Node) -> bool:
    """Does this op return (a view of) one of its inputs, in place?"""
    schema = getattr(node.target, "_schema", None)
    return bool(schema is not None and schema.returns and
                any(r.alias_info is not None for r in schema.returns))


def schema_args(node: fx.Node) -> dict[str, Any]:
    """A node's arguments by name, defaults filled in from the op's schema."""
    schema = getattr(node.target, "_schema", None)
    out: dict[str, Any] = {}
    if schema is None:
        return out
    for i, arg in enumerate(schema.arguments):
        if i < len(node.args):
            out[arg.name] = node.args[i]
        elif arg.name in node.kwargs:
            out[arg.name] = node.kwargs[arg.name]
        elif arg.has_default_value():
            out[arg.name] = arg.default_value
    return out


def qkv_args(node: fx.Node) -> tuple[fx.Node, fx.Node, fx.Node]:
    """Query, key and value of a fused attention call."""
    if node.target is FLEX_ATTENTION:
        return tuple(node.args[:3])
    args = schema_args(node)
    return (args.get("query", node.args[0]), args.get("key", node.args[1]),
            args.get("value", node.args[2]))
