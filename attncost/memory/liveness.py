"""Liveness by last use in the graph: the fallback when the eager replay
cannot run.  An upper bound on what eager PyTorch keeps alive only where
the replay would free earlier; it never sees Python references that keep
a tensor alive past its last use."""
from __future__ import annotations

import torch
import torch.fx as fx

from ..rules.ops import getitem, is_view, writes_input
from .model import Allocation


def graph_allocations(traced) -> list[Allocation]:
    """Liveness by last use in the graph: a view keeps its base alive, an
    in-place op allocates nothing, graph outputs live to the end."""
    nodes = list(traced.graph_module.graph.nodes)
    position = {n: i for i, n in enumerate(nodes)}
    base: dict[fx.Node, fx.Node] = {}
    for node in nodes:
        if node.op == "call_function" and (is_view(node) or writes_input(node)):
            src = next((a for a in node.all_input_nodes), None)
            if src is not None:
                base[node] = base.get(src, src)
        elif node.op == "call_function" and node.target is getitem:
            src = node.args[0]
            base[node] = base.get(src, src)
    last_use: dict[fx.Node, int | None] = {}
    for node in nodes:
        for inp in node.all_input_nodes:
            root = base.get(inp, inp)
            if node.op == "output":
                last_use[root] = None
            elif last_use.get(root, 0) is not None:
                last_use[root] = max(last_use.get(root, 0), position[node])
    allocations = []
    for node in nodes:
        if node.op != "call_function" or node in base or not isinstance(node.target, torch._ops.OpOverload):
            continue
        t = position[node]
        end = last_use.get(node, t)
        death = None if end is None else max(end, t) + 1
        for k, nbytes in enumerate(traced.output_bytes(node)):
            allocations.append(Allocation(time=t, death=death, bytes=nbytes, node=node, output=k))
    return allocations
