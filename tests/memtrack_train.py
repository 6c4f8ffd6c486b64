"""Independent memory oracle for a training step: live tensor storage of a
real forward, backward and optimizer.step() on a CPU.

The step measured is a steady-state one (docs/design.md): a first step runs
unmeasured so that the optimizer's state exists, gradients are then freed
with ``zero_grad(set_to_none=True)``, and the second step is measured:

* held before it starts: every parameter and buffer storage, every
  optimizer state tensor, the inputs;
* created during it: every storage an op dispatched by the forward, the
  loss, ``loss.backward()`` or ``optimizer.step()`` creates (gradients
  included), from the op until Python frees it, as tests/memtrack.py
  tracks them; the peak is the largest sum right after any op.  The step
  keeps the forward's outputs until it ends, as a loop holding
  ``outputs`` does.

The loss is the first floating-point output summed in fp32.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils._pytree import tree_flatten

from memtrack import LiveStorageTracker, _storages


@dataclass
class StepMeasurement:
    held_bytes: int          # parameters, buffers, optimizer state, inputs
    optimizer_state_bytes: int
    peak_created_bytes: int
    peak_op: str

    @property
    def peak_bytes(self) -> int:
        return self.held_bytes + self.peak_created_bytes


def _outputs(out):
    if hasattr(out, "logits"):
        return [out.logits]
    return [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]


def _loss(out):
    first = next(t for t in _outputs(out) if t.is_floating_point())
    return first.float().sum()


def _forward(model, inputs, autocast_dtype):
    ctx = torch.autocast("cpu", dtype=autocast_dtype) if autocast_dtype else torch.autocast(
        "cpu", enabled=False)
    with ctx:
        out = model(**inputs) if isinstance(inputs, dict) else model(*inputs)
        loss = _loss(out)
    return out, loss


def measure_step(model: torch.nn.Module, inputs, optimizer: torch.optim.Optimizer,
                 autocast_dtype=None) -> StepMeasurement:
    """The second of two training steps, measured as the module docstring says."""
    model.train()
    out, loss = _forward(model, inputs, autocast_dtype)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    del out, loss
    state = [t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    flat_inputs = [t for t in tree_flatten(inputs)[0] if isinstance(t, torch.Tensor)]
    held = _storages(list(model.parameters()) + list(model.buffers()) + state + flat_inputs)
    tracker = LiveStorageTracker(held)
    with tracker:
        out, loss = _forward(model, inputs, autocast_dtype)
        loss.backward()
        optimizer.step()
        tracker.close()
    del out, loss
    return StepMeasurement(
        held_bytes=sum(int(s.nbytes()) for s in held),
        optimizer_state_bytes=sum(int(s.nbytes()) for s in _storages(state)),
        peak_created_bytes=tracker.peak, peak_op=tracker.peak_op)
