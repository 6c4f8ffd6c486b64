"""Independent memory oracle: live tensor storage of a real forward on a CPU.

What it counts, to compare with ``peak_memory_bytes`` (docs/design.md):

* weights: every parameter and buffer storage of the model, once;
* inputs: every storage of the forward's tensor arguments, once;
* intermediates: every storage that an op dispatched during the forward
  creates (an op output whose storage is not one seen before), from the moment
  the op returns until Python frees it (a weakref finalizer on the storage);
  the peak is the largest sum of live intermediates right after any op;
  whatever the forward returns is still alive when it ends.

Views, in-place ops and ``out=`` ops create no storage and count nothing.
Kernel-internal scratch buffers (allocated below the dispatcher, never
returned) are not seen: they are not op outputs.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


@dataclass
class Measurement:
    weight_bytes: int
    input_bytes: int
    peak_intermediate_bytes: int
    peak_op: str

    @property
    def peak_bytes(self) -> int:
        return self.weight_bytes + self.input_bytes + self.peak_intermediate_bytes


class LiveStorageTracker(TorchDispatchMode):
    """Tracks the bytes of storages created by ops and still referenced."""

    def __init__(self, existing_storages=()):
        super().__init__()
        self._live: dict[int, int] = {}
        self._known = {s._cdata for s in existing_storages}
        self._finalizers = []
        self.current = 0
        self.peak = 0
        self.peak_op = ""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key = storage._cdata
            if key in self._live or key in self._known:
                continue
            nbytes = int(storage.nbytes())
            self._live[key] = nbytes
            self.current += nbytes
            self._finalizers.append(weakref.finalize(storage, self._free, key))
        if self.current > self.peak:
            self.peak = self.current
            self.peak_op = str(func)
        return out

    def _free(self, key):
        self.current -= self._live.pop(key, 0)

    def close(self):
        for f in self._finalizers:
            f.detach()


def _storages(tensors):
    seen = {}
    for t in tensors:
        if isinstance(t, torch.Tensor):
            s = t.untyped_storage()
            seen.setdefault(s._cdata, s)
    return list(seen.values())


def measure(model: torch.nn.Module, inputs) -> Measurement:
    """One no-grad forward of ``model`` on ``inputs`` (a tuple of arguments or
    a dict of keyword arguments), measured as the module docstring says."""
    weights = _storages(list(model.parameters()) + list(model.buffers()))
    flat_inputs = [t for t in tree_flatten(inputs)[0] if isinstance(t, torch.Tensor)]
    input_storages = _storages(flat_inputs)
    tracker = LiveStorageTracker(weights + input_storages)
    with torch.no_grad(), tracker:
        out = model(**inputs) if isinstance(inputs, dict) else model(*inputs)
        tracker.close()
    del out
    return Measurement(
        weight_bytes=sum(int(s.nbytes()) for s in weights),
        input_bytes=sum(int(s.nbytes()) for s in input_storages),
        peak_intermediate_bytes=tracker.peak,
        peak_op=tracker.peak_op,
    )
