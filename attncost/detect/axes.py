"""Where an axis of one tensor is in another made from it by views and
elementwise ops: the queries and keys of Q·Kᵀ followed to the softmax.

Most code keeps the scores (…, queries, keys), but an einsum may lay them
out otherwise: ``einsum('ibhd,jbhd->ijbh', q, k)`` with the sequence first
gives (queries, keys, batch, heads), its softmax over dim 1.  A view is
followed by the spans its axes cover in the flat order (an axis keeps its
place where some output axis covers the same span); a permute, transpose,
(un)squeeze by their arguments; an elementwise op by broadcasting from the
right."""
from __future__ import annotations

import sympy
import torch
import torch.fx as fx

from ..expr import simplified
from ..rules.ops import packet

aten = torch.ops.aten

_FLAT_VIEWS = frozenset(getattr(aten, n) for n in ("view", "_unsafe_view", "reshape",
                                                    "_reshape_alias", "unflatten", "flatten")
                        if hasattr(aten, n))

#: Views that read the memory in another layout (diagonals, windows): an
#: axis there is no axis of the input.
_RELAYING = frozenset(getattr(aten, n) for n in ("as_strided", "diagonal", "unfold")
                      if hasattr(aten, n))


def _shape(node) -> tuple | None:
    val = node.meta.get("val") if isinstance(node, fx.Node) else None
    return tuple(val.shape) if isinstance(val, torch.Tensor) else None


def _spans(shape) -> list[tuple[sympy.Expr, sympy.Expr]]:
    """(start, end) of each axis in the flat order, as products of the sizes after it."""
    spans, inner = [], sympy.Integer(1)
    for size in reversed(shape):
        outer = inner * sympy.sympify(size)
        spans.append((inner, outer))
        inner = outer
    return spans[::-1]


def _through_view(source, out, axis: int) -> int | None:
    span = _spans(source)[axis]
    for k, other in enumerate(_spans(out)):
        if simplified(other[0] - span[0]) == 0 and simplified(other[1] - span[1]) == 0:
            return k
    return None


def axis_through(node: fx.Node, source: fx.Node, axis: int) -> int | None:
    """The axis of ``node``'s output that ``axis`` of its input ``source``
    becomes; None where it is merged, split or dropped."""
    src, out = _shape(source), _shape(node)
    if src is None or out is None or not 0 <= axis < len(src):
        return None
    pk, args = packet(node), node.args
    if pk is aten.permute:
        dims = [d % len(src) for d in args[1]]
        return dims.index(axis)
    if pk is aten.transpose:
        a, b = args[1] % len(src), args[2] % len(src)
        return b if axis == a else a if axis == b else axis
    if pk is aten.t:
        return len(src) - 1 - axis if len(src) == 2 else axis
    if pk is aten.unsqueeze:
        at = args[1] % len(out)
        return axis + 1 if axis >= at else axis
    if pk in _FLAT_VIEWS or (pk is aten.squeeze and len(out) != len(src)):
        return _through_view(src, out, axis)
    if pk in _RELAYING:
        return None
    if len(out) == len(src):  # elementwise, a slice, a pad, a gather: the axes stay
        return axis
    if len(out) > len(src) and (pk is aten.expand or _pointwise(node)):  # broadcast
        return axis + len(out) - len(src)  # from the right
    return None


def _pointwise(node: fx.Node) -> bool:
    return torch.Tag.pointwise in getattr(node.target, "tags", ())


def follow_axes(path: list[fx.Node], start: fx.Node, axes: tuple[int, ...]) -> tuple | None:
    """``axes`` of ``start`` followed along ``path`` (each node made from the
    one before it, the first from ``start``): where they end, or None."""
    previous, current = start, list(axes)
    for node in path:
        current = [axis_through(node, previous, a) for a in current]
        if any(a is None for a in current):
            return None
        previous = node
    return tuple(current)
