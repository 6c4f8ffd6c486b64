"""einx calls traced with their sizes symbolic.

einx (used by x-transformers and others) compiles each call into Python
code whose sizes are literal ints: it reads a tensor's shape with
``int(dim)``, which on a symbolic size fixes N (or B) to the traced value,
and writes ``torch.reshape(a, (1, 128, 128))`` into the code it runs.  A
trace through einx therefore holds at one length only.

While a model is traced, ``einx_symbolic()`` gives einx what it needs, ints,
and puts the symbolic sizes back into the code it compiles: the call is
compiled twice, once with every symbolic size at its traced value and once
with the size of symbol k multiplied by the k-th prime of ``_PRIMES``.  An
int literal that is the same in both codes is a constant; one that differs
is ``c · Π s_k^e_k`` with the exponents read from the ratio of the two
values (a product of the primes) and ``c`` from the first.  That literal is
replaced by the expression over the tensors' own SymInts, and the code is
run on the fake tensors.  A call whose two codes differ in structure, whose
ratio is not such a product, or whose code needs constants of einx's, runs
as einx runs it (and may fix the length, which tracing.unroll reports).
einx's cache only ever sees ordinary int shapes, so nothing compiled here is
reused outside the trace.
"""
from __future__ import annotations

import ast
import builtins
import contextlib
import sys
import types
from fractions import Fraction
from typing import Iterator

import torch

#: One prime per distinct symbolic size of a call (a call with more sizes runs as einx runs it).
_PRIMES = (1009, 1013, 1019, 1021, 1031, 1033, 1039, 1049)
_DIMS = "_attncost_dims"


def _symbolic_dims(tensor) -> list | None:
    """The tensor's sizes: a SymInt where the size is symbolic (with a
    hint), an int otherwise; None when a size has no hint (unbacked)."""
    dims = []
    for d in tensor.shape:
        if isinstance(d, torch.SymInt) and d.node.expr.free_symbols:
            if not d.node.has_hint():
                return None
            dims.append(d)
        else:
            dims.append(int(d))
    return dims


class _Calls:
    """What the patched pieces of einx tell each other within one call."""

    def __init__(self):
        # id(tracer) -> (the tracer, kept so that its id is not reused; its sizes)
        self.made: dict[int, tuple] = {}

    def dims(self, tracer) -> list | None:
        entry = self.made.get(id(tracer))
        return entry[1] if entry is not None and entry[0] is tracer else None


def _patched_to_tracer(original, calls: _Calls, tracer_mod):
    def to_tracer(x, backend, name):
        value = getattr(x, "value", None)
        if isinstance(value, torch.Tensor) and backend.is_supported_tensor(value):
            dims = _symbolic_dims(value)
            if dims is not None and any(isinstance(d, torch.SymInt) for d in dims):
                hints = tuple(d.node.hint if isinstance(d, torch.SymInt) else d for d in dims)
                made = tracer_mod.signature.classical.Tensor(None, shape=hints)
                calls.made[id(made)] = (made, dims)
                return made
        return original(x, backend, name)
    return to_tracer


def _symbols_of(tracers, calls: _Calls) -> dict:
    """The distinct symbolic sizes of a call's tensors: expr -> (index, SymInt)."""
    found: dict = {}
    for t in tracers:
        for d in calls.dims(t) or ():
            if isinstance(d, torch.SymInt) and d.node.expr not in found:
                found[d.node.expr] = (len(found), d)
    return found


def _scaled(tracers, calls: _Calls, symbols: dict, tracer_mod) -> list:
    """The tracers with symbol k's sizes multiplied by the k-th prime."""
    out = []
    for t in tracers:
        dims = calls.dims(t)
        if dims is None:
            out.append(t)
            continue
        shape = tuple(d.node.hint * _PRIMES[symbols[d.node.expr][0] % len(_PRIMES)]
                      if isinstance(d, torch.SymInt) else d for d in dims)
        out.append(tracer_mod.signature.classical.Tensor(None, shape=shape))
    return out


def _size_expression(v1: int, v2: int, hints: list[int]) -> ast.expr | None:
    """``v1`` as an expression over the symbols, from its scaled value ``v2``."""
    if v1 == 0 or v2 % v1:
        return None
    ratio, factors, divisor = v2 // v1, [], 1
    for k, p in enumerate(_PRIMES[:len(hints)]):
        while ratio % p == 0:
            ratio //= p
            factors.append(f"{_DIMS}[{k}]")
            divisor *= hints[k]
    if ratio != 1 or not factors:
        return None
    coef = Fraction(v1, divisor)
    text = "*".join(factors)
    if coef.numerator != 1:
        text = f"({text})*{coef.numerator}"
    if coef.denominator != 1:
        text = f"({text})//{coef.denominator}"
    return ast.parse(text, mode="eval").body


def _is_int(node) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is int


class _Zeroed(ast.NodeTransformer):
    def visit_Constant(self, node):
        return ast.Constant(0) if _is_int(node) else node


def _structure(tree) -> str:
    return ast.dump(_Zeroed().visit(ast.parse(ast.unparse(tree))))


def _needs_only_torch(tree: ast.Module) -> bool:
    """The code reads no name but its own, its arguments, torch and builtins."""
    bound = {"torch"} | set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            bound.add(node.name)
            bound.update(a.arg for a in node.args.args)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
    return all(n.id in bound for n in ast.walk(tree)
               if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load))


def symbolic_code(code1: str, code2: str, sizes: list) -> object | None:
    """The function of ``code1`` with its symbolic literals as expressions
    over ``sizes`` (SymInts, in prime order), or None where that cannot be
    read from the two codes."""
    t1, t2 = ast.parse(code1), ast.parse(code2)
    if _structure(t1) != _structure(t2) or not _needs_only_torch(t1):
        return None
    hints = [s.node.hint for s in sizes]
    pairs = [(a, b) for a, b in zip(ast.walk(t1), ast.walk(t2)) if _is_int(a) and _is_int(b)]
    replace = {}
    for a, b in pairs:
        if a.value != b.value:
            made = _size_expression(a.value, b.value, hints)
            if made is None:
                return None
            replace[id(a)] = made

    class _Sizes(ast.NodeTransformer):
        def visit_Constant(self, node):
            return replace.get(id(node), node)

    tree = ast.fix_missing_locations(_Sizes().visit(t1))
    defs = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    if len(defs) != 1:
        return None
    namespace = {_DIMS: list(sizes)}
    exec(compile(tree, "<einx, symbolic sizes>", "exec"), namespace)  # noqa: S102 - einx's own code
    return namespace[defs[0]]


def _patched_construct(original, calls: _Calls, tracer_mod):
    """einx's cached graph construction, made symbolic where a call's
    tensors have symbolic sizes."""
    def construct(args, kwargs):
        tracers = list(args) + list(kwargs.values())
        symbols = _symbols_of(tracers, calls)
        scaled = _scaled(tracers, calls, symbols, tracer_mod) if symbols else tracers
        for t in tracers:
            calls.made.pop(id(t), None)
        if not symbols or len(symbols) > len(_PRIMES):
            return original(args=args, kwargs=kwargs)
        function, code1 = original(args=args, kwargs=kwargs)
        n_args = len(args)
        try:
            _, code2 = original(args=scaled[:n_args],
                                kwargs=dict(zip(kwargs, scaled[n_args:])))
        except Exception:  # noqa: BLE001 - einx refuses the scaled sizes: run as einx does
            return function, code1
        sizes = [s for _, s in sorted(symbols.values(), key=lambda x: x[0])]
        made = symbolic_code(code1, code2, sizes)
        return (made, code1) if made is not None else (function, code1)
    return construct


def _api_inners(api_mod) -> list:
    """Every einx operation built by einx's ``api`` (its ``inner`` closures)."""
    codes = {c for f in (api_mod._api_withoutbackend, api_mod._api_withbackend)
             for c in f.__code__.co_consts if isinstance(c, type(f.__code__))
             and c.co_name == "inner"}
    found = {}
    for name, module in list(sys.modules.items()):
        if not (name == "einx" or name.startswith("einx.")) or module is None:
            continue
        for value in list(vars(module).values()):
            if isinstance(value, types.FunctionType) and value.__code__ in codes \
                    and value.__closure__:
                found[id(value)] = value
    return list(found.values())


@contextlib.contextmanager
def einx_symbolic() -> Iterator[None]:
    """einx calls keep N and B symbolic while a model is traced (see the
    module's docstring); nothing when einx is not imported."""
    if "einx" not in sys.modules:
        yield
        return
    try:
        api_mod = sys.modules.get("einx._src.frontend.api") or \
            __import__("einx._src.frontend.api", fromlist=["_"])
        tracer_mod = __import__("einx._src.tracer", fromlist=["_"])
    except Exception:  # noqa: BLE001 - an einx laid out otherwise is traced as it is
        yield
        return
    calls = _Calls()
    cells = []
    for inner in _api_inners(api_mod):
        names = inner.__code__.co_freevars
        if "construct_graph_with_cache" in names:
            cell = inner.__closure__[names.index("construct_graph_with_cache")]
            cells.append((cell, cell.cell_contents))
    original_to_tracer = api_mod._to_tracer
    api_mod._to_tracer = _patched_to_tracer(original_to_tracer, calls, tracer_mod)
    for cell, original in cells:
        cell.cell_contents = _patched_construct(original, calls, tracer_mod)
    try:
        yield
    finally:
        api_mod._to_tracer = original_to_tracer
        for cell, original in cells:
            cell.cell_contents = original
        calls.made.clear()
