"""What an eager run of a traced graph touches: which ops launch a kernel,
and the bytes each reads and writes at one N and B (questions/latency.py
and questions/decode.py walk the graph with these)."""
from __future__ import annotations

import torch
import torch.fx as fx

from ..expr import value_at
from ..rules.ops import FLEX_ATTENTION, GATHER_OPS, is_view, op_name
from ..tracing.graph import tensor_outputs

#: Ops that allocate without launching a kernel.
NO_KERNEL_OPS = frozenset({"empty", "empty_strided", "empty_like", "new_empty",
                           "new_empty_strided", "_assert_async", "_assert_scalar"})
#: Ops that read rows of their first input (a table), not all of it.
LOOKUP_OPS = frozenset({"embedding"} | {op.__name__ for op in GATHER_OPS})

def launches_kernel(node: fx.Node) -> bool:
    """Does eager PyTorch launch work for this node (not a view, not Python)?"""
    if node.op != "call_function" or is_view(node) or op_name(node) in NO_KERNEL_OPS:
        return False
    if node.target is FLEX_ATTENTION:
        return True
    return isinstance(node.target, torch._ops.OpOverload) and bool(tensor_outputs(node))


class Evaluator:
    """Byte counts of graph values at one N and B, each expression evaluated once."""

    def __init__(self, traced, seq_len: int, batch: int):
        self.traced, self.seq_len, self.batch = traced, seq_len, batch
        self._values: dict = {}

    def value(self, expr) -> int:
        if expr not in self._values:
            self._values[expr] = max(0, value_at(expr, self.seq_len, self.batch))
        return self._values[expr]

    def out_bytes(self, node: fx.Node) -> int:
        return sum(self.value(e) for e in self.traced.output_bytes(node))

    def in_bytes(self, node: fx.Node) -> int:
        args, rows = input_nodes(node), 0
        if op_name(node) in LOOKUP_OPS and args:
            args, rows = args[1:], self.out_bytes(node)  # the rows read, not the table
        return sum(self.out_bytes(a) for a in args) + rows


def input_nodes(node: fx.Node) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), found.append)
    return [n for n in found if tensor_outputs(n)]
