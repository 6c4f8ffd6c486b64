"""Sizes that pass through Python's ``int()`` and ``float()`` stay sizes.

Model code converts sizes to Python numbers: segment-anything's relative
positions size a table ``int(2 * max(q_size, k_size) - 1)``, and vision
code writes ``int(h * scale)``.  On a SymInt, ``int()`` asks for the value
and fixes it: the trace then holds at the traced length only, although the
code computes the same function of N at every length.  torch.compile does
not fix it: dynamo reads ``int(x)`` of a symbolic size as ``torch.sym_int``
and ``float(x)`` as ``torch.sym_float``, which keep the expression.

``numbers_kept_symbolic(model)`` does the same while a model is traced.  In
the modules that define the model's classes (its own code, not torch's),
each function whose source calls ``int(...)`` or ``float(...)`` runs, for
the duration, code compiled from the same source with those calls made
through ``sym_int`` and ``sym_float``; the names themselves are untouched,
so ``dtype=int`` and ``isinstance(x, int)`` mean what they meant.  A number
made from data (``tensor.item()``) is not a symbolic size, and is read as
before.

``sizes_hashable()`` lets a size be a key: Lumina2 asks ``len(set(lengths))``
of each sample's length, and caches (``functools.lru_cache``) take sizes
as arguments; torch refuses to hash a SymInt.  While a model is traced,
the sizes of the same symbols hash alike, within that trace only, so a set
or a dict that holds two of them compares them as Python compares keys
that share a hash: equal at the traced length, a guard that they stay
equal; different, a guard that rules out the lengths where they would meet
(``len({n, 2*n - 64})`` holds but at N = 64).  Sizes only hashed, never held
together, are never compared: the count and the width of einops' blocks,
``(b, n, s)`` keys of its shape cache, do not rule out the length where
n = s.  A size of the batch and one of the length hash apart: "N ≠ B" says
nothing a user can act on.
"""
from __future__ import annotations

import ast
import contextlib
import functools
import inspect
import itertools
import types
from typing import Iterator

import torch
from torch.fx.experimental.symbolic_shapes import free_unbacked_symbols

_CALLS = {"int": "__attncost_sym_int__", "float": "__attncost_sym_float__"}
_SYMBOLIC = (torch.SymInt, torch.SymFloat)


def _sym_int(*args, **kwargs):
    if len(args) == 1 and not kwargs and isinstance(args[0], _SYMBOLIC):
        return torch.sym_int(args[0])
    return int(*args, **kwargs)


def _sym_float(*args, **kwargs):
    if len(args) == 1 and not kwargs and isinstance(args[0], _SYMBOLIC):
        return torch.sym_float(args[0])
    return float(*args, **kwargs)


_HELPERS = {_CALLS["int"]: _sym_int, _CALLS["float"]: _sym_float}


class _CallsRenamed(ast.NodeTransformer):
    """``int(x)`` -> ``__attncost_sym_int__(x)``, and so for float."""

    def visit_Call(self, node: ast.Call) -> ast.Call:
        self.generic_visit(node)
        if isinstance(node.func, ast.Name) and node.func.id in _CALLS:
            node.func = ast.copy_location(ast.Name(_CALLS[node.func.id], ast.Load()), node.func)
        return node


def _codes(code: types.CodeType) -> Iterator[types.CodeType]:
    """``code`` and every code object nested in it."""
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


@functools.lru_cache(maxsize=None)
def _recompiled(module: types.ModuleType) -> dict[tuple[str, int], types.CodeType]:
    """The module's code objects compiled with the calls renamed, by
    (qualified name, first line); {} where its source calls neither."""
    try:
        source = inspect.getsource(module)
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return {}
    if not any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in _CALLS
               for n in ast.walk(tree)):
        return {}
    tree = ast.fix_missing_locations(_CallsRenamed().visit(tree))
    code = compile(tree, inspect.getsourcefile(module) or "<model>", "exec")
    return {(c.co_qualname, c.co_firstlineno): c for c in _codes(code)}


def _functions(module: types.ModuleType) -> Iterator[types.FunctionType]:
    """The functions and methods ``module`` defines (decorators unwrapped)."""
    def unwrapped(obj):
        for f in (obj, getattr(obj, "__func__", None), getattr(obj, "fget", None)):
            while f is not None:
                if isinstance(f, types.FunctionType) and f.__module__ == module.__name__:
                    yield f
                f = getattr(f, "__wrapped__", None)

    for obj in list(vars(module).values()):
        if isinstance(obj, type) and obj.__module__ == module.__name__:
            for member in list(vars(obj).values()):
                yield from unwrapped(member)
        else:
            yield from unwrapped(obj)


def _model_code(model: torch.nn.Module) -> list[types.ModuleType]:
    """The modules that define the classes of ``model``'s submodules, torch's
    own excepted."""
    found = {}
    for m in model.modules():
        module = inspect.getmodule(type(m))
        if module is not None and module.__name__.split(".")[0] != "torch":
            found[module.__name__] = module
    return list(found.values())


@contextlib.contextmanager
def numbers_kept_symbolic(model: torch.nn.Module) -> Iterator[None]:
    """Run the model's own functions with ``int()`` and ``float()`` of a size
    kept symbolic (see the module's docstring)."""
    swapped: list[tuple[types.FunctionType, types.CodeType]] = []
    helpers: list[tuple[types.ModuleType, str]] = []
    try:
        for module in _model_code(model):
            codes = _recompiled(module)
            if not codes:
                continue
            for name, helper in _HELPERS.items():
                if name not in vars(module):
                    setattr(module, name, helper)
                    helpers.append((module, name))
            for f in set(_functions(module)):
                new = codes.get((f.__code__.co_qualname, f.__code__.co_firstlineno))
                if new is not None and new.co_freevars == f.__code__.co_freevars:
                    swapped.append((f, f.__code__))
                    f.__code__ = new
        yield
    finally:
        for f, code in swapped:
            f.__code__ = code
        for module, name in helpers:
            delattr(module, name)


_TRACES = itertools.count()


def _hint(node) -> int | None:
    """A size's value at the traced length; a value read from data in it
    is fixed first, as a branch on it would fix it (tracing.data_values)."""
    if node.hint is not None:
        return node.hint
    env = node.shape_env
    for symbol in free_unbacked_symbols(node.expr):
        env.evaluate_expr(symbol)
    return env.size_hint(node.expr, allow_none=True)


@contextlib.contextmanager
def sizes_hashable() -> Iterator[None]:
    """SymInts hashable for the duration (see the module's docstring).  A
    cache filled in this trace is never hit by another: the hash names it."""
    trace = next(_TRACES)
    unhashable = torch.SymInt.__hash__

    def __hash__(self: torch.SymInt) -> int:
        node = self.node
        value = node.maybe_as_int()
        if value is not None:
            return hash(value)
        if node.is_nested_int() or _hint(node) is None:
            return unhashable(self)
        # one hash for the sizes of the same symbols: a container compares
        # those it holds together (a guard either way), and only those
        symbols = tuple(sorted(str(x) for x in node.expr.free_symbols))
        return hash(("size in trace", trace, symbols))

    torch.SymInt.__hash__ = __hash__
    try:
        yield
    finally:
        torch.SymInt.__hash__ = unhashable
