"""What an op allocates on a device, where the device's kernels differ from
the ones the trace ran.

The trace runs CPU kernels on fake tensors; the memory model records what
they allocate.  A device whose kernels allocate something else (a fused
attention backend that keeps a log-sum-exp, a softmax that upcasts inside
its kernel) registers an allocation rule for those ops.  A rule receives
the allocations the traced kernels made for one node and returns what the
device's kernel allocates instead.  Ops without a rule allocate as traced.

A device also names its library workspaces: memory held once the first
kernel that needs it ran (cuBLAS), counted once in the peak.
"""
from __future__ import annotations

from typing import Callable

import torch.fx as fx

from .registry import Registry

#: (traced, node, allocations of the traced kernel) -> allocations on the device
AllocationRule = Callable[..., list]

ALLOCATION_RULES: dict[str, Registry[AllocationRule]] = {
    "cuda": Registry("CUDA allocation rules"),
    "cpu": Registry("CPU allocation rules"),
}
#: device -> (traced -> bytes of library workspaces the forward keeps)
WORKSPACES: Registry[Callable] = Registry("workspace rules")

#: The devices whose kernels are modelled, in the order options list them.
DEVICES = tuple(ALLOCATION_RULES)


def register_allocation_rule(device: str, *ops) -> Callable[[AllocationRule], AllocationRule]:
    """Decorator: ``rule`` decides what ``ops`` allocate on ``device``."""
    return ALLOCATION_RULES[device].register(*ops)


def register_workspace(device: str) -> Callable:
    """Decorator: the library workspaces a forward on ``device`` keeps."""
    return WORKSPACES.register(device)


def on_device(traced, allocations: list, device: str, overrides=None) -> list:
    """The allocations of a forward on ``device``: each node's traced
    allocations, or what its device rule says instead."""
    rules = ALLOCATION_RULES[device].with_overrides(overrides)
    by_node: dict[fx.Node, list] = {}
    for a in allocations:
        if a.node is not None:
            by_node.setdefault(a.node, []).append(a)
    out: list = []
    done: set[fx.Node] = set()
    for a in allocations:
        node = a.node
        rule = rules.get(node.target) if node is not None else None
        if rule is None:
            out.append(a)
        elif node not in done:
            done.add(node)
            out.extend(rule(traced, node, by_node[node]))
    return out


def workspace_bytes(traced, device: str) -> int:
    """Bytes of library workspaces the forward keeps on ``device``."""
    fn = WORKSPACES.get(device)
    return int(fn(traced)) if fn is not None else 0
