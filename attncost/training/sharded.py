"""A training step's memory on the busiest GPU of a parallel plan, with the
interface the questions use (``at``, ``breakdown``, ``n_range``,
``peak_bytes``), so that `fits --mode train --fsdp 8` asks it as it asks one GPU.

The per-GPU figure (parallel.py) is exact at every (N, B); its formula is
built from the step's own (activations at ``ceil(N/cp)`` tokens, under tp
the largest over the moments that can be a GPU's busiest with the blocks'
share divided, the sharded state as constants, ring attention's K/V blocks linear in
``ceil(N/cp)·B``) and checked against the exact figure before it is given.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sympy

from ..errors import AttncostError
from ..expr import B, N, value_at
from ..memory.envelope import terms_expr
from ..memory.model import BreakdownEntry
from .parallel import (LayerShape, PerGpuMemory, Plan, ShardedStep, kv_block_bytes, check_plan,
                       parameter_shapes)

#: (N, B) points the formula is checked at, beside the requested one.
_CHECKS = ((1024, 1), (4099, 2), (65537, 3))


@dataclass
class ShardedMemory:
    """The busiest GPU of ``plan`` during one training step."""

    device: str
    plan: Plan
    sharded: ShardedStep
    n_range: tuple[int, int | None]
    weight_bytes: int
    peak_bytes: sympy.Expr | None = None
    notes: list[str] = field(default_factory=list)
    liveness: str = "graph last use"

    @property
    def step(self):
        """The whole step's parts, on one GPU."""
        return self.sharded.step

    def per_gpu(self, n: int, b: int = 1) -> PerGpuMemory:
        return self.sharded.at(n, b)

    def at(self, n: int, b: int = 1) -> int:
        return self.sharded.at(n, b).total

    def breakdown(self, n: int, b: int = 1, top: int = 3) -> list[BreakdownEntry]:
        """The parts of the busiest GPU's peak, largest first."""
        r = self.sharded.at(n, b)
        total = r.total or 1
        parts = [("activations and transients", r.activations),
                 ("parameters (this GPU's share)", r.parameters),
                 ("gradients (this GPU's share)", r.gradients),
                 ("optimizer state (this GPU's share)", r.optimizer),
                 ("gathered layers and K/V blocks in flight", r.in_flight)]
        return [BreakdownEntry(name, "", "", "", "", nbytes, nbytes / total)
                for name, nbytes in sorted(parts, key=lambda p: -p[1]) if nbytes > 0]


def sharded_memory(memory, plan: Plan, loaded, seq_len: int, batch: int) -> ShardedMemory:
    """``memory`` (a TrainingMemory) split by ``plan``."""
    layers = None
    if plan.tp > 1 or plan.cp > 1:
        if loaded.config is None:
            raise AttncostError("--tp and --cp split heads and layers that a transformers "
                                "config names; a .py file takes --fsdp only")
        layers = LayerShape.from_config(loaded.config,
                                        activation_bytes=loaded.dtype.itemsize)
    notes = check_plan(plan, layers)
    sharded = ShardedStep(memory.step, plan, layers, parameter_shapes(loaded.module))
    lo, hi = memory.n_range
    result = ShardedMemory(device=memory.device, plan=plan, sharded=sharded,
                           n_range=(max(lo, plan.cp), hi), weight_bytes=memory.weight_bytes,
                           notes=list(notes))
    result.peak_bytes = _formula(memory, result, layers, seq_len, batch)
    return result


def _formula(memory, sharded: ShardedMemory, layers, seq_len: int, batch: int):
    """The busiest GPU's peak as an expression, or None where the one built
    from the parts does not equal the exact figure everywhere it is checked."""
    plan = sharded.plan
    local = sympy.ceiling(N / plan.cp) if plan.cp > 1 else N
    activations = _activations(memory, sharded.sharded)
    at_request = sharded.per_gpu(seq_len, batch)
    fixed = at_request.parameters + at_request.gradients + at_request.optimizer
    in_flight = at_request.in_flight
    kv = 0
    if plan.cp > 1:  # two K/V blocks in flight, each linear in the local tokens and the batch
        per_token = 2 * kv_block_bytes(layers, plan, 1, 1)
        in_flight -= per_token * -(-seq_len // plan.cp) * batch
        kv = per_token * local * B
    expr = fixed + in_flight + activations.subs(N, local) + kv
    points = ((seq_len, batch),) + tuple(
        (n, b) for n, b in _CHECKS if n >= sharded.n_range[0]
        and (sharded.n_range[1] is None or n <= sharded.n_range[1]))
    if all(value_at(expr, n, b) == sharded.at(n, b) for n, b in points):
        return expr
    return None


def _activations(memory, sharded: ShardedStep) -> sympy.Expr:
    """The busiest GPU's activations at N tokens: the step's own, or under
    tp the largest over the moments that can be the busiest of each one's
    whole bytes and its blocks' bytes divided by tp."""
    if not sharded.shares:
        step = memory.step
        state = step.parameter_bytes + step.gradient_bytes + step.optimizer_bytes
        return sympy.expand(memory.peak_bytes - memory.workspace_bytes - state)
    values = [terms_expr(whole) + sympy.ceiling(terms_expr(divided) / sharded.plan.tp)
              for whole, divided in sharded.shares]
    return values[0] if len(values) == 1 else sympy.Max(*values, evaluate=False)
