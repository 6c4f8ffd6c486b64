"""How many heads a site has, and how many queries each head asks.

A score tensor's rows are batch × heads × queries, but how they are laid
out varies: (B, H, N_q, N_k), (B·H, N_q, N_k) for bmm, (B·windows, H, w, w)
in Swin, (B·H, blocks, b, k) for blocked local attention.  When the query
length is a constant (a fixed encoder window, learned latent queries), the
rows alone cannot tell heads from queries: B·4·24 is 4 heads of 24 queries
or 96 heads of one.  The projection that made the queries can: its output
holds H·d features per token (or a multiple of it, for fused q/k/v), and
the query operand holds H·d per token as well, so

    H = (numel(Q operand) / numel(projection output)) · (projection width / d).

The heads so read must also divide the score rows; then the query length
is what remains of them.  Scores or weights mixed across the heads on the
way to ·V (talking heads, re-attention) keep their pairs: ``heads_mixed``.
"""
from __future__ import annotations

import sympy
import torch
import torch.fx as fx

from ..expr import B, as_int, settled, simplified
from ..rules.ops import COPY_OPS, GATHER_OPS, MATMUL_OPS, getitem, is_view, packet
from .graph import is_product, split_rows

aten = torch.ops.aten

#: Ops that keep each token's features together on the way from the
#: projection to the product (scale, rotary, casts, padding, a roll).
_CARRY_OPS = frozenset({aten.mul, aten.div, aten.add, aten.sub, aten.neg, aten.constant_pad_nd,
                        aten.roll, aten.cat, aten.mul_, aten.div_, aten.add_, aten.sub_}) | COPY_OPS


#: Norms over the last axis (DeepViT's LayerNorm over the heads of each pair).
_NORMS = frozenset(getattr(aten, n) for n in ("native_layer_norm", "layer_norm", "rms_norm",
                                              "_fused_rms_norm") if hasattr(aten, n))


def heads_mixed(ctx, node: fx.Node) -> tuple[fx.Node, int] | None:
    """(the scores or weights, k) where ``node`` mixes each (query, key)
    pair's values across a constant axis of k, the pairs kept where they
    are: a learned k×k matrix contracting it (talking heads, re-attention:
    an einsum over the heads, a 1×1 convolution with the heads as its
    channels), or a norm over it.  The site checks that k is its heads."""
    t, pk = ctx.traced, packet(node)
    source = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
    x = t.shape(source) if source is not None else None
    if pk in _NORMS and x and len(node.args) > 1 and isinstance(node.args[1], (list, tuple)):
        k = as_int(sympy.Mul(*x[len(x) - len(node.args[1]):]))
        return (source, k) if k else None
    if pk is aten.convolution and x and len(x) > 2:
        kernel = t.shape(node.args[1]) if isinstance(node.args[1], fx.Node) else None
        out = t.shape(node)
        if kernel and out and all(as_int(k) == 1 for k in kernel[2:]) and \
                tuple(out) == tuple(x) and as_int(x[1]):
            return source, as_int(x[1])
        return None
    if pk not in MATMUL_OPS:
        return None
    left, right = ctx.product_operands(node)
    if ctx.is_weight(left) == ctx.is_weight(right):
        return None
    operand, weight = (right, left) if ctx.is_weight(left) else (left, right)
    x, w = t.shape(operand), t.shape(weight)
    if not x or not w or len(x) < 2 or len(w) < 2:
        return None
    k = as_int(x[-1] if operand is left else x[-2])
    return (operand, k) if k and as_int(w[-1]) == as_int(w[-2]) == k else None


def pairs_convolved(ctx, node: fx.Node) -> fx.Node | None:
    """The scores ``node`` convolves over their (queries, keys) plane with
    a learned kernel, each pair from its neighbours (multi-token attention's
    key-query convolution), the output as many pairs as the scores before
    any padding; None for any other op."""
    if packet(node) is not aten.convolution or not ctx.is_weight(node.args[1]):
        return None
    source = node.args[0]
    before = source.args[0] if packet(source) is aten.constant_pad_nd else source
    x, out = ctx.traced.shape(before), ctx.traced.shape(node)
    kernel = ctx.traced.shape(node.args[1])
    if not x or not out or not kernel or len(x) != 4 or tuple(out) != tuple(x) or \
            all(as_int(k) == 1 for k in kernel[2:]):
        return None
    return source


def heads_and_queries(ctx, shape, dim: int, q_operand: fx.Node | None = None):
    """Heads and query length of the scores of ``shape`` (softmax over
    ``dim``), their queries coming from ``q_operand``."""
    rows = sympy.Mul(*shape) / shape[dim]
    per_batch = settled(simplified(rows / B)) if B in rows.free_symbols else rows
    heads = projection_heads(ctx, q_operand) if q_operand is not None else None
    if heads and _divides(heads, per_batch):
        return heads, settled(simplified(per_batch / heads))
    if len(shape) >= 4 and as_int(shape[-3]) and B in sympy.Mul(*shape[:-3]).free_symbols:
        # a constant axis before the (queries × keys) matrix: (B·windows, H, w, w)
        heads = as_int(shape[-3])
        return heads, settled(simplified(per_batch / heads))
    outer = sympy.Mul(*shape[:-2])
    heads = as_int(simplified(outer / B)) if B in outer.free_symbols else None
    if heads:  # the axes before the matrix are batch × heads: (B·H, N_q, N_k)
        return heads, settled(simplified(per_batch / heads))
    fixed = _at_one_length(ctx, rows, shape, dim)
    return fixed if fixed is not None else split_rows(rows)


def _at_one_length(ctx, rows, shape, dim: int):
    """In a trace at one length and batch (every size a number), the rows
    cannot say batch from heads from queries by their symbols: the queries
    are the axis before the keys, the batch the trace's, and the heads what
    is left.  None where the sizes are expressions or do not divide."""
    if ctx.traced.replacements:  # a symbolic trace: its batch is a symbol, not the hint
        return None
    n_q = as_int(shape[dim - 1]) if dim >= 1 else None
    total, batch = as_int(rows), ctx.traced.batch_hint or 1
    if total is None or not n_q or total % (batch * n_q):
        return None
    return total // (batch * n_q), sympy.Integer(n_q)


def _divides(heads: int, per_batch: sympy.Expr) -> bool:
    coeff, _ = sympy.factor(per_batch).as_coeff_Mul()
    return bool(coeff.is_Integer) and int(coeff) % heads == 0


def projection_heads(ctx, q_operand: fx.Node, limit: int = 32) -> int | None:
    """Heads as the projection that made the queries says: None when the
    operand does not lead back to a product with a weight through ops that
    keep each token's features together."""
    t = ctx.traced
    q_shape = t.shape(q_operand)
    head_dim = as_int(q_shape[-1]) if q_shape else None
    node = q_operand
    for _ in range(limit):
        if not isinstance(node, fx.Node) or node.op != "call_function":
            return None
        if is_product(node):
            return _heads_of(ctx, node, q_shape, head_dim)
        if _pointwise_convolution(ctx, node):  # a projection of each position (Twins)
            return _heads_from_width(ctx, node, as_int(t.shape(node)[1]), q_shape, head_dim)
        if (packet(node) in GATHER_OPS or _pools_rows(t, node)) and \
                isinstance(node.args[0], fx.Node):
            # rows picked (routing, sorting) or pooled (landmarks, coarser
            # levels): the heads are those of the rows it picks or pools from
            source = t.shape(node.args[0])
            if not source or as_int(source[-1]) != head_dim:
                return None
            q_shape, node = source, node.args[0]
            continue
        node = _carried(ctx, node)
    return None


def _pools_rows(t, node: fx.Node) -> bool:
    """A sum or mean over axes other than the features (pooled rows)."""
    if packet(node) not in (aten.sum, aten.mean) or len(node.args) < 2:
        return False
    shape = t.shape(node.args[0]) if isinstance(node.args[0], fx.Node) else None
    dims = node.args[1] if isinstance(node.args[1], (list, tuple)) else [node.args[1]]
    return bool(shape) and all(isinstance(d, int) and d % len(shape) != len(shape) - 1
                               for d in dims)


def _heads_of(ctx, proj: fx.Node, q_shape, head_dim: int | None) -> int | None:
    """Heads from a projection whose weight is one matrix (features in ×
    out): its last axis holds every head's features.  Weights with a head
    axis of their own ((H, D, d) through einsum) say nothing here: None."""
    out = ctx.traced.shape(proj)
    width = as_int(out[-1]) if out else None
    # the weight is the right factor (x·Wᵀ), or the left one (Wx)
    weight = next((w for w in reversed(ctx.product_operands(proj)) if ctx.is_weight(w)), None)
    if weight is None or _stored_rank(ctx, weight) != 2:
        return None
    return _heads_from_width(ctx, proj, width, q_shape, head_dim)


def _heads_from_width(ctx, proj: fx.Node, width: int | None, q_shape,
                      head_dim: int | None) -> int | None:
    """Heads from a projection that writes ``width`` features a position:
    the queries hold as many values as it wrote, laid out otherwise."""
    out = ctx.traced.shape(proj)
    if not out or not width or not head_dim:
        return None
    ratio = settled(simplified(sympy.Mul(*q_shape) / sympy.Mul(*out)))
    heads = sympy.nsimplify(ratio * width / head_dim)
    return int(heads) if heads.is_Integer and heads > 0 else None


def _pointwise_convolution(ctx, node: fx.Node) -> bool:
    """A convolution with a weight whose kernel is 1 everywhere (a 1×1
    Conv2d): a projection of each position's channels."""
    if packet(node) is not aten.convolution or not isinstance(node.args[1], fx.Node):
        return False
    kernel = ctx.traced.shape(node.args[1])
    return bool(kernel) and len(kernel) > 2 and ctx.is_weight(node.args[1]) and \
        all(as_int(k) == 1 for k in kernel[2:])


def _stored_rank(ctx, node: fx.Node) -> int | None:
    """Dimensions of the parameter a weight operand is (seen through views)."""
    while isinstance(node, fx.Node) and node.op == "call_function":
        node = node.args[0]
    shape = ctx.traced.shape(node) if isinstance(node, fx.Node) else None
    return len(shape) if shape is not None else None


def _carried(ctx, node: fx.Node) -> fx.Node | None:
    """The input that carries the activation's features through ``node``."""
    if node.target is getitem or is_view(node):
        arg = node.args[0]
        return arg if isinstance(arg, fx.Node) else None
    if packet(node) not in _CARRY_OPS:
        return None
    if packet(node) is aten.cat:
        parts = node.args[0]
        return parts[0] if parts and isinstance(parts[0], fx.Node) else None
    out = ctx.traced.shape(node)
    for arg in node.args:
        shape = ctx.traced.shape(arg) if isinstance(arg, fx.Node) else None
        if shape is not None and out is not None and len(shape) == len(out) and \
                simplified(sympy.Mul(*shape) - sympy.Mul(*out)) == 0:
            return arg
    return None
