"""Values read from data while a model is traced, fixed as the inputs give them.

A branch on data (Longformer's ``is_index_global_attn.any().item()``, a
count of ``nonzero`` used as a size) reads a value that fake tensors do not
have: the trace makes an unbacked symbol for it, and the first branch on
that symbol ends the trace with GuardOnDataDependentSymNode.  Where the
value is computed from the model's inputs alone (no weight on its path),
it is what a real run on the example inputs gives: at the branch, the part
of the graph traced so far that makes it is run on real example inputs, at
the traced length and at half it, and the value becomes the symbol's
(torch's ``real_tensor_prop_unbacked_vals``: each branch on it is decided
by that value, as a runtime assertion); the trace goes on (or, where the
branch was not taken through the shape environment, starts again with the
value known).  A size read from data that no branch decides (how many
tokens a mask keeps, used as a size only) is fixed the same way once the
trace ends; the rows a boolean mask picks are counted on the mask alone,
whatever the values kept (a projection's, made from the weights).  Every
value so fixed is said in the notes; one that differs between the two
lengths (or cannot be read at the second) makes the analysis hold at the
traced N only.  A value that depends on the weights
cannot be read (there are none): the error says so in one line.  A
subgraph too large to run for real (``MAX_ELEMENTS``) leaves the error as
torch raised it.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator

import sympy
import torch
import torch.fx as fx
from torch.fx.experimental.proxy_tensor import get_proxy_mode
from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode
from torch.utils._python_dispatch import _disable_current_modes
from torch.utils._pytree import tree_flatten

from ..errors import ModelError
from .fake import call_args
from .unroll import WatchedShapeEnv

#: Most values one model may have fixed at branches, and as sizes no branch decides.
MAX_FIXED = 8
MAX_SIZES = 32
#: Most elements the real run of a value's subgraph may hold (at the traced length).
MAX_ELEMENTS = 1 << 28
_NEEDS_WEIGHTS = object()


class DataShapeEnv(WatchedShapeEnv):
    """A shape environment that, at a branch on an unknown value, asks
    ``resolve(exc)`` to fix it and decides the branch with it, so the trace
    goes on instead of starting again."""

    attncost_resolve = None

    def evaluate_expr(self, *args, **kwargs):
        try:
            return super().evaluate_expr(*args, **kwargs)
        except GuardOnDataDependentSymNode as exc:
            resolve = self.attncost_resolve
            if resolve is None or not resolve(exc):
                raise
            return super().evaluate_expr(*args, **kwargs)


@dataclass
class FixedValue:
    symbol: sympy.Symbol
    value: int
    where: str
    at: dict[int, int | None]  # length -> the value there (None: could not be read)

    @property
    def is_length(self) -> bool:
        """Is it the length itself at every length read (the count of
        tokens that are not padding, with none padded)?"""
        return len(self.at) > 1 and all(v == n for n, v in self.at.items())

    @property
    def varies(self) -> bool:
        return not self.is_length and (len(set(self.at.values())) > 1 or None in self.at.values())


@dataclass
class DataValues:
    """The values fixed so far for one model, carried from trace to trace."""

    fixed: list[FixedValue] = field(default_factory=list)
    tracer: object = None
    n_params: int = 0
    #: read at the traced length only (a trace with every size a number)
    one_length: bool = False

    def seed(self, shape_env) -> None:
        for f in self.fixed:
            shape_env.real_tensor_prop_unbacked_vals[f.symbol] = sympy.Integer(f.value)

    def resolving(self, shape_env, loaded, seq_hint: int, batch_hint: int) -> None:
        """Seed ``shape_env`` with the values fixed so far, and let it fix
        the next one at the branch that reads it."""
        def resolve(exc) -> bool:
            fixed = self.resolve(exc, loaded, seq_hint, batch_hint, self.n_params)
            self.seed(shape_env)
            return fixed

        self.seed(shape_env)
        shape_env.attncost_resolve = resolve

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """Keep the tracer of the trace that runs, to read its graph after a failure."""
        self.tracer = None

        def grab(module, args):
            if self.tracer is None:
                mode = get_proxy_mode()
                self.tracer = getattr(mode, "tracer", None)

        handle = torch.nn.modules.module.register_module_forward_pre_hook(grab)
        try:
            yield
        finally:
            handle.remove()

    def notes(self) -> list[str]:
        out = []
        for f in self.fixed:
            lengths = ", ".join(f"{'unknown' if v is None else v} at N={n}"
                                for n, v in sorted(f.at.items()))
            tail = ("; it changes with N, so the analysis holds at the traced N only"
                    if f.varies else "; it is N at each, and read as N" if f.is_length else "")
            out.append(f"a value read from data ({f.where}) was fixed as the example inputs "
                       f"give it: {f.value} ({lengths}){tail}")
        return out

    def resolve(self, exc: BaseException, loaded, seq_hint: int, batch_hint: int,
                n_params: int) -> bool:
        """Fix the unknown values ``exc`` branched on; False where none can be."""
        dde = data_dependent(exc)
        known = {f.symbol for f in self.fixed}
        symbols = sorted((s for s in dde.cond.free_symbols
                          if s.name.startswith("u") and s not in known), key=str)
        if self.tracer is None:
            return False
        return self._fix(symbols, self.tracer.graph, self.tracer.root, loaded, seq_hint,
                         batch_hint, n_params)

    def fix_sizes(self, gm: fx.GraphModule, loaded, seq_hint: int, batch_hint: int) -> None:
        """Sizes read from data that no branch fixed (how many tokens a mask
        keeps, used as a size only), fixed as the example inputs give them,
        as a branch on them would have: the costs hold for those inputs."""
        known = {f.symbol for f in self.fixed}
        symbols = sorted(_sizes_from_data(gm.graph) - known, key=str)
        self._fix(symbols, gm.graph, gm, loaded, seq_hint, batch_hint, self.n_params,
                  MAX_FIXED + MAX_SIZES, as_size=True)

    def _fix(self, symbols: list, graph: fx.Graph, root, loaded, seq_hint: int,
             batch_hint: int, n_params: int, most: int = MAX_FIXED,
             as_size: bool = False) -> bool:
        """Each of ``symbols`` run for real on the example inputs (at the
        traced length and at half it) and fixed; False where one cannot be.
        ``as_size``: sizes no branch decides, each fixed where it can be and
        the rest left (a router's counts, made from the weights, are shared
        out evenly later: tracing/routed.py)."""
        if not symbols or len(self.fixed) + len(symbols) > most:
            return False
        for symbol in symbols:
            fixed = self._read(symbol, graph, root, loaded, seq_hint, batch_hint, n_params)
            if fixed is _NEEDS_WEIGHTS and not as_size:
                raise ModelError(weights_error(_producer(graph, symbol)[0]))
            if not isinstance(fixed, FixedValue):
                if as_size:
                    continue
                return False
            self.fixed.append(fixed)
        return True

    def _read(self, symbol, graph: fx.Graph, root, loaded, seq_hint: int, batch_hint: int,
              n_params: int):
        """``symbol``'s value on the example inputs, a FixedValue; None where
        it cannot be read, _NEEDS_WEIGHTS where it is made from the weights."""
        found = _producer(graph, symbol)
        if found is None:
            return None
        node, read = _by_its_mask(*found)
        at: dict[int, int | None] = {}
        for n in (seq_hint,) if self.one_length else (seq_hint, max(2, seq_hint // 2)):
            try:
                value = _run_on_inputs(graph, root, node, loaded, n, batch_hint, n_params)
            except Exception:  # noqa: BLE001 - the value cannot be read: the error stands
                if n == seq_hint:
                    return None
                value = None  # not at the second length: taken as changing with N
            if value is _NEEDS_WEIGHTS:
                return _NEEDS_WEIGHTS
            at[n] = None if value is None else int(read(value))
        return FixedValue(symbol, at[seq_hint], _where(node), at)


def _by_its_mask(node: fx.Node, read):
    """Where ``node`` keeps the rows a boolean mask picks (``x[mask]``), its
    size is the mask's count, whatever the values kept (a projection's, made
    from the weights): the mask, and how to count it; else as given."""
    if getattr(node.target, "overloadpacket", None) is torch.ops.aten.index and \
            len(node.args) > 1 and isinstance(node.args[1], (list, tuple)):
        picks = [i for i in node.args[1] if isinstance(i, fx.Node)]
        val = picks[0].meta.get("val") if len(picks) == 1 else None
        if isinstance(val, torch.Tensor) and val.dtype == torch.bool:
            return picks[0], lambda mask: int(mask.sum())
    return node, read


def _sizes_from_data(graph: fx.Graph) -> set:
    """The unknown values (unbacked symbols) the graph's tensors are sized by."""
    found = set()
    for node in graph.nodes:
        for t in tree_flatten(node.meta.get("val"))[0]:
            if isinstance(t, torch.Tensor):
                for d in t.shape:
                    if isinstance(d, torch.SymInt):
                        found |= {u for u in d.node.expr.free_symbols if u.name.startswith("u")}
    return found


def data_dependent(exc: BaseException | None) -> GuardOnDataDependentSymNode | None:
    """The GuardOnDataDependentSymNode behind ``exc``, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, GuardOnDataDependentSymNode):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _where(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    path = next(reversed(stack), "") if stack else ""
    op = getattr(node.target, "__name__", str(node.target)).split(".")[0]
    op = {"_local_scalar_dense": "a tensor's .item()"}.get(op, f"{op}()")
    return f"{op} in {path}" if path else op


def weights_error(node: fx.Node) -> str:
    return (f"the model branches on a value computed from its weights ({_where(node)}): "
            "attncost traces without weights, so that value is unknown; make the branch "
            "depend on the inputs or on sizes only")


def _producer(graph: fx.Graph, symbol: sympy.Symbol):
    """The node whose value holds ``symbol``, and how to read it from the value."""
    for node in graph.nodes:
        val = node.meta.get("val")
        if isinstance(val, (torch.SymInt, torch.SymBool)):
            expr = val.node.expr
            if expr == symbol:
                return node, lambda v: v
            if isinstance(val, torch.SymBool) and symbol in expr.free_symbols:
                return node, lambda v: int(bool(v))
        elif isinstance(val, torch.Tensor):
            for i, d in enumerate(val.shape):
                if isinstance(d, torch.SymInt) and d.node.expr == symbol:
                    return node, lambda v, i=i: v.shape[i]
    return None


def _elements(node: fx.Node) -> int:
    val = node.meta.get("val")
    vals = val if isinstance(val, (tuple, list)) else [val]
    total = 0
    for v in vals:
        if isinstance(v, torch.Tensor):
            numel = v.numel()
            hint = numel.node.hint if isinstance(numel, torch.SymInt) else numel
            total += int(hint or 0)  # no hint: sized by a value read from data
    return total


def _run_on_inputs(graph: fx.Graph, root, node: fx.Node, loaded, seq_len: int, batch: int,
                   n_params: int):
    """``node`` computed on real example inputs; _NEEDS_WEIGHTS where it
    reads a weight.  Raises where it cannot be run (or would hold more than
    MAX_ELEMENTS)."""
    needed: set[fx.Node] = set()
    todo = [node]
    while todo:
        n = todo.pop()
        if n not in needed:
            needed.add(n)
            todo.extend(n.all_input_nodes)
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if any(p in needed for p in placeholders[:n_params]):
        return _NEEDS_WEIGHTS
    if sum(_elements(n) for n in needed) > MAX_ELEMENTS:
        raise ValueError("too large to run for real")
    with _disable_current_modes(), torch._C.DisableTorchFunction():
        args, kwargs = call_args(loaded.example_inputs(seq_len, batch))
    leaves = tree_flatten((args, kwargs))[0]
    sub = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    values = []
    for n in graph.nodes:
        if n in needed:
            env[n] = sub.node_copy(n, lambda a: env[a])
            if n.op == "placeholder":
                values.append(leaves[placeholders.index(n) - n_params])
    sub.output(env[node])
    with _disable_current_modes(), torch._C.DisableTorchFunction(), torch.no_grad():
        return fx.GraphModule(root, sub)(*values)
