"""What an optimizer keeps between steps and allocates inside ``step()``,
as torch's default implementation for the device does it.

torch picks the foreach implementation when every parameter is on a CUDA
device and the single-tensor one on a CPU (``_default_to_fused_or_foreach``);
the counts below read ``torch/optim/adam.py``, ``sgd.py`` and
``_adafactor.py`` of torch 2.13:

* AdamW keeps ``exp_avg`` and ``exp_avg_sq`` (the parameter's dtype) and a
  scalar ``step`` (fp32, on the CPU unless capturable or fused).  The
  single-tensor step makes ``exp_avg_sq.sqrt()`` and its quotient by the
  bias correction (two parameter-sized tensors at once) and keeps that
  ``denom`` until the next parameter's replaces it.  The foreach step makes
  ``_foreach_sqrt(exp_avg_sqs)``: one tensor per parameter of a
  (device, dtype) group, all alive at once, until the next group's.
* SGD with torch's default momentum 0 keeps nothing and updates in place;
  with momentum it keeps one buffer per parameter, updated in place.
* Adafactor keeps a row and a column factor for a matrix (a full variance
  for a vector) and ``step``; its step makes a parameter-sized estimate and
  keeps it until the next parameter's replaces it.
* ``none``: no optimizer step (gradients only).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import AttncostError

OPTIMIZERS = ("adamw", "sgd", "adafactor", "none")
#: torch keeps an optimizer's ``step`` as a 0-d fp32 tensor on the CPU.
STEP_BYTES = 4


@dataclass
class TrainableParameter:
    """A parameter the optimizer updates."""

    name: str
    shape: tuple[int, ...]
    element_size: int

    @property
    def numel(self) -> int:
        out = 1
        for s in self.shape:
            out *= int(s)
        return out

    @property
    def bytes(self) -> int:
        return self.numel * self.element_size


@dataclass
class Transient:
    """A tensor optimizer.step() allocates: made at ``time``, freed at
    ``death`` (times count the step's own allocations from 0)."""

    time: int
    death: int
    bytes: int
    label: str


@dataclass
class OptimizerMemory:
    name: str
    #: exp_avg, exp_avg_sq, momentum buffers, factors: kept between steps
    state_bytes: int
    #: the tensors step() makes and frees
    transients: list[Transient]
    #: what the state is, for the breakdown
    state_label: str


def optimizer_memory(name: str, params: list[TrainableParameter], device: str,
                     momentum: float = 0.0) -> OptimizerMemory:
    """State and step() temporaries of ``name`` over ``params`` on ``device``."""
    if name not in OPTIMIZERS:
        raise AttncostError(f"unknown optimizer {name!r}: use one of {', '.join(OPTIMIZERS)}")
    steps = STEP_BYTES * len(params) if device == "cpu" else 0
    if name == "adamw":
        state = sum(2 * p.bytes for p in params) + steps
        moves = _adam_foreach(params) if device == "cuda" else _adam_single(params)
        return OptimizerMemory(name, state, moves, "AdamW exp_avg and exp_avg_sq")
    if name == "sgd":
        state = sum(p.bytes for p in params) if momentum else 0
        return OptimizerMemory(name, state, [], "SGD momentum buffers")
    if name == "adafactor":
        state = sum(_adafactor_state(p) for p in params) + steps
        return OptimizerMemory(name, state, _carried(params, 1, "Adafactor variance estimate"),
                               "Adafactor row and column factors")
    return OptimizerMemory(name, 0, [], "")


def _adam_single(params: list[TrainableParameter]) -> list[Transient]:
    """Per parameter: sqrt (freed once divided), then denom (kept until the
    next parameter's denom is made)."""
    out: list[Transient] = []
    for i, p in enumerate(params):
        t = 3 * i
        out.append(Transient(t, t + 2, p.bytes, "AdamW exp_avg_sq.sqrt()"))
        out.append(Transient(t + 1, t + 5, p.bytes, "AdamW denom"))
    return out


def _adam_foreach(params: list[TrainableParameter]) -> list[Transient]:
    """Per (dtype) group: the sqrt of every exp_avg_sq, kept until the next
    group's is made."""
    groups: dict[int, int] = {}
    for p in params:
        groups[p.element_size] = groups.get(p.element_size, 0) + p.bytes
    return [Transient(i, i + 2, nbytes, "AdamW _foreach_sqrt(exp_avg_sqs)")
            for i, nbytes in enumerate(groups.values())]


def _carried(params: list[TrainableParameter], factor: int, label: str) -> list[Transient]:
    """One parameter-sized tensor per parameter, kept until the next one's is made."""
    return [Transient(i, i + 2, factor * p.bytes, label) for i, p in enumerate(params)]


def _adafactor_state(p: TrainableParameter) -> int:
    if len(p.shape) > 1:
        rows = p.numel // int(p.shape[-1])
        cols = p.numel // int(p.shape[-2])
        return (rows + cols) * p.element_size
    return p.bytes
