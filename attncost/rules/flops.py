"""What an op costs: one small named FLOP rule per aten op, over symbolic shapes.

Each rule takes the shapes of the op's tensor arguments (tuples of SymPy
expressions in N and B) and returns a SymPy expression.  FLOPs are 2 per
multiply-add and cover the ops FlopCounterMode covers, so the two agree
exactly; fused attention counts 2·B·H_q·N_q·N_k·(d_qk + d_v), as
FlopCounterMode counts it on a GPU (on a CPU it counts 0).

Add a rule with ``@FLOP_RULES.register(op)``; override rules for one
analysis with ``analyze(..., flop_rules={op: rule})``.
"""
from __future__ import annotations

from typing import Callable, Mapping

import sympy
import torch
import torch.fx as fx

from .ops import FLASH_FORWARD_OPS, FLEX_ATTENTION, SDPA_OPS
from .registry import Registry

aten = torch.ops.aten

FlopRule = Callable[..., sympy.Expr]
FLOP_RULES: Registry[FlopRule] = Registry("FLOP rules")


def _prod(xs) -> sympy.Expr:
    return sympy.Mul(*xs) if xs else sympy.Integer(1)


@FLOP_RULES.register(aten.mm)
def mm_flops(a, b, *args, out_shape=None, **kwargs):
    """(m, k) @ (k, n)."""
    m, k = a
    _, n = b
    return 2 * m * k * n


@FLOP_RULES.register(aten.addmm)
def addmm_flops(bias, a, b, *args, out_shape=None, **kwargs):
    """bias + (m, k) @ (k, n); the add is not counted."""
    return mm_flops(a, b)


@FLOP_RULES.register(aten.bmm)
def bmm_flops(a, b, *args, out_shape=None, **kwargs):
    """(b, m, k) @ (b, k, n)."""
    bs, m, k = a
    _, _, n = b
    return 2 * bs * m * k * n


@FLOP_RULES.register(aten.baddbmm)
def baddbmm_flops(bias, a, b, *args, out_shape=None, **kwargs):
    return bmm_flops(a, b)


@FLOP_RULES.register(aten._scaled_mm)
def scaled_mm_flops(a, b, *args, out_shape=None, **kwargs):
    return mm_flops(a, b)


def _grouped_flops(a, b) -> sympy.Expr:
    """A grouped product as torch._grouped_mm takes it (rows of a 2-D
    operand split among groups by ``offs``; a 3-D operand holds one matrix
    per group).  Every row (or, for 2-D x 2-D, every column of the shared
    inner dim) belongs to one group, so the work is that of one product of
    the whole operand: an MoE layer's tokens x top-k rows each meet one
    expert's matrix.  Rows past ``offs[-1]`` (expert-parallel sentinels) are
    counted too: the count is an upper bound there."""
    if len(a) == 2 and len(b) == 3:  # (S, k) rows by group @ (G, k, n)
        return 2 * a[0] * a[1] * b[2]
    if len(a) == 3 and len(b) == 2:  # (G, m, k) @ (k, S) columns by group
        return 2 * a[1] * a[2] * b[1]
    if len(a) == 2 and len(b) == 2:  # (m, S) @ (S, n), the inner dim by group -> (G, m, n)
        return 2 * a[0] * a[1] * b[1]
    g, m, k = a  # (G, m, k) @ (G, k, n): a batched product
    return 2 * g * m * k * b[2]


@FLOP_RULES.register(*[op for op in (getattr(aten, "_grouped_mm", None),
                                     getattr(aten, "_scaled_grouped_mm", None)) if op is not None])
def grouped_mm_flops(a, b, *args, out_shape=None, **kwargs):
    """aten._grouped_mm(a, b, offs) and its scaled form (scales after b):
    FlopCounterMode counts these 0; attncost counts the matrix work."""
    return _grouped_flops(a, b)


@FLOP_RULES.register("transformers::grouped_mm_fallback")
def grouped_mm_fallback_flops(a, b, offs=None, *args, out_shape=None, **kwargs):
    """transformers' experts loop (one mm per expert, a custom op), where
    torch._grouped_mm does not take the dtype: the same products."""
    return _grouped_flops(a, b)


@FLOP_RULES.register("transformers::grouped_mm_fallback_backward")
def grouped_mm_fallback_backward_flops(a, b, offs=None, grad=None, *args, out_shape=None,
                                       **kwargs):
    """Its backward: the input's gradient and each expert's weight gradient,
    each the forward's work."""
    return 2 * _grouped_flops(a, b)


@FLOP_RULES.register(aten.convolution, aten._convolution, aten.cudnn_convolution,
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


@FLOP_RULES.register(*SDPA_OPS, *([FLEX_ATTENTION] if FLEX_ATTENTION is not None else []))
def sdpa_flops(q, k, v, *args, out_shape=None, **kwargs):
    return attention_flops(q, k, v)


@FLOP_RULES.register(*FLASH_FORWARD_OPS)
def flash_forward_flops(q, k, v, *args, out_shape=None, **kwargs):
    """These take (B, N, H, d) layouts."""
    def bhnd(s):
        return (s[0], s[2], s[1], s[3])
    return attention_flops(bhnd(q), bhnd(k), bhnd(v))


#: Backward kernels of SDPA, over (B, H, N, d) layouts: grad_out, query, key, value first.
SDPA_BACKWARD_OPS = tuple(
    getattr(aten, n) for n in (
        "_scaled_dot_product_flash_attention_backward",
        "_scaled_dot_product_efficient_attention_backward",
        "_scaled_dot_product_cudnn_attention_backward",
        "_scaled_dot_product_flash_attention_for_cpu_backward",
        "_scaled_dot_product_fused_attention_overrideable_backward",
    ) if hasattr(aten, n))
#: Backward kernels over (B, N, H, d) layouts.
FLASH_BACKWARD_OPS = (aten._flash_attention_backward, aten._efficient_attention_backward)


def attention_backward_flops(grad_out, q, k, v) -> sympy.Expr:
    """As torch.utils.flop_counter's sdpa_backward_flop_count: the scores
    recomputed (Q·Kᵀ), then dP = dO·Vᵀ, dV = Pᵀ·dO, dQ = dS·K, dK = dSᵀ·Q:
    2·B·H_q·N_q·N_k·(3·d_qk + 2·d_v), query heads throughout (GQA)."""
    b, h, n_q, d_qk = q
    n_k = k[-2]
    d_v = v[-1]
    return 2 * b * h * n_q * n_k * (3 * d_qk + 2 * d_v)


@FLOP_RULES.register(*SDPA_BACKWARD_OPS)
def sdpa_backward_flops(grad_out, q, k, v, *args, out_shape=None, **kwargs):
    return attention_backward_flops(grad_out, q, k, v)


@FLOP_RULES.register(*FLASH_BACKWARD_OPS)
def flash_backward_flops(grad_out, q, k, v, *args, out_shape=None, **kwargs):
    """These take (B, N, H, d) layouts."""
    def bhnd(s):
        return (s[0], s[2], s[1], s[3])
    return attention_backward_flops(bhnd(grad_out), bhnd(q), bhnd(k), bhnd(v))


def _conv_count(x, w, out, transposed: bool) -> sympy.Expr:
    """torch.utils.flop_counter's conv_flop_count over symbolic shapes."""
    spatial = (x if transposed else out)[2:]
    c_out, c_in, *kernel = w
    return 2 * x[0] * c_out * c_in * _prod(spatial) * _prod(kernel)


@FLOP_RULES.register(aten.convolution_backward)
def convolution_backward_flops(grad_out, x, w, _bias=None, _stride=None, _padding=None,
                               _dilation=None, transposed=False, _output_padding=None,
                               _groups=None, output_mask=(True, True, True), *args,
                               out_shape=None, **kwargs):
    """As flop_counter's conv_backward_flop: the input's gradient as a
    transposed convolution of grad_out, the weight's as a convolution of
    the input with grad_out (batch and channel dims swapped)."""
    def t(shape):
        return (shape[1], shape[0], *shape[2:])
    flops = sympy.Integer(0)
    if output_mask[0]:
        flops += _conv_count(grad_out, w, x, not transposed)
    if output_mask[1]:
        if transposed:
            flops += _conv_count(t(grad_out), t(x), t(w), False)
        else:
            flops += _conv_count(t(x), t(grad_out), t(w), False)
    return flops


def node_flops(traced, node: fx.Node, rules: Registry[FlopRule] = FLOP_RULES) -> sympy.Expr:
    """FLOPs of one graph node as an expression in N and B (0 if no rule)."""
    if node.op != "call_function":
        return sympy.Integer(0)
    rule = rules.get(node.target)
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


def flop_rules(overrides: Mapping | None = None) -> Registry[FlopRule]:
    """The registered FLOP rules, with ``overrides`` for one analysis."""
    return FLOP_RULES.with_overrides(overrides)
