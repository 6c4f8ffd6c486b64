"""Sizes that pass through a 0-d tensor keep their symbolic value.

Code often computes with a length as a tensor: Longformer's
``torch.div(seq_len, 2 * w, rounding_mode="trunc")`` makes a 0-d tensor of
the number of chunks, then uses it as a size.  On fake tensors its value is
unknown, so reading it back (``.item()``, or a size argument that takes a
tensor) makes a fresh unbacked symbol, and the first check on it ends the
trace with GuardOnDataDependentSymNode, although the value is a function of
N that Python arithmetic would have kept.

``sizes_through_tensors()`` watches torch functions called while a model is
traced: when one makes a 0-d integer tensor from sizes (ints and SymInts,
or 0-d tensors already known this way) by an operation of ``_ARITHMETIC``,
the same arithmetic is done on the SymInts and stored as the tensor's
``item_memo``, which fake tensors return when the value is read; such a
tensor used as a slice bound is replaced by its size (Python's slicing
would read it as an int, fixing it to a number).  ``torch.tensor(n)`` of a
SymInt (LongT5's count of global tokens, a fill value for ``where``) would
fix it to a number as well; it is built with ``scalar_tensor``, which keeps
it a size.  Values
that come from data (a mask's ``any()``, ``nonzero``) are not touched.
"""
from __future__ import annotations

import operator
from typing import Callable

import torch
from torch._subclasses.fake_tensor import FakeTensor
from torch.fx.experimental.symbolic_shapes import statically_known_true
from torch.overrides import TorchFunctionMode

_T = torch.Tensor


def _nonnegative(x) -> bool:
    return isinstance(x, int) and x >= 0 or \
        isinstance(x, torch.SymInt) and statically_known_true(x >= 0)


def _div(a, b, *, rounding_mode=None):
    """torch.div on sizes: floor, or trunc where it equals floor."""
    if not isinstance(b, int) or b <= 0:
        return None
    if rounding_mode == "floor" or rounding_mode == "trunc" and _nonnegative(a):
        return a // b
    return None


def _swap(fn: Callable) -> Callable:
    return lambda a, b: fn(b, a)


_ARITHMETIC: dict[Callable, Callable] = {
    torch.tensor: lambda a, **kw: a,
    torch.as_tensor: lambda a, **kw: a,
    torch.scalar_tensor: lambda a, **kw: a,
    torch.div: _div, _T.div: _div, torch.true_divide: lambda a, b: None,
    torch.floor_divide: operator.floordiv, _T.floor_divide: operator.floordiv,
    _T.__floordiv__: operator.floordiv, _T.__rfloordiv__: _swap(operator.floordiv),
    torch.remainder: operator.mod, _T.remainder: operator.mod,
    _T.__mod__: operator.mod, _T.__rmod__: _swap(operator.mod),
    torch.add: operator.add, _T.add: operator.add, _T.__add__: operator.add,
    _T.__radd__: operator.add,
    torch.sub: operator.sub, _T.sub: operator.sub, _T.__sub__: operator.sub,
    _T.__rsub__: _swap(operator.sub), torch.rsub: _swap(operator.sub),
    torch.mul: operator.mul, _T.mul: operator.mul, _T.__mul__: operator.mul,
    _T.__rmul__: operator.mul,
    torch.neg: operator.neg, _T.neg: operator.neg, _T.__neg__: operator.neg,
}
_KEYWORDS = {"rounding_mode"}


def _size_of(x):
    """An int or SymInt for a size argument; None for anything else."""
    if isinstance(x, bool):
        return None
    if isinstance(x, (int, torch.SymInt)):
        return x
    if isinstance(x, torch.Tensor) and x.dim() == 0 and not x.dtype.is_floating_point:
        return getattr(x, "item_memo", None)
    return None


def _value(func, args, kwargs):
    """The result of ``func`` on sizes, computed on the sizes; None otherwise."""
    rule = _ARITHMETIC.get(func)
    if rule is None:
        return None
    sizes = [_size_of(a) for a in args]
    if not sizes or any(s is None for s in sizes):
        return None
    if not any(isinstance(s, torch.SymInt) for s in sizes):
        return None  # constants need no help
    extra = {k: v for k, v in kwargs.items() if k in _KEYWORDS}
    value = rule(*sizes, **extra)
    return value if isinstance(value, (int, torch.SymInt)) else None


def _memo_bound(x):
    """A slice bound: a 0-d tensor known as a size becomes that size."""
    if isinstance(x, torch.Tensor) and x.dim() == 0 and not x.dtype.is_floating_point:
        memo = getattr(x, "item_memo", None)
        if isinstance(memo, torch.SymInt):
            return memo
    return x


def _slices_with_sizes(index):
    """``x[:, :t]`` with ``t`` a 0-d tensor reads ``t`` as an int, which
    fixes it to a number; its known size is passed instead."""
    def one(i):
        if isinstance(i, slice):
            return slice(_memo_bound(i.start), _memo_bound(i.stop), _memo_bound(i.step))
        return i
    return tuple(one(i) for i in index) if isinstance(index, tuple) else one(index)


_INDEXING = (_T.__getitem__, _T.__setitem__)
_FROM_DATA = (torch.tensor, torch.as_tensor)


def _tensor_of_a_size(data, dtype=None, device=None, **_):
    """``torch.tensor`` of one SymInt kept symbolic; None for anything else
    (a list of sizes is left as torch makes it: its ``tolist()`` must give
    numbers back)."""
    if not isinstance(data, torch.SymInt):
        return None
    return torch.scalar_tensor(data, dtype=dtype or torch.int64, device=device)


class _SizesThroughTensors(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _INDEXING and len(args) >= 2:
            args = (args[0], _slices_with_sizes(args[1])) + tuple(args[2:])
        out = None
        if func in _FROM_DATA and len(args) == 1:
            out = _tensor_of_a_size(args[0], **kwargs)
        if out is None:
            out = func(*args, **kwargs)
        if isinstance(out, torch.Tensor) and out.dim() == 0 and not out.dtype.is_floating_point \
                and out.dtype != torch.bool and isinstance(out, FakeTensor):
            try:
                value = _value(func, args, kwargs)
            except Exception:  # noqa: BLE001 - arithmetic the sizes do not allow: leave it
                value = None
            if value is not None:
                out.item_memo = value
        return out


def sizes_through_tensors() -> TorchFunctionMode:
    """The mode, entered while a model is traced (see the module's docstring)."""
    return _SizesThroughTensors()
