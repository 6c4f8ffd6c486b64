"""Per-op FLOP and byte rules over symbolic shapes.

A registry in the manner of ``torch.utils.flop_counter``: one small named
function per op, each taking the shapes of the op's tensor arguments (tuples of
SymPy expressions in N and B) and returning a SymPy expression.  FLOPs are 2
per multiply-add and cover the ops FlopCounterMode covers, so the two agree
exactly; fused attention counts 4·B·H_q·N_q·N_k·d, as FlopCounterMode counts
it on a GPU (on a CPU it counts 0).
"""
from __future__ import annotations

from typing import Any, Callable

import math

import sympy
import torch
import torch.fx as fx

aten = torch.ops.aten

FlopRule = Callable[..., sympy.Expr]
FLOP_RULES: dict[Any, FlopRule] = {}


def register_flop_rule(*ops) -> Callable[[FlopRule], FlopRule]:
    """Register ``rule`` for each op (an OpOverloadPacket covers its overloads)."""

    def wrap(rule: FlopRule) -> FlopRule:
        for op in ops:
            FLOP_RULES[op] = rule
        return rule

    return wrap


def _prod(xs) -> sympy.Expr:
    return sympy.Mul(*xs) if xs else sympy.Integer(1)


@register_flop_rule(aten.mm)
def mm_flops(a, b, *args, out_shape=None, **kwargs):
    """(m, k) @ (k, n)."""
    m, k = a
    _, n = b
    return 2 * m * k * n


@register_flop_rule(aten.addmm)
def addmm_flops(bias, a, b, *args, out_shape=None, **kwargs):
    """bias + (m, k) @ (k, n); the add is not counted."""
    return mm_flops(a, b)


@register_flop_rule(aten.bmm)
def bmm_flops(a, b, *args, out_shape=None, **kwargs):
    """(b, m, k) @ (b, k, n)."""
    bs, m, k = a
    _, _, n = b
    return 2 * bs * m * k * n


@register_flop_rule(aten.baddbmm)
def baddbmm_flops(bias, a, b, *args, out_shape=None, **kwargs):
    return bmm_flops(a, b)


@register_flop_rule(aten._scaled_mm)
def scaled_mm_flops(a, b, *args, out_shape=None, **kwargs):
    return mm_flops(a, b)


@register_flop_rule(aten.convolution, aten._convolution, aten.cudnn_convolution,
                    aten._slow_conv2d_forward, aten.convolution_overrideable)
def convolution_flops(x, w, _bias=None, _stride=None, _padding=None, _dilation=None,
                      transposed=False, *args, out_shape=None, **kwargs):
    """Each output point (input point if transposed) meets the whole filter."""
    spatial = (x if transposed else out_shape)[2:]
    c_out, c_in, *kernel = w
    return 2 * x[0] * c_out * c_in * _prod(spatial) * _prod(kernel)


def attention_flops(q, k, v) -> sympy.Expr:
    """Q·Kᵀ then P·V over (B, H, N, d) layouts; query heads count (GQA)."""
    b, h, n_q, d_qk = q
    n_k = k[-2]
    d_v = v[-1]
    return 2 * b * h * n_q * n_k * d_qk + 2 * b * h * n_q * n_k * d_v


SDPA_OPS = tuple(
    op for op in (
        getattr(aten, "_scaled_dot_product_flash_attention", None),
        getattr(aten, "_scaled_dot_product_efficient_attention", None),
        getattr(aten, "_scaled_dot_product_cudnn_attention", None),
        getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None),
        getattr(aten, "_scaled_dot_product_fused_attention_overrideable", None),
        getattr(aten, "scaled_dot_product_attention", None),
        getattr(aten, "_scaled_dot_product_attention_math", None),
    ) if op is not None
)


@register_flop_rule(*SDPA_OPS)
def sdpa_flops(q, k, v, *args, out_shape=None, **kwargs):
    return attention_flops(q, k, v)


@register_flop_rule(aten._flash_attention_forward, aten._efficient_attention_forward)
def flash_forward_flops(q, k, v, *args, out_shape=None, **kwargs):
    """These take (B, N, H, d) layouts."""
    def bhnd(s):
        return (s[0], s[2], s[1], s[3])
    return attention_flops(bhnd(q), bhnd(k), bhnd(v))


def _flex_attention_op():
    try:
        from torch._higher_order_ops.flex_attention import flex_attention
    except ImportError:  # pragma: no cover - older torch
        return None
    return flex_attention


FLEX_ATTENTION = _flex_attention_op()
if FLEX_ATTENTION is not None:
    register_flop_rule(FLEX_ATTENTION)(sdpa_flops)

FUSED_ATTENTION_OPS = frozenset(SDPA_OPS) | frozenset(
    {aten._flash_attention_forward, aten._efficient_attention_forward}
) | (frozenset({FLEX_ATTENTION}) if FLEX_ATTENTION is not None else frozenset())


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


def rule_for(target) -> FlopRule | None:
    """The FLOP rule of an fx node's target (overload or its packet)."""
    rule = FLOP_RULES.get(target)
    if rule is None and hasattr(target, "overloadpacket"):
        rule = FLOP_RULES.get(target.overloadpacket)
    return rule


def node_flops(traced, node: fx.Node) -> sympy.Expr:
    """FLOPs of one graph node as an expression in N and B (0 if no rule)."""
    if node.op != "call_function":
        return sympy.Integer(0)
    rule = rule_for(node.target)
    if rule is None:
        return sympy.Integer(0)

    def shape_or_value(a):
        if isinstance(a, fx.Node):
            s = traced.shape(a)
            return s if s is not None else a.meta.get("val")
        return a

    args = [shape_or_value(a) for a in node.args]
    kwargs = {k: shape_or_value(v) for k, v in node.kwargs.items()}
    out = node.meta.get("val")
    if isinstance(out, (tuple, list)):
        out = out[0]
    out_shape = tuple(traced.expr(s) for s in out.shape) if isinstance(out, torch.Tensor) else None
    return sympy.expand(rule(*args, out_shape=out_shape, **kwargs))


# ------------------------------------------------------------------- bytes

#: Ops whose output aliases their input: they allocate nothing.
VIEW_OPS = frozenset(
    getattr(aten, name) for name in (
        "view", "_unsafe_view", "reshape", "expand", "t", "transpose", "permute",
        "unsqueeze", "squeeze", "slice", "select", "alias", "as_strided", "detach",
        "unfold", "split", "split_with_sizes", "unbind", "chunk", "narrow", "diagonal",
        "view_as", "expand_as", "_reshape_alias", "lift_fresh", "movedim", "unflatten",
    ) if hasattr(aten, name)
)


def is_view(node: fx.Node) -> bool:
    """Does this node alias an input instead of allocating?"""
    target = node.target
    packet = getattr(target, "overloadpacket", target)
    if packet in VIEW_OPS:
        return True
    schema = getattr(target, "_schema", None)
    if schema is not None and schema.returns:
        info = schema.returns[0].alias_info
        if info is not None and not info.is_write:
            return True
    return False


def tensor_bytes(traced, node: fx.Node) -> sympy.Expr:
    """Bytes of the tensors a node produces (its storage if it allocates)."""
    val = node.meta.get("val")
    vals = val if isinstance(val, (tuple, list)) else (val,)
    total = sympy.Integer(0)
    for v in vals:
        if isinstance(v, torch.Tensor):
            numel = _prod([traced.expr(s) for s in v.shape])
            total += numel * v.element_size()
    return total


def leading_term(expr: sympy.Expr, symbol: sympy.Symbol) -> sympy.Expr:
    """The highest-degree term of ``expr`` in ``symbol`` (other symbols kept)."""
    expr = sympy.expand(expr)
    if expr == 0 or symbol not in expr.free_symbols:
        return expr
    try:
        poly = sympy.Poly(expr, symbol)
    except sympy.PolynomialError:  # floor division and the like: no single term leads
        return expr
    deg = poly.degree()
    return sympy.expand(poly.coeff_monomial(symbol**deg) * symbol**deg)


def degree(expr: sympy.Expr, symbol: sympy.Symbol) -> int:
    """Degree in ``symbol``; for a non-polynomial (floor division), the growth
    rate measured between two large values."""
    expr = sympy.expand(expr)
    if symbol not in expr.free_symbols:
        return 0
    try:
        return int(sympy.Poly(expr, symbol).degree())
    except sympy.PolynomialError:
        other = {s: 1 for s in expr.free_symbols if s != symbol}
        lo = float(expr.xreplace({**other, symbol: 2**20}))
        hi = float(expr.xreplace({**other, symbol: 2**21}))
        return round(math.log2(hi / lo)) if lo > 0 else 0
