"""What a training step holds: parameters, gradients, optimizer state, and
the activations and transients of forward, backward and optimizer.step().

``StepMemory`` is the plain result other figures are built from (sharding
over GPUs divides its parts): the persistent state in bytes, and
``activations(n, b)``, the rest of the step's peak.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import sympy
import torch
import torch.fx as fx

from ..memory import _profile as memory_profile
from ..memory import _weight_bytes as weight_bytes
from ..memory.envelope import max_expr
from ..memory.liveness import graph_allocations
from ..memory.model import Allocation, MemoryModel
from ..paths import any_index
from ..rules import on_device
from ..rules.ops import is_view
from .optimizers import OptimizerMemory
from .trace import grad_fn_of, is_recompute


@dataclass
class StepMemory:
    """The peak of one steady-state training step, in parts.

    ``at(n, b)`` = parameters + gradients + optimizer state +
    ``activations(n, b)``.  ``activations`` is what the step holds at its
    peak beyond that state: tensors saved for backward, transients of
    backward and of ``optimizer.step()``, the outputs kept for the loss,
    the inputs; where the peak falls inside backward, gradients not yet
    made at that moment are taken off it (so it can be below the saved
    activations alone, never below zero).
    """

    parameter_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    #: (name, numel, bytes per element, trainable) per parameter tensor
    parameters: list[tuple[str, int, int, bool]] = field(default_factory=list)
    #: (n, b) -> bytes of activations and transients at the peak
    activations_at: Callable[[int, int], int] = field(default=lambda n, b: 0, repr=False)

    def activations(self, n: int, b: int = 1) -> int:
        """Bytes beyond parameters, gradients and optimizer state at the peak."""
        return int(self.activations_at(n, b))

    def at(self, n: int, b: int = 1) -> int:
        """The step's peak bytes at N=n, B=b."""
        return self.parameter_bytes + self.gradient_bytes + self.optimizer_bytes + \
            self.activations(n, b)


@dataclass
class TrainingMemory(MemoryModel):
    """A training step's peak, with the interface of the forward's
    MemoryModel (``at``, ``breakdown``, ``n_range``, ``peak_bytes``), and
    its parts as a StepMemory."""

    step: StepMemory | None = None


def training_memory(traced, loaded, grads: list[tuple[str, fx.Node]], optimizer: OptimizerMemory,
                    device: str, allocation_rules=None) -> TrainingMemory:
    """The peak of one steady-state step over the joint graph of ``traced``.

    Liveness is last use in the joint graph (a tensor saved for backward
    lives until the backward op that reads it); the forward's outputs and
    the gradients live to the end; the optimizer's state lives throughout
    and its step() temporaries come after the graph.  ``grads`` pairs each
    parameter with the graph value of its gradient."""
    allocations = on_device(traced, _released_by_grad_fn(traced, graph_allocations(traced)),
                            device, allocation_rules)
    _label_gradients(allocations, grads)
    end = 1 + max((a.time for a in allocations), default=0)
    if optimizer.state_bytes:
        allocations.insert(0, Allocation(time=-1, death=None, bytes=sympy.Integer(
            optimizer.state_bytes), node=None, label=f"optimizer state ({optimizer.state_label})"))
    for t in optimizer.transients:
        allocations.append(Allocation(time=end + t.time, death=end + t.death,
                                      bytes=sympy.Integer(t.bytes), node=None, label=t.label))
    profile = memory_profile(traced, allocations, traced.n_range[0] if traced.n_range else 1)
    weights = weight_bytes(loaded.module)
    inputs = sympy.expand(sum((b for node in traced.placeholders("input")
                               for b in traced.output_bytes(node)), sympy.Integer(0)))
    peak = sympy.Integer(weights) + inputs + max_expr([c.terms for c in profile.front])
    memory = TrainingMemory(device=device, weight_bytes=weights, input_bytes=inputs,
                            peak_bytes=peak, liveness="graph last use", n_range=traced.n_range,
                            _profiles={None: profile}, _traced=traced)
    grad_bytes = sum(_numel_bytes(node) for _, node in grads)
    memory.step = StepMemory(
        parameter_bytes=weights, gradient_bytes=grad_bytes, optimizer_bytes=optimizer.state_bytes,
        parameters=parameter_table(loaded.module, {name for name, _ in grads}),
        activations_at=lambda n, b: memory.at(n, b) - weights - grad_bytes - optimizer.state_bytes)
    return memory


def _released_by_grad_fn(traced, allocations: list[Allocation]) -> list[Allocation]:
    """Eager autograd frees what one autograd node's backward used (its
    saved tensors, its incoming gradient, the temporaries of its formula)
    when that backward returns, not at the last op that reads them: a
    tensor last read inside a node's backward lives to the node's last op.
    A recomputed forward op's own temporaries (checkpointing) are freed as
    the forward frees them."""
    nodes = list(traced.graph_module.graph.nodes)
    group_end: dict[int, int] = {}
    for i, node in enumerate(nodes):
        group = grad_fn_of(node)
        if group is not None:
            group_end[group] = i
    for a in allocations:
        if a.death is None or a.death - 1 >= len(nodes):
            continue
        reader = nodes[a.death - 1]
        group = grad_fn_of(reader)
        if group is None or (is_recompute(a.node) and grad_fn_of(a.node) == group):
            continue
        a.death = max(a.death, group_end[group] + 1)
    return allocations


def _numel_bytes(node: fx.Node) -> int:
    """Bytes of a gradient (its shape is the parameter's: no N or B in it)."""
    t = node.meta["val"]
    return int(t.numel()) * t.element_size()


def _label_gradients(allocations: list[Allocation], grads: list[tuple[str, fx.Node]]) -> None:
    """Name the storage of each gradient after its parameter (any layer)."""
    owner = {}
    for name, node in grads:
        while node.op == "call_function" and is_view(node) and node.all_input_nodes:
            node = node.all_input_nodes[0]
        owner[node] = name
    for a in allocations:
        if a.node in owner and not a.label:
            a.label = f"gradient of {any_index(owner[a.node])}"


def parameter_table(module: torch.nn.Module, trainable: set[str]) -> list[tuple[str, int, int, bool]]:
    """(name, numel, bytes per element, trainable) per parameter, then buffer;
    a tensor shared by two names (tied weights) once."""
    seen: set[int] = set()
    rows = []
    named = list(module.named_parameters()) + list(module.named_buffers())
    for name, t in named:
        if id(t) in seen:
            continue
        seen.add(id(t))
        rows.append((name, t.numel(), t.element_size(), name in trainable))
    return rows
