"""Give each replayed storage the graph node that made it, and so its size
as an expression in N and B.

Both sequences run the same program in the same order, so a greedy walk
with a small look-ahead aligns them in linear time (a generic diff is
quadratic on the repetitive op sequences of deep models); a match must
agree on the op and on every output's size at the replay's N and B.
"""
from __future__ import annotations

from typing import Any

import sympy
import torch
import torch.fx as fx

from ..expr import value_at
from ..rules.ops import is_view, writes_input
from ..tracing.graph import tensor_outputs
from .model import Allocation
from .replay import Replay

aten = torch.ops.aten


def allocating_nodes(traced) -> list[fx.Node]:
    """Graph nodes that may create storage: aten ops that neither view nor
    write into an input."""
    out = []
    for node in traced.graph_module.graph.nodes:
        if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
            continue
        if is_view(node) or writes_input(node) or not tensor_outputs(node):
            continue
        out.append(node)
    return out


#: Ops one run may pick for another's (a 3-d matmul folds to mm when the
#: batch dims can be viewed as rows, else runs as bmm): aligned as one.
_ALIGN_AS = {str(op): "matmul" for op in (aten.mm.default, aten.bmm.default, aten.addmm.default,
                                          aten.baddbmm.default)}
#: Constants made by torch.tensor(...) in the forward: their size never depends on N.
_CONSTANT_OPS = {str(aten.lift_fresh.default), str(aten.lift_fresh_copy.default)}


def _align_key(op: Any) -> str:
    name = str(op)
    return _ALIGN_AS.get(name, name)


#: How far the alignment of replayed ops and graph nodes looks around its position.
_LOOK_AHEAD, _LOOK_BEHIND = 48, 8


def _align(traced, replay: Replay, alloc_ops: list[int]) -> dict[int, fx.Node]:
    """Replayed op index -> the graph node that made its storages."""
    nodes = allocating_nodes(traced)
    hinted: dict[fx.Node, list] = {}

    def at_hint(expr) -> int | None:
        try:
            return value_at(expr, traced.seq_len_hint, replay.batch)
        except (TypeError, ValueError):
            return None

    def fits(i: int, node: fx.Node) -> bool:
        op = replay.ops[i]
        if _align_key(op.func) != _align_key(node.target):
            return False
        if node not in hinted:
            hinted[node] = [at_hint(x) for x in traced.output_bytes(node)]
        sizes = hinted[node]
        for k, sid in enumerate(op.new):
            if sid is None:
                continue
            size = sizes[k] if k < len(sizes) else None
            if size is None or size != replay.storages[sid].nbytes:
                return False
        return True

    node_of_op: dict[int, fx.Node] = {}
    used: set[int] = set()
    j = 0
    for i in alloc_ops:
        found = next((jj for jj in range(max(0, j - _LOOK_BEHIND), min(len(nodes), j + _LOOK_AHEAD))
                      if jj not in used and fits(i, nodes[jj])), None)
        if found is not None:
            node_of_op[i] = nodes[found]
            used.add(found)
            j = max(j, found + 1)
    return node_of_op


def match_replay(traced, replay: Replay, notes: list[str]) -> list[Allocation]:
    """Each replayed storage as an Allocation sized by the graph node that
    made it; a storage with no node keeps its size at the replay's N (and
    says so in ``notes``)."""
    alloc_ops = [i for i, op in enumerate(replay.ops) if any(s is not None for s in op.new)]
    node_of_op = _align(traced, replay, alloc_ops)
    allocations = []
    unmatched = []
    for i in alloc_ops:
        op = replay.ops[i]
        node = node_of_op.get(i)
        sizes = traced.output_bytes(node) if node is not None else []
        for k, sid in enumerate(op.new):
            if sid is None:
                continue
            st = replay.storages[sid]
            if node is not None:
                nbytes = sizes[k]
            else:
                nbytes = sympy.Integer(st.nbytes)
                if str(op.func) not in _CONSTANT_OPS:
                    unmatched.append(str(op.func))
            allocations.append(Allocation(time=i, death=st.death, bytes=nbytes, node=node,
                                          output=k, half_softmax=op.half_softmax))
    if unmatched:
        notes.append(f"{len(unmatched)} tensors of the eager run (B={replay.batch}) had no graph "
                     f"node ({', '.join(sorted(set(unmatched))[:4])}); counted at their size at "
                     f"N={traced.seq_len_hint}")
    return allocations
