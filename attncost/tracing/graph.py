"""A traced model: an aten graph whose shapes are expressions in N and B."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import sympy
import torch
import torch.fx as fx
from torch.fx.experimental.symbolic_shapes import ShapeEnv
from torch.utils._pytree import tree_flatten


@functools.lru_cache(maxsize=None)
def _torch_functions() -> dict:
    """torch's own SymPy functions (a shape env writes sizes in them) as
    plain SymPy, so that every expression prints as text ``sympify`` reads
    back and simplifies with SymPy's rules."""
    from torch.utils._sympy import functions as F

    def div(a, b):
        return a / b

    return {
        F.FloorDiv: lambda a, b: sympy.floor(a / b), F.IntTrueDiv: div, F.FloatTrueDiv: div, F.CleanDiv: div,
        F.CeilToInt: sympy.ceiling, F.FloorToInt: sympy.floor, F.CeilDiv: lambda a, b: sympy.ceiling(a / b),
        F.TruncToInt: lambda x: sympy.sign(x) * sympy.floor(abs(x)),
        F.PowByNatural: sympy.Pow, F.FloatPow: sympy.Pow,
        F.PythonMod: sympy.Mod, F.Mod: sympy.Mod,
        F.ModularIndexing: lambda x, d, m: sympy.Mod(sympy.floor(x / d), m),
        F.Identity: lambda x: x, F.ToFloat: lambda x: x,
    }


@functools.lru_cache(maxsize=8192)
def plain(expr: sympy.Basic) -> sympy.Basic:
    """``expr`` with torch's SymPy functions replaced by SymPy's own (Min and
    Max are SymPy's already)."""
    if not isinstance(expr, sympy.Basic) or not expr.atoms(sympy.Function):
        return expr
    table = _torch_functions()
    for fn, rule in table.items():
        if expr.has(fn):
            expr = expr.replace(lambda e, fn=fn: isinstance(e, fn), lambda e, rule=rule: rule(*e.args))
    return expr


@dataclass
class TracedModel:
    """An aten graph whose shapes are expressions in N and B."""

    graph_module: fx.GraphModule
    shape_env: ShapeEnv
    #: shape-env symbol -> expression in N and B
    replacements: dict[sympy.Symbol, sympy.Expr]
    #: placeholder name -> "parameter" | "buffer" | "input"
    placeholder_kinds: dict[str, str]
    #: human-readable conditions on N and B under which the graph holds
    guards: list[str] = field(default_factory=list)
    #: (lowest N, highest N or None) the trace holds for
    n_range: tuple[int, int | None] = (1, None)
    #: the batches it holds for: a trace with B a plain number, that one
    batch_range: tuple[int, int | None] = (1, None)
    #: the N and B the graph was traced at (its shapes' hints)
    seq_len_hint: int = 0
    batch_hint: int = 0
    #: each node's output bytes, computed once: memory, alignment and the
    #: report all ask, and the graph does not change once traced
    _bytes: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def nodes(self):
        return self.graph_module.graph.nodes

    def expr(self, value: Any) -> sympy.Expr:
        """A SymInt, int or sympy expression as an expression in N and B."""
        if isinstance(value, torch.SymInt):
            return plain(sympy.sympify(value.node.expr).xreplace(self._all_replacements))
        if isinstance(value, sympy.Basic):
            return plain(value.xreplace(self._all_replacements))
        return sympy.Integer(int(value))

    def shape(self, node: fx.Node) -> tuple[sympy.Expr, ...] | None:
        """The shape of a node's tensor value in N and B, or None."""
        val = node.meta.get("val") if isinstance(node, fx.Node) else None
        if isinstance(val, torch.Tensor):
            return tuple(self.expr(s) for s in val.shape)
        return None

    def output_bytes(self, node: fx.Node) -> list[sympy.Expr]:
        """Bytes of each tensor a node produces, in the order a dispatch mode sees them."""
        if node not in self._bytes:
            out = []
            for t in tensor_outputs(node):
                numel = sympy.Mul(*[self.expr(s) for s in t.shape]) if t.dim() else sympy.Integer(1)
                out.append(sympy.expand(numel * t.element_size()))
            self._bytes[node] = tuple(out)
        return list(self._bytes[node])

    @functools.cached_property
    def _all_replacements(self) -> dict:
        """Input symbols, and the symbols the shape env unified with them."""
        out = dict(self.replacements)
        for sym, target in self.shape_env.replacements.items():
            out.setdefault(sym, sympy.sympify(target).xreplace(self.replacements))
        return out

    def module_path(self, node: fx.Node) -> str:
        """The innermost module that executed this node ('' for the root)."""
        stack = node.meta.get("nn_module_stack")
        if not stack:
            return ""
        return next(reversed(stack.values()))[0]

    def placeholders(self, kind: str) -> list[fx.Node]:
        """Placeholders of one kind: "parameter", "buffer" or "input"."""
        return [n for n in self.nodes
                if n.op == "placeholder" and self.placeholder_kinds.get(n.name) == kind]


def tensor_outputs(node: fx.Node) -> list[torch.Tensor]:
    """A node's outputs as the flat list of tensors a dispatch mode sees."""
    flat, _ = tree_flatten(node.meta.get("val"))
    return [v for v in flat if isinstance(v, torch.Tensor)]


def tensors_of(obj, seen=None, depth: int = 0) -> list[torch.Tensor]:
    """Every tensor reachable from a model's output (tuples, dicts, model
    outputs, cache objects), each once."""
    seen = set() if seen is None else seen
    if isinstance(obj, torch.Tensor):
        if id(obj) in seen:
            return []
        seen.add(id(obj))
        return [obj]
    if depth > 6 or obj is None or isinstance(obj, (str, bytes, int, float, bool)):
        return []
    if isinstance(obj, dict):
        items = list(obj.values())
    elif isinstance(obj, (list, tuple, set)):
        items = list(obj)
    elif hasattr(obj, "__dict__"):
        items = list(vars(obj).values())
    else:
        return []
    out: list[torch.Tensor] = []
    for item in items:
        out.extend(tensors_of(item, seen, depth + 1))
    return out
