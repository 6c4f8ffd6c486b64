"""What a training step holds: parameters, gradients, optimizer state, and
the activations and transients of forward, backward and optimizer.step().

``StepMemory`` is the plain result other figures are built from (sharding
over GPUs divides its parts): the persistent state in bytes,
``activations(n, b)``, the rest of the step's peak, and
``activation_parts(n, b)``, the same bytes by the module that made them.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import sympy
import torch
import torch.fx as fx

from ..memory import _profile as memory_profile
from ..memory import _weight_bytes as weight_bytes
from ..expr import Terms, value_at
from ..memory.envelope import add_terms, candidates, max_expr, prune
from ..memory.liveness import graph_allocations
from ..memory.model import Allocation, MemoryModel, Profile
from ..paths import any_index
from ..rules import on_device
from ..rules.ops import is_view
from .optimizers import OptimizerMemory
from .parallel import splits_activation
from .trace import grad_fn_of, is_recompute

#: A GPU's bytes at a moment are linear in 1/tp: the whole bytes plus the
#: divided ones over tp.  Candidates are compared at both ends of tp >= 2:
#: whole + divided / 2, and the whole bytes alone (tp without bound).
_AT_TP2, _AT_TP_UNBOUNDED = sympy.symbols("at_tp2 at_tp_unbounded", positive=True)


@dataclass(frozen=True)
class PeakMoment:
    """A moment of the step that is its peak, or the busiest moment once
    tensor parallelism divides its blocks, for some N and B.  ``parts`` are
    the step's activations then by the module path that made each tensor
    (what a split over GPUs divides or keeps), ``total`` their sum; ``peak``
    says whether the moment is a candidate for the step's own peak."""

    parts: dict[str, Terms]
    total: Terms
    peak: bool


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
    #: the moments that can be the peak, on one GPU or split; empty: not known
    moments: list[PeakMoment] = field(default_factory=list, repr=False)

    def activations(self, n: int, b: int = 1) -> int:
        """Bytes beyond parameters, gradients and optimizer state at the peak."""
        return int(self.activations_at(n, b))

    def activation_parts(self, n: int, b: int = 1) -> dict[str, int] | None:
        """``activations(n, b)`` by the module path that made each tensor,
        so that a split over GPUs can divide some blocks and keep the rest.
        ``''`` holds what no module made: the inputs, the optimizer's state
        and temporaries, and the gradients (those not yet made at the peak
        taken off).  None when the step was built without its moments."""
        peaks = [m for m in self.moments if m.peak]
        if not peaks:
            return None
        moment = max(peaks, key=lambda m: value_at(m.total, n, b))
        return {path: value_at(terms, n, b) for path, terms in moment.parts.items()}

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
    outside = inputs - grad_bytes - optimizer.state_bytes
    memory.step = StepMemory(
        parameter_bytes=weights, gradient_bytes=grad_bytes, optimizer_bytes=optimizer.state_bytes,
        parameters=parameter_table(loaded.module, {name for name, _ in grads}),
        activations_at=lambda n, b: memory.at(n, b) - weights - grad_bytes - optimizer.state_bytes,
        moments=peak_moments(traced, profile, set(_gradient_storages(grads)), outside))
    return memory


def peak_moments(traced, profile: Profile, gradients: set[fx.Node],
                 outside: sympy.Expr) -> list[PeakMoment]:
    """The candidates of ``profile``'s envelope (the step's peak), and those
    that can be a GPU's busiest once tensor parallelism divides the blocks
    (``splits_activation``): a moment behind another on one GPU can lead
    once split, so the candidates are pruned again as a GPU holds them.
    Gradients and what no node made are whole, under ``''`` with
    ``outside`` (the inputs, less the gradients and optimizer state the
    step counts apart)."""
    def path_of(a: Allocation) -> str:
        return "" if a.node is None or a.node in gradients else traced.module_path(a.node)
    tagged = [replace(a, bytes=a.bytes * _AT_TP2 / 2 if splits_activation(path_of(a))
                      else a.bytes * (_AT_TP2 + _AT_TP_UNBOUNDED)) for a in profile.allocations]
    peak = {c.time for c in profile.front}
    split = prune(candidates(traced, tagged), traced.n_range[0] if traced.n_range else 1)
    times = sorted(peak | {c.time for c in split})
    moments = []
    for t, parts in zip(times, _parts_at(traced, profile.allocations, times, path_of, outside)):
        total: dict = {}
        for terms in parts.values():
            for term, coeff in terms.items():
                total[term] = total.get(term, 0) + coeff
        moments.append(PeakMoment(parts=parts, total=total, peak=t in peak))
    return moments


def _parts_at(traced, allocations: list[Allocation], times: list[int], path_of,
              outside: sympy.Expr) -> list[dict[str, Terms]]:
    """What is alive right after each op of ``times``, summed by ``path_of``:
    the envelope's own candidates (memory/envelope.py), each allocation's
    bytes tagged with a symbol of its path and split apart again."""
    paths = sorted({path_of(a) for a in allocations} | {""})
    tags = {sympy.Symbol(f"part_{i}", positive=True): p for i, p in enumerate(paths)}
    tag_of = {p: tag for tag, p in tags.items()}
    tagged = [replace(a, bytes=a.bytes * tag_of[path_of(a)]) for a in allocations]
    alive = {c.time: c.terms for c in candidates(traced, tagged)}
    out = []
    for t in times:
        parts: dict[str, dict] = {"": {}}
        add_terms(parts[""], outside, 1)
        for term, coeff in alive[t].items():
            tag = next(s for s in term.free_symbols if s in tags)
            add_terms(parts.setdefault(tags[tag], {}), coeff * term.subs(tag, 1), 1)
        out.append({path: kept for path, terms in parts.items()
                    if (kept := {term: c for term, c in terms.items() if c != 0})})
    return out


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


def _gradient_storages(grads: list[tuple[str, fx.Node]]) -> dict[fx.Node, str]:
    """The node that allocated each gradient's storage (past its views), to its parameter."""
    owner = {}
    for name, node in grads:
        while node.op == "call_function" and is_view(node) and node.all_input_nodes:
            node = node.all_input_nodes[0]
        owner[node] = name
    return owner


def _label_gradients(allocations: list[Allocation], grads: list[tuple[str, fx.Node]]) -> None:
    """Name the storage of each gradient after its parameter (any layer)."""
    owner = _gradient_storages(grads)
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
