"""Trace two layers of a stack of identical layers and replay the rest.

A decoder of L identical layers traces in time proportional to L.  When the
layers of an ``nn.ModuleList`` have the same structure (class, parameter
shapes, settings), the model is traced with its first two layers only; the
second layer's subgraph is then copied L-2 times, rewired to the next
layer's parameters and to the previous copy's outputs.  The result is the
graph a full trace would give.  Any doubt (layers that differ, work done
between layers, two traced layers that do not match op for op) falls back to
a full trace.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.fx as fx

from ..paths import index_in

#: Fewer layers than this are traced in full.
MIN_LAYERS = 4


@dataclass
class RepeatedBlock:
    """A ModuleList of identical layers, found at ``path``."""

    path: str
    parent: torch.nn.Module
    attr: str
    layers: torch.nn.ModuleList

    @property
    def count(self) -> int:
        return len(self.layers)


def _signature(module: torch.nn.Module, layer_type=None) -> tuple:
    """What makes two layers compute the same thing: class, parameter and
    buffer shapes, and every plain setting except an index."""
    parts: list = [type(module).__qualname__, layer_type]
    for name, p in module.named_parameters():
        parts.append((name, tuple(p.shape), p.dtype))
    for name, b in module.named_buffers():
        parts.append((name, tuple(b.shape), b.dtype))
    for name, sub in module.named_modules():
        parts.append((name, type(sub).__qualname__))
        for key, value in sorted(vars(sub).items()):
            if key.startswith("_") or "idx" in key or "index" in key:
                continue
            if isinstance(value, (int, float, str, bool, type(None))):
                parts.append((name, key, value))
    return tuple(parts)


def find_repeated(model: torch.nn.Module, config=None) -> RepeatedBlock | None:
    """The longest ModuleList whose layers are all structurally identical."""
    best = None
    layer_types = getattr(config, "layer_types", None) if config is not None else None
    for path, mod in model.named_modules():
        if not isinstance(mod, torch.nn.ModuleList) or len(mod) < MIN_LAYERS:
            continue
        types = list(layer_types) if layer_types and len(layer_types) == len(mod) else [None] * len(mod)
        sigs = {_signature(layer, t) for layer, t in zip(mod, types)}
        if len(sigs) != 1:
            continue
        if best is None or len(mod) > best.count:
            parent_path, _, attr = path.rpartition(".")
            parent = model.get_submodule(parent_path) if parent_path else model
            best = RepeatedBlock(path, parent, attr, mod)
    return best


@contextlib.contextmanager
def truncated(block: RepeatedBlock) -> Iterator[None]:
    """Hold only the first two layers while the model is traced."""
    setattr(block.parent, block.attr, torch.nn.ModuleList(list(block.layers)[:2]))
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


def _same_op(a: fx.Node, b: fx.Node) -> bool:
    if a.op != b.op or (a.target != b.target and a.op != "get_attr"):
        return False
    va, vb = a.meta.get("val"), b.meta.get("val")
    if isinstance(va, torch.Tensor) and isinstance(vb, torch.Tensor):
        return va.dtype == vb.dtype and str(va.shape) == str(vb.shape)
    return True


def _renamed_stack(stack, prefix: str, index: int):
    old = f"{prefix}.1"
    new = f"{prefix}.{index}"

    def rename(p: str) -> str:
        return new + p[len(old):] if p == old or p.startswith(old + ".") else p

    return {rename(k): (rename(v[0]), v[1]) for k, v in stack.items()}


@dataclass
class _TwoLayers:
    """The traced layers 0 and 1 of a block, matched op for op."""

    r0: list[fx.Node]
    r1: list[fx.Node]
    #: layer-0 tensor node -> layer-1 tensor node
    corr: dict[fx.Node, fx.Node]
    #: layer-1 value -> its users after the stack (carried state or per-layer outputs)
    outside_users: dict[fx.Node, list[fx.Node]]


def _two_layers(nodes: list[fx.Node], block: RepeatedBlock) -> _TwoLayers | None:
    """Layers 0 and 1 when they do the same tensor work, contiguously, with
    nothing between them; None when they do not allow a replay."""
    region: dict[int, list[fx.Node]] = {0: [], 1: []}
    for n in nodes:
        k = _layer_index(n, block.path)
        if k in region:
            region[k].append(n)
    r0, r1 = region[0], region[1]
    # Sizes are computed once and shared by later layers, so compare the
    # tensor work of the two layers, op for op.
    t0, t1 = [n for n in r0 if _is_tensor(n)], [n for n in r1 if _is_tensor(n)]
    if not t0 or len(t0) != len(t1) or not all(_same_op(a, b) for a, b in zip(t0, t1)):
        return None
    pos = {n: i for i, n in enumerate(nodes)}
    if pos[r0[-1]] > pos[r1[0]] or pos[r1[-1]] - pos[r1[0]] + 1 != len(r1):
        return None
    # No tensor work between the layers: everything a layer does is inside it.
    for n in nodes[pos[r0[-1]] + 1: pos[r1[0]]]:
        if n.op == "call_function" and isinstance(n.meta.get("val"), torch.Tensor):
            return None
    in_r0, in_r1 = set(r0), set(r1)
    outside_users = {}
    for a, b in zip(t0, t1):
        users_a = [u for u in a.users if u not in in_r0 and u not in in_r1]
        if users_a and any(u.op != "output" for u in users_a):
            return None  # a per-layer value consumed by later work: not handled
        users_b = [u for u in b.users if u not in in_r1]
        if users_b:
            outside_users[b] = users_b
    return _TwoLayers(r0, r1, dict(zip(t0, t1)), outside_users)


def _layer_parameters(graph: fx.Graph, block: RepeatedBlock, index: int, layer1: set,
                      kinds: dict[str, str]) -> dict[fx.Node, fx.Node]:
    """Placeholders for layer ``index``'s parameters, beside the others:
    layer 1's parameter placeholder -> the new one."""
    prefix1 = f"{block.path}.1."
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    first_input = next((n for n in placeholders if kinds.get(n.name) == "input"), None)
    out: dict[fx.Node, fx.Node] = {}
    for ph in placeholders:
        name = ph.meta.get("attncost_param")
        if name and name.startswith(prefix1) and any(u in layer1 for u in ph.users):
            new_name = f"{block.path}.{index}." + name[len(prefix1):]
            ctx = graph.inserting_before(first_input) if first_input else \
                graph.inserting_after(placeholders[-1])
            with ctx:
                new = graph.placeholder(f"p_{new_name.replace('.', '_')}")
            new.meta.update(ph.meta)
            new.meta["attncost_param"] = new_name
            kinds[new.name] = kinds.get(ph.name, "parameter")
            out[ph] = new
    return out


def _copy_layer(graph: fx.Graph, two: _TwoLayers, block: RepeatedBlock, index: int,
                params: dict, prev: dict, after: fx.Node) -> dict[fx.Node, fx.Node]:
    """Copy layer 1's nodes as layer ``index``, reading the previous layer's
    values and its own parameters: layer-1 node -> its copy."""
    env: dict[fx.Node, fx.Node] = {}

    def remap(x: fx.Node) -> fx.Node:
        if x in env:
            return env[x]
        if x in params:
            return params[x]
        if x in two.corr:  # the previous layer's value of this node
            return prev[two.corr[x]]
        return x  # shared: inputs, masks, sizes

    for b in two.r1:
        with graph.inserting_after(after):
            new = graph.node_copy(b, remap)
        if "nn_module_stack" in b.meta:
            new.meta["nn_module_stack"] = _renamed_stack(b.meta["nn_module_stack"],
                                                         block.path, index)
        env[b] = after = new
    return env


def replay_layers(gm: fx.GraphModule, block: RepeatedBlock, kinds: dict[str, str]) -> bool:
    """Extend a two-layer trace to all layers of ``block``; False (and the
    graph untouched) when the two traced layers do not allow it."""
    graph = gm.graph
    nodes = list(graph.nodes)
    two = _two_layers(nodes, block)
    if two is None:
        return False
    output = next(n for n in reversed(nodes) if n.op == "output")
    per_layer_outputs: list[fx.Node] = []
    prev = {b: b for b in two.corr.values()}  # layer-1 node -> its value in the previous layer
    last = two.r1[-1]
    for index in range(2, block.count):
        params = _layer_parameters(graph, block, index, set(two.r1), kinds)
        env = _copy_layer(graph, two, block, index, params, prev, last)
        last = env[two.r1[-1]]
        per_layer_outputs += [env[b] for b, users in two.outside_users.items()
                              if any(u.op == "output" for u in users)]
        prev = env
    for b, users in two.outside_users.items():
        for u in users:
            if u.op != "output":
                u.replace_input_with(b, prev[b])
    if per_layer_outputs:
        (outs,) = output.args
        output.args = (list(outs) + per_layer_outputs,)
    graph.lint()
    gm.recompile()
    return True
