"""Liveness by last use in the graph: the fallback when the eager replay
cannot run.  An upper bound on what eager PyTorch keeps alive only where
the replay would free earlier; it never sees Python references that keep
a tensor alive past its last use.

Each output of a node that returns several lives to its own last use (read
through ``getitem``): FlexAttention's higher-order op returns the output,
the log-sum-exp and the row maxima, as the compiled kernel allocates them
(torch/_inductor/kernel/flex/flex_attention.py: ``out``, ``logsumexp`` and
``max_scores``, the last two float32 of (B, H, N)); ``flex_attention()``
hands back the output only, so the other two are freed at once, and the
kernel holds no N×N scores."""
from __future__ import annotations

import torch
import torch.fx as fx

from ..rules.ops import getitem, is_view, writes_input
from .model import Allocation

#: (the node that allocated a storage, which of its outputs; None: every output)
Owner = tuple


def _owners(nodes: list[fx.Node]) -> dict[fx.Node, Owner]:
    """For each node that allocates nothing (a view, an in-place op, an
    element of a tuple), the storage it reads."""
    owner: dict[fx.Node, Owner] = {}
    for node in nodes:
        if node.op != "call_function":
            continue
        if node.target is getitem:
            src = node.args[0]
            owner[node] = owner[src] if src in owner else (src, node.args[1])
        elif is_view(node) or writes_input(node):
            src = next((a for a in node.all_input_nodes), None)
            if src is not None:
                owner[node] = owner.get(src, (src, None))
    return owner


def _last_uses(nodes: list[fx.Node], owner: dict) -> dict[Owner, int | None]:
    """Position of each storage's last use; None: a graph output, alive to the end."""
    position = {n: i for i, n in enumerate(nodes)}
    last_use: dict[Owner, int | None] = {}
    for node in nodes:
        if node.op == "call_function" and node.target is getitem:
            continue  # picks an output: its readers are the uses
        for inp in node.all_input_nodes:
            key = owner.get(inp, (inp, None))
            if node.op == "output":
                last_use[key] = None
            elif last_use.get(key, 0) is not None:
                last_use[key] = max(last_use.get(key, 0), position[node])
    return last_use


def _death(last_use: dict, node: fx.Node, k: int, t: int) -> int | None:
    """One past the last use of output ``k`` of ``node`` (made at ``t``)."""
    uses = [last_use[key] for key in ((node, None), (node, k)) if key in last_use]
    if any(u is None for u in uses):
        return None
    return max(uses + [t]) + 1


def graph_allocations(traced) -> list[Allocation]:
    """Liveness by last use in the graph: a view keeps its base alive, an
    in-place op allocates nothing, graph outputs live to the end."""
    nodes = list(traced.graph_module.graph.nodes)
    owner = _owners(nodes)
    last_use = _last_uses(nodes, owner)
    allocations = []
    for t, node in enumerate(nodes):
        if node.op != "call_function" or node in owner or not isinstance(
                node.target, (torch._ops.OpOverload, torch._ops.HigherOrderOperator)):
            continue
        for k, nbytes in enumerate(traced.output_bytes(node)):
            allocations.append(Allocation(time=t, death=_death(last_use, node, k, t),
                                          bytes=nbytes, node=node, output=k))
    return allocations
