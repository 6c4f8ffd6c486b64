"""Trace two periods of a stack of repeated layers and replay the rest.

A decoder of L layers traces in time proportional to L.  When the layers of
an ``nn.ModuleList`` repeat with a period p (p = 1: identical layers; p = 2:
Gemma-2's local/global alternation; p = 6: Gemma-3's 5:1), the model is
traced with its first 2p layers only; the second period's layers are then
copied as layers 2p..L-1 (layer i copies layer p + i mod p), each rewired to
its own parameters and to the values of the layers before it.  When L is not
a multiple of p, the last layer is of another kind than the last traced one:
the work after the stack may then read only the layer's output (its last
value), which is rewired to the last layer's output.  The result is the graph a full trace would give.  Any
doubt (layers that differ, work done between layers, two traced periods that
do not match op for op) falls back to a full trace.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import sympy
import torch
import torch.fx as fx

from ..paths import index_in

#: Fewer layers than this are traced in full.
MIN_LAYERS = 4


@dataclass
class RepeatedBlock:
    """A ModuleList whose layers repeat with ``period``, found at ``path``."""

    path: str
    parent: torch.nn.Module
    attr: str
    layers: torch.nn.ModuleList
    period: int = 1

    @property
    def count(self) -> int:
        return len(self.layers)

    @property
    def traced_count(self) -> int:
        """Layers kept while tracing: two periods."""
        return 2 * self.period


def _settings(module: torch.nn.Module) -> dict[tuple[str, str], object]:
    """Every plain setting of a layer and its submodules, by (module, name)."""
    found = {}
    for name, sub in module.named_modules():
        for key, value in vars(sub).items():
            if not key.startswith("_") and isinstance(value, (int, float, str, bool, type(None))):
                found[(name, key)] = value
    return found


def _position_settings(layers) -> set[tuple[str, str]]:
    """Settings that hold each layer's own position in the list (Longformer's
    ``layer_id``): indices, whatever their name."""
    held = [_settings(layer) if layer is not None else {} for layer in layers]
    if not held:
        return set()
    return {key for key in held[0]
            if all(type(h.get(key)) is int and h[key] == i for i, h in enumerate(held))}


def _signature(module: torch.nn.Module | None, layer_type=None,
               positions: set[tuple[str, str]] = frozenset()) -> tuple:
    """What makes two layers compute the same thing: class, parameter and
    buffer shapes, and every plain setting except an index (named so, or
    holding the layer's position).  A ``None`` held in a ModuleList
    (x-transformers keeps optional norms that way) is a layer of its own kind."""
    if module is None:
        return ("None", layer_type)
    parts: list = [type(module).__qualname__, layer_type]
    for name, p in module.named_parameters():
        parts.append((name, tuple(p.shape), p.dtype))
    for name, b in module.named_buffers():
        parts.append((name, tuple(b.shape), b.dtype))
    for name, sub in module.named_modules():
        parts.append((name, type(sub).__qualname__))
        for key, value in sorted(vars(sub).items()):
            if key.startswith("_") or "idx" in key or "index" in key or (name, key) in positions:
                continue
            if isinstance(value, (int, float, str, bool, type(None))):
                parts.append((name, key, value))
    return tuple(parts)


def period_of(signatures: list) -> int | None:
    """The smallest period p of a list of layer signatures that saves work:
    the list repeats its first p at least three times (a last, partial
    period included: 26 layers of Gemma-3's 5:1 have a period of 6)."""
    count = len(signatures)
    for p in range(1, count // 3 + 1):
        if count >= max(MIN_LAYERS, 3 * p) and \
                all(signatures[i] == signatures[i % p] for i in range(p, count)):
            return p
    return None


def find_repeated(model: torch.nn.Module, config=None) -> RepeatedBlock | None:
    """The ModuleList whose repetition saves the most layers of tracing.
    A list that holds ``None`` is never one: its entries are placeholders."""
    best, saved = None, 0
    layer_types = getattr(config, "layer_types", None) if config is not None else None
    for path, mod in model.named_modules():
        if not isinstance(mod, torch.nn.ModuleList) or len(mod) < MIN_LAYERS:
            continue
        if any(layer is None for layer in mod):
            continue  # placeholders (x-transformers' skip_combines): no layers to replay
        types = list(layer_types) if layer_types and len(layer_types) == len(mod) else [None] * len(mod)
        positions = _position_settings(mod)
        period = period_of([_signature(layer, t, positions) for layer, t in zip(mod, types)])
        if period is None or len(mod) - 2 * period <= saved:
            continue
        parent_path, _, attr = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        best, saved = RepeatedBlock(path, parent, attr, mod, period), len(mod) - 2 * period
    return best


@contextlib.contextmanager
def truncated(block: RepeatedBlock, periods: int = 2) -> Iterator[None]:
    """Hold only the first ``periods`` periods of layers (two while the
    model is traced)."""
    setattr(block.parent, block.attr,
            torch.nn.ModuleList(list(block.layers)[:periods * block.period]))
    try:
        yield
    finally:
        setattr(block.parent, block.attr, block.layers)


def _layer_index(node: fx.Node, container: str) -> int | None:
    stack = node.meta.get("nn_module_stack")
    return index_in(next(reversed(stack.values()))[0], container) if stack else None


def _is_tensor(node: fx.Node) -> bool:
    val = node.meta.get("val")
    return isinstance(val, torch.Tensor) or (
        isinstance(val, (tuple, list)) and any(isinstance(v, torch.Tensor) for v in val))


def _same_op(a: fx.Node, b: fx.Node, sizes: "_Sizes") -> bool:
    if a.op != b.op or (a.target != b.target and a.op != "get_attr"):
        return False
    va, vb = a.meta.get("val"), b.meta.get("val")
    if isinstance(va, torch.Tensor) and isinstance(vb, torch.Tensor):
        return va.dtype == vb.dtype and sizes.same_shape(va, vb)
    return True


#: Multiples of the traced sizes at which two sizes are compared.
_SCALES = (1, 2, 3, 4, 5, 7, 8, 16, 64)


class _Sizes:
    """Tells whether two layers' tensors have the same shape: sizes written
    alike, or equal wherever the trace holds.  Code that pads to a multiple
    of a block and cuts it into pieces hands the next layer
    ``(P//256)·(P//(P//256))`` for P: the same size, nested once more each
    layer.  Equality is sampled: at the traced sizes scaled by each of
    ``_SCALES`` where the trace's guards hold (three such points at least),
    none differing.  The replay it allows gives each copied layer its
    template's sizes, which a full trace would write otherwise but count
    the same."""

    def __init__(self):
        self._points: dict[frozenset, list[dict]] = {}

    def same_shape(self, va: torch.Tensor, vb: torch.Tensor) -> bool:
        if str(va.shape) == str(vb.shape):
            return True
        shape_env = getattr(getattr(va, "fake_mode", None), "shape_env", None)
        return va.dim() == vb.dim() and shape_env is not None and all(
            self._equal(_expr(x), _expr(y), shape_env) for x, y in zip(va.shape, vb.shape))

    def _equal(self, x: sympy.Expr, y: sympy.Expr, shape_env) -> bool:
        if x == y:
            return True
        points = self._where_traced(frozenset(x.free_symbols | y.free_symbols), shape_env)
        try:
            return len(points) >= 3 and all(x.xreplace(p) == y.xreplace(p) for p in points)
        except (TypeError, ValueError, ZeroDivisionError):
            return False

    def _where_traced(self, symbols: frozenset, shape_env) -> list[dict]:
        if symbols not in self._points:
            self._points[symbols] = _points_where_guards_hold(symbols, shape_env)
        return self._points[symbols]


def _expr(size) -> sympy.Expr:
    return size.node.expr if isinstance(size, torch.SymInt) else sympy.Integer(size)


def _points_where_guards_hold(symbols: frozenset, shape_env) -> list[dict]:
    known = getattr(shape_env, "backed_var_to_val", None)
    if known is None:  # torch before the name changed
        known = shape_env.var_to_val
    hints = {s: int(v) for s, v in known.items()}
    if not symbols <= hints.keys():
        return []
    guards = [g.expr for g in shape_env.guards if g.expr.free_symbols & symbols]
    points = []
    for scale in _SCALES:
        point = {**hints, **{s: hints[s] * scale for s in symbols}}
        try:
            if all(bool(g.xreplace(point)) for g in guards):
                points.append(point)
        except (TypeError, ValueError, ZeroDivisionError):
            continue
    return points


def _renamed_stack(stack, prefix: str, old_index: int, index: int):
    old = f"{prefix}.{old_index}"
    new = f"{prefix}.{index}"

    def rename(p: str) -> str:
        return new + p[len(old):] if p == old or p.startswith(old + ".") else p

    return {rename(k): (rename(v[0]), v[1]) for k, v in stack.items()}


@dataclass
class _TracedLayers:
    """The traced layers 0..2p-1 of a block, the two periods matched op for op."""

    period: int
    #: every node of each traced layer, in graph order
    regions: list[list[fx.Node]]
    #: the tensor nodes of each traced layer (same-kind layers align by position)
    tensors: list[list[fx.Node]]
    #: tensor node -> (traced layer, position among its tensors)
    where: dict[fx.Node, tuple[int, int]]
    #: last traced layer's value -> its users after the stack (carried state)
    outside_users: dict[fx.Node, list[fx.Node]]


def _regions(nodes: list[fx.Node], block: RepeatedBlock) -> list[list[fx.Node]]:
    regions: list[list[fx.Node]] = [[] for _ in range(block.traced_count)]
    for n in nodes:
        k = _layer_index(n, block.path)
        if k is not None and 0 <= k < len(regions):
            regions[k].append(n)
    return regions


def _in_order(nodes: list[fx.Node], regions: list[list[fx.Node]], period: int) -> bool:
    """Layers follow each other with no tensor work between them, and each
    layer of the second period (the ones copied) is contiguous."""
    pos = {n: i for i, n in enumerate(nodes)}
    for k, region in enumerate(regions):
        if k >= period and pos[region[-1]] - pos[region[0]] + 1 != len(region):
            return False
        if k + 1 < len(regions):
            nxt = regions[k + 1]
            if pos[region[-1]] > pos[nxt[0]]:
                return False
            for n in nodes[pos[region[-1]] + 1: pos[nxt[0]]]:
                if n.op == "call_function" and isinstance(n.meta.get("val"), torch.Tensor):
                    return False
    return True


def _traced_layers(nodes: list[fx.Node], block: RepeatedBlock) -> _TracedLayers | None:
    """The traced layers when the two periods do the same tensor work,
    in order, with nothing between them; None when they do not allow a replay."""
    p = block.period
    regions = _regions(nodes, block)
    tensors = [[n for n in r if _is_tensor(n)] for r in regions]
    sizes = _Sizes()
    for j in range(p):
        a, b = tensors[j], tensors[p + j]
        if not a or len(a) != len(b) or not all(_same_op(x, y, sizes) for x, y in zip(a, b)):
            return None
    if not _in_order(nodes, regions, p):
        return None
    inside = {n for r in regions for n in r}
    where = {n: (k, i) for k, ts in enumerate(tensors) for i, n in enumerate(ts)}
    outside_users = {}
    last = len(regions) - 1
    for k, ts in enumerate(tensors):
        for n in ts:
            users = [u for u in n.users if u not in inside]
            if k < last and any(u.op != "output" for u in users):
                return None  # a per-layer value consumed by later work: not handled
            if k == last and users:
                outside_users[n] = users
    if block.count % p and any(n is not tensors[last][-1] and any(u.op != "output" for u in us)
                               for n, us in outside_users.items()):
        return None  # a partial last period whose inner values are read after the stack
    return _TracedLayers(p, regions, tensors, where, outside_users)


def _layer_parameters(graph: fx.Graph, block: RepeatedBlock, template: int, index: int,
                      layer_nodes: set, kinds: dict[str, str]) -> dict[fx.Node, fx.Node]:
    """Placeholders for layer ``index``'s parameters, beside the others:
    the template layer's parameter placeholder -> the new one."""
    prefix = f"{block.path}.{template}."
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    first_input = next((n for n in placeholders if kinds.get(n.name) == "input"), None)
    out: dict[fx.Node, fx.Node] = {}
    for ph in placeholders:
        name = ph.meta.get("attncost_param")
        if name and name.startswith(prefix) and any(u in layer_nodes for u in ph.users):
            new_name = f"{block.path}.{index}." + name[len(prefix):]
            ctx = graph.inserting_before(first_input) if first_input else \
                graph.inserting_after(placeholders[-1])
            with ctx:
                new = graph.placeholder(f"p_{new_name.replace('.', '_')}")
            new.meta.update(ph.meta)
            new.meta["attncost_param"] = new_name
            kinds[new.name] = kinds.get(ph.name, "parameter")
            out[ph] = new
    return out


def _copy_layer(graph: fx.Graph, traced: _TracedLayers, block: RepeatedBlock, index: int,
                params: dict, values: list[list[fx.Node]], after: fx.Node) -> dict[fx.Node, fx.Node]:
    """Copy the template of layer ``index`` (layer p + index mod p), reading
    its own parameters and the values of the layers before it (``values[m]``:
    layer m's tensor nodes, traced or copied): template node -> its copy."""
    template = traced.period + index % traced.period
    env: dict[fx.Node, fx.Node] = {}

    def remap(x: fx.Node) -> fx.Node:
        if x in env:
            return env[x]
        if x in params:
            return params[x]
        if x in traced.where:  # a value of an earlier layer, as many layers back
            layer, position = traced.where[x]
            return values[index - (template - layer)][position]
        return x  # shared: inputs, masks, sizes

    for b in traced.regions[template]:
        with graph.inserting_after(after):
            new = graph.node_copy(b, remap)
        if "nn_module_stack" in b.meta:
            new.meta["nn_module_stack"] = _renamed_stack(b.meta["nn_module_stack"],
                                                         block.path, template, index)
        env[b] = after = new
    return env


def replay_layers(gm: fx.GraphModule, block: RepeatedBlock, kinds: dict[str, str]) -> bool:
    """Extend a two-period trace to all layers of ``block``; False (and the
    graph untouched) when the traced periods do not allow it."""
    graph = gm.graph
    nodes = list(graph.nodes)
    traced = _traced_layers(nodes, block)
    if traced is None:
        return False
    output = next(n for n in reversed(nodes) if n.op == "output")
    per_layer_outputs: list[fx.Node] = []
    values = [list(ts) for ts in traced.tensors]
    last = traced.regions[-1][-1]
    for index in range(block.traced_count, block.count):
        template = traced.period + index % traced.period
        params = _layer_parameters(graph, block, template, index,
                                   set(traced.regions[template]), kinds)
        env = _copy_layer(graph, traced, block, index, params, values, last)
        last = env[traced.regions[template][-1]]
        values.append([env[b] for b in traced.tensors[template]])
        per_layer_outputs += [env[b] for b in traced.tensors[template]
                              if any(u.op == "output" for u in b.users)]
    for b, users in traced.outside_users.items():
        # the same value of the last layer (a partial last period: its output)
        position = traced.where[b][1] if block.count % block.period == 0 else -1
        for u in users:
            if u.op != "output":
                u.replace_input_with(b, values[-1][position])
    if per_layer_outputs:
        (outs,) = output.args
        output.args = (list(outs) + per_layer_outputs,)
    graph.lint()
    gm.recompile()
    return True
