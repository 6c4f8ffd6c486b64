"""Trace a model into an aten-level torch.fx graph with N and B symbolic.

One trace answers every sequence length: the graph is captured by
``make_fx(tracing_mode="symbolic")`` over fake tensors, so no weight or
activation is ever allocated, and every node carries its shape as SymPy
expressions in ``N`` (sequence length) and ``B`` (batch).  The trace uses the
requested N as its hint, so a Python branch on the length takes the branch
the requested N would take; the guards it adds are reported as the range of N
the formulas hold for.
"""
from __future__ import annotations

import contextlib
import functools
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import sympy
import torch
import torch.fx as fx
import torch.fx.traceback as fx_traceback
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.experimental.symbolic_shapes import ShapeEnv
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.func import functional_call
from torch.utils._pytree import tree_flatten

from .errors import ModelError
from .loader import LoadedModel
from .repeat import find_repeated, replay_layers, truncated

#: The two symbols every expression is written in.
N = sympy.Symbol("N", positive=True, integer=True)
B = sympy.Symbol("B", positive=True, integer=True)

def value_at(expr, seq_len: int, batch: int = 1) -> int:
    """An expression in N and B at concrete values, as an exact integer."""
    return int(sympy.sympify(expr).xreplace({N: sympy.Integer(seq_len), B: sympy.Integer(batch)}))


#: Sizes used to tell which input dims follow the length and which the batch.
_PROBES = ((11, 3), (13, 5))


@dataclass
class TracedModel:
    """An aten graph whose shapes are expressions in N and B."""

    graph_module: fx.GraphModule
    shape_env: ShapeEnv
    #: shape-env symbol -> expression in N and B
    replacements: dict[sympy.Symbol, sympy.Expr]
    #: module path -> class name, for every module of the model
    module_types: dict[str, str]
    #: placeholder name -> "parameter" | "buffer" | "input"
    placeholder_kinds: dict[str, str]
    #: human-readable conditions on N and B under which the graph holds
    guards: list[str] = field(default_factory=list)
    #: (lowest N, highest N or None) the trace holds for
    n_range: tuple[int, int | None] = (1, None)
    seq_len_hint: int = 0
    batch_hint: int = 0

    def expr(self, value: Any) -> sympy.Expr:
        """A SymInt, int or sympy expression as an expression in N and B."""
        if isinstance(value, torch.SymInt):
            node_expr = value.node.expr
            return sympy.sympify(node_expr).xreplace(self._all_replacements)
        if isinstance(value, sympy.Basic):
            return value.xreplace(self._all_replacements)
        return sympy.Integer(int(value))

    def shape(self, node: fx.Node) -> tuple[sympy.Expr, ...] | None:
        """The shape of a node's tensor value in N and B, or None."""
        val = node.meta.get("val") if isinstance(node, fx.Node) else None
        if isinstance(val, torch.Tensor):
            return tuple(self.expr(s) for s in val.shape)
        return None

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


# ----------------------------------------------------------------- inputs


def _probe_specs(loaded: LoadedModel) -> Any:
    """Which input dims follow N and which B, found by calling the input
    builder at two small sizes under a fake mode (nothing is allocated)."""
    outs = []
    for seq, batch in _PROBES:
        with FakeTensorMode(allow_non_fake_inputs=True):
            outs.append(loaded.example_inputs(seq, batch))
    flat0, spec0 = tree_flatten(outs[0])
    flat1, spec1 = tree_flatten(outs[1])
    if spec0 != spec1 or len(flat0) != len(flat1):
        raise ModelError("example_inputs returns a different structure for different lengths")
    dims = []
    for a, b in zip(flat0, flat1):
        if not isinstance(a, torch.Tensor):
            dims.append(None)
            continue
        if a.dim() != b.dim():
            raise ModelError("example_inputs returns tensors whose rank depends on the length")
        per_dim = []
        for i, (x, y) in enumerate(zip(a.shape, b.shape)):
            x, y = int(x), int(y)
            per_dim.append(_dim_expr(x, y))
        dims.append(per_dim)
    return dims


def _dim_expr(x: int, y: int) -> sympy.Expr | None:
    """The expression in N and B of an input dim seen as x at the first probe
    and y at the second; None for a constant dim."""
    (n0, b0), (n1, b1) = _PROBES
    if x == y:
        return None
    for cand in (N, B, N * B):
        if cand.subs({N: n0, B: b0}) == x and cand.subs({N: n1, B: b1}) == y:
            return cand
    # c*N + e (for example N + 1 tokens, or 2*N)
    c = sympy.Rational(y - x, n1 - n0)
    e = x - c * n0
    if c.is_integer and e.is_integer and c > 0:
        return c * N + e
    raise ModelError(
        f"an input dim is {x} at N={n0} and {y} at N={n1}: attncost follows dims that grow "
        "as N, B or a multiple of N; make example_inputs(seq_len, batch) build such shapes"
    )


def _symbolic_inputs(loaded: LoadedModel, mode: FakeTensorMode, seq_len: int, batch: int,
                     dims: list) -> tuple[Any, dict[sympy.Symbol, sympy.Expr]]:
    """Inputs at the requested size whose length and batch dims are symbols."""
    with FakeTensorMode(allow_non_fake_inputs=True):
        concrete = loaded.example_inputs(seq_len, batch)
    flat, spec = tree_flatten(concrete)
    shape_env = mode.shape_env
    replacements: dict[sympy.Symbol, sympy.Expr] = {}
    made: dict[sympy.Expr, torch.SymInt] = {}
    out = []
    from torch._dynamo.source import ConstantSource

    for idx, (t, tdims) in enumerate(zip(flat, dims)):
        if not isinstance(t, torch.Tensor):
            out.append(t)
            continue
        sizes: list[Any] = []
        for j, (size, dexpr) in enumerate(zip(t.shape, tdims)):
            if dexpr is None:
                sizes.append(int(size))
                continue
            if dexpr not in made:
                hint = int(size)
                sym = shape_env.create_symbol(hint, ConstantSource(f"attncost_in{idx}_{j}"))
                made[dexpr] = shape_env.create_symintnode(sym, hint=hint)
                replacements[sym] = dexpr
            sizes.append(made[dexpr])
        with mode:
            out.append(torch.empty(sizes, dtype=t.dtype, device=loaded.trace_device))
    return spec.unflatten(out) if hasattr(spec, "unflatten") else out, replacements


# ----------------------------------------------------------------- tracing


@contextlib.contextmanager
def _record_module_paths(model: torch.nn.Module) -> Iterator[None]:
    """Stamp each traced node with the stack of modules that were running."""
    paths = {}
    for name, mod in model.named_modules(remove_duplicate=False):
        paths.setdefault(id(mod), name)
    stack: list[tuple[str, str]] = []

    def pre(mod, args):
        path = paths.get(id(mod))
        if path is not None:
            stack.append((path, type(mod).__qualname__))
            fx_traceback.current_meta["nn_module_stack"] = {p: (p, t) for p, t in stack}

    def post(mod, args, out):
        path = paths.get(id(mod))
        if path is not None and stack and stack[-1][0] == path:
            stack.pop()
            if stack:
                fx_traceback.current_meta["nn_module_stack"] = {p: (p, t) for p, t in stack}
            else:
                fx_traceback.current_meta.pop("nn_module_stack", None)

    h1 = torch.nn.modules.module.register_module_forward_pre_hook(pre)
    h2 = torch.nn.modules.module.register_module_forward_hook(post, always_call=True)
    try:
        with fx_traceback.preserve_node_meta():
            yield
    finally:
        h1.remove()
        h2.remove()


def trace(loaded: LoadedModel, seq_len: int, batch: int = 1,
          progress: Callable[[str], None] | None = None, reuse_layers: bool = True) -> TracedModel:
    """Trace ``loaded`` once; the graph holds for every N in ``n_range``.

    With ``reuse_layers``, a stack of identical layers is traced two layers
    deep and the rest replayed (see attncost.repeat); the graph is the same.
    """
    model = loaded.module
    dims = _probe_specs(loaded)
    # A batch of 1 would be specialized to the constant 1; trace with 2 and
    # keep B symbolic (nothing is allocated, so the size is free).
    batch_hint = batch if batch >= 2 else 2
    seq_hint = seq_len if seq_len >= 2 else 2
    block = find_repeated(model, loaded.config) if reuse_layers else None
    if progress:
        progress("tracing the model with symbolic N")
    if block is not None:
        with truncated(block):
            gm, shape_env, replacements, kinds = _make_graph(loaded, dims, seq_hint, batch_hint)
        if not replay_layers(gm, block, kinds):
            block = None
    if block is None:
        gm, shape_env, replacements, kinds = _make_graph(loaded, dims, seq_hint, batch_hint)
    module_types = {name: type(m).__qualname__ for name, m in model.named_modules()}
    traced = TracedModel(gm, shape_env, replacements, module_types, kinds,
                         seq_len_hint=seq_hint, batch_hint=batch_hint)
    traced.guards, traced.n_range = _guards(traced)
    return traced


def _make_graph(loaded: LoadedModel, dims, seq_hint: int, batch_hint: int):
    """make_fx over fake parameters and symbolic inputs."""
    model = loaded.module
    shape_env = ShapeEnv(duck_shape=False)
    mode = FakeTensorMode(shape_env=shape_env, allow_non_fake_inputs=False)
    inputs, replacements = _symbolic_inputs(loaded, mode, seq_hint, batch_hint, dims)

    params: dict[str, torch.Tensor] = {}
    kinds: dict[str, str] = {}
    with mode:
        for name, p in model.named_parameters():
            params[name] = torch.empty_strided(p.shape, p.stride(), dtype=p.dtype,
                                               device=loaded.trace_device)
            kinds[name] = "parameter"
        for name, b in model.named_buffers():
            params[name] = torch.empty_strided(b.shape, b.stride(), dtype=b.dtype,
                                               device=loaded.trace_device)
            kinds[name] = "buffer"

    args, kwargs = (inputs, {}) if not isinstance(inputs, dict) else ((), inputs)
    if isinstance(inputs, list):
        args = tuple(inputs)

    def forward(params, args, kwargs):
        # The outputs as a flat list of tensors: they are what the forward
        # returns, and so what stays alive after it (logits, a KV cache).
        return tensors_of(functional_call(model, params, args, kwargs))

    try:
        with torch.no_grad(), _record_module_paths(model), loaded.trace_context(), \
                warnings.catch_warnings():
            # Warnings about running eagerly on fake data concern the trace, not the model.
            warnings.simplefilter("ignore")
            gm = make_fx(forward, tracing_mode="symbolic")(params, args, kwargs)
    except ModelError:
        raise
    except Exception as exc:  # the user's model raised while being traced
        raise ModelError(f"the model raised while being traced: {type(exc).__name__}: "
                         f"{_first_line(exc)}") from exc

    # Placeholders come in the order of the flattened (params, args, kwargs).
    placeholder_kinds = {}
    names = list(params)
    for i, node in enumerate(n for n in gm.graph.nodes if n.op == "placeholder"):
        placeholder_kinds[node.name] = kinds[names[i]] if i < len(names) else "input"
        if i < len(names):
            node.meta["attncost_param"] = names[i]
    return gm, shape_env, replacements, placeholder_kinds


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


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""


def _guards(traced: TracedModel) -> tuple[list[str], tuple[int, int | None]]:
    """Conditions on N and B the trace recorded, and the range of N they allow."""
    env = traced.shape_env
    lo, hi = 1, None
    sym_for_n = [s for s, e in traced.replacements.items() if e == N]
    for s in sym_for_n:
        vr = env.var_to_range.get(s)
        if vr is None:
            continue
        lower = int(vr.lower) if vr.lower.is_Integer else 1
        # The shape env assumes sizes >= 2 by default; only a tighter bound counts.
        if lower > 2:
            lo = max(lo, lower)
        if vr.upper.is_Integer and int(vr.upper) < 2**62:
            hi = int(vr.upper) if hi is None else min(hi, int(vr.upper))
    texts = []
    for g in env.guards:
        expr = traced.expr(g.expr)
        if expr in (sympy.true, sympy.false) or not expr.free_symbols:
            continue
        texts.append(str(expr))
    return sorted(set(texts)), (lo, hi)
