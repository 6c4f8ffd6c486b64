"""Give each replayed storage the graph node that made it, and so its size
as an expression in N and B.

Both sequences run the same program in the same order, so a greedy walk
with a small look-ahead aligns them in linear time (a generic diff is
quadratic on the repetitive op sequences of deep models); a match must
agree on the op and on every output's size at the replay's N and B.
"""
from __future__ import annotations

import bisect
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
#: Ops after a far match that must match too before the walk jumps there.
_CONFIRM = 3


class _Aligner:
    """Walks the replayed ops and the graph's allocating nodes side by side."""

    def __init__(self, traced, replay: Replay, alloc_ops: list[int]):
        self.traced, self.replay, self.alloc_ops = traced, replay, alloc_ops
        self.nodes = allocating_nodes(traced)
        self.hinted: dict[fx.Node, list] = {}
        self.used: set[int] = set()
        self.keys = [_align_key(n.target) for n in self.nodes]
        #: align key -> the indices of the nodes with it, in order
        self.with_key: dict[str, list[int]] = {}
        for jj, key in enumerate(self.keys):
            self.with_key.setdefault(key, []).append(jj)
        self.op_keys = {i: _align_key(replay.ops[i].func) for i in alloc_ops}

    def sizes(self, node: fx.Node) -> list:
        """A node's output bytes at the replay's N and B."""
        if node not in self.hinted:
            def at_hint(expr) -> int | None:
                try:
                    return value_at(expr, self.traced.seq_len_hint, self.replay.batch)
                except (TypeError, ValueError):
                    return None
            self.hinted[node] = [at_hint(x) for x in self.traced.output_bytes(node)]
        return self.hinted[node]

    def same_sizes(self, i: int, node: fx.Node) -> bool:
        sizes = self.sizes(node)
        for k, sid in enumerate(self.replay.ops[i].new):
            if sid is None:
                continue
            size = sizes[k] if k < len(sizes) else None
            if size is None or size != self.replay.storages[sid].nbytes:
                return False
        return True

    def fits(self, i: int, jj: int) -> bool:
        """Does replayed op i match the jj-th allocating node?"""
        return self.op_keys[i] == self.keys[jj] and self.same_sizes(i, self.nodes[jj])

    def near(self, i: int, j: int) -> int | None:
        window = range(max(0, j - _LOOK_BEHIND), min(len(self.nodes), j + _LOOK_AHEAD))
        return next((jj for jj in window if jj not in self.used and self.fits(i, jj)), None)

    def far(self, k: int, j: int) -> int | None:
        """Past the look-ahead: the graph decomposed one eager op into many
        (an interpolation, a norm); resynchronise where this op and the next
        ones agree, so that one skipped stretch does not lose the rest."""
        following = self.alloc_ops[k + 1:k + 1 + _CONFIRM]
        candidates = self.with_key.get(self.op_keys[self.alloc_ops[k]], [])
        for jj in candidates[bisect.bisect_left(candidates, j + _LOOK_AHEAD):]:
            if jj in self.used or not self.fits(self.alloc_ops[k], jj):
                continue
            ahead = range(jj + 1, min(len(self.nodes), jj + _LOOK_AHEAD))
            if all(any(self.fits(i2, x) for x in ahead) for i2 in following):
                return jj
        return None

    def decomposed(self, i: int, lo: int, hi: int) -> int | None:
        """An eager op the graph wrote as several: the last node of the
        stretch between its matched neighbours whose outputs have its sizes."""
        return next((jj for jj in range(min(hi, len(self.nodes)) - 1, lo - 1, -1)
                     if jj not in self.used and self.same_sizes(i, self.nodes[jj])), None)

    def run(self) -> dict[int, fx.Node]:
        found_at: dict[int, int] = {}
        j = 0
        for k, i in enumerate(self.alloc_ops):
            found = self.near(i, j)
            if found is None:
                found = self.far(k, j)
            if found is not None:
                found_at[i] = found
                self.used.add(found)
                j = max(j, found + 1)
        self._fill_decomposed(found_at)
        return {i: self.nodes[jj] for i, jj in found_at.items()}

    def _fill_decomposed(self, found_at: dict[int, int]) -> None:
        previous = -1
        for k, i in enumerate(self.alloc_ops):
            if i in found_at:
                previous = found_at[i]
                continue
            nxt = next((found_at[i2] for i2 in self.alloc_ops[k + 1:] if i2 in found_at),
                       len(self.nodes))
            jj = self.decomposed(i, previous + 1, nxt)
            if jj is not None:
                found_at[i] = jj
                self.used.add(jj)


def _align(traced, replay: Replay, alloc_ops: list[int]) -> dict[int, fx.Node]:
    """Replayed op index -> the graph node that made its storages."""
    return _Aligner(traced, replay, alloc_ops).run()


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
