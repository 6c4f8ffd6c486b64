"""Replay the forward eagerly on fake tensors, recording when each storage
is created and when Python frees it.

The graph alone says when a tensor is last *used*, but eager PyTorch frees
it when the last Python reference goes: ``attn = softmax(attn,
dtype=float32).to(bf16)`` keeps the old bf16 scores alive until the whole
line is done.  The replay allocates nothing (fake tensors) and records the
order of allocations and frees that a real run would have.
"""
from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterable

import sympy
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.symbolic_shapes import ShapeEnv
from torch.func import functional_call
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..tracing.fast_paths import fast_paths
from ..tracing.fake import call_args, fake_parameters, module_state_kept
from ..tracing.repeat import find_repeated, truncated
from ..tracing.unroll import quiet_shape_log

#: Softmax entry points whose fp16 -> fp32 upcast a CUDA kernel does in place
#: (``_softmax(x, dim, half_to_float=True)``); on a CPU it is a separate copy.
_SOFTMAX_FUNCTIONS = frozenset({torch.softmax, torch.nn.functional.softmax, torch.Tensor.softmax})


@dataclass
class Storage:
    op: int           # index of the op that created it
    output: int       # which tensor output of that op
    nbytes: int       # at the replay's sizes
    death: int | None = None


@dataclass
class Op:
    func: Any
    new: list[int | None]       # per tensor output: index of a new storage, or None (alias)
    half_softmax: bool = False  # dispatched inside softmax(fp16 input, dtype=float32)


class Recorder(TorchDispatchMode):
    """Records each op's new storages and when Python frees each one.

    A higher-order op (FlexAttention) stops the replay with one clear
    line: its outputs could not be matched to a graph node (align.py pairs
    aten ops), so their sizes would hold at the replay's N only; last use
    in the graph (liveness.py) counts them instead."""

    supports_higher_order_operators = True

    def __init__(self, existing: Iterable[int]):
        super().__init__()
        self.ops: list[Op] = []
        self.storages: list[Storage] = []
        self.half_softmax_depth = 0
        self._live: dict[int, int] = {key: -1 for key in existing}
        self._finalizers: list[weakref.finalize] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if isinstance(func, torch._ops.HigherOrderOperator):
            raise NotImplementedError(f"{func.name()} is a higher-order op, whose outputs the "
                                      "replay cannot give a graph node")
        out = func(*args, **(kwargs or {}))
        index = len(self.ops)
        new: list[int | None] = []
        for k, t in enumerate(x for x in tree_flatten(out)[0] if isinstance(x, torch.Tensor)):
            storage = t.untyped_storage()
            key = storage._cdata
            if key in self._live:
                new.append(None)
                continue
            sid = len(self.storages)
            self.storages.append(Storage(index, k, int(storage.nbytes())))
            self._live[key] = sid
            self._finalizers.append(weakref.finalize(storage, self._freed, key, sid))
            new.append(sid)
        self.ops.append(Op(func, new, self.half_softmax_depth > 0))
        return out

    def _freed(self, key: int, sid: int) -> None:
        if self._live.get(key) == sid:
            del self._live[key]
        self.storages[sid].death = len(self.ops)

    def stop(self) -> None:
        """Storages still alive now stay alive to the end."""
        for f in self._finalizers:
            f.detach()


class _SoftmaxUpcasts(TorchFunctionMode):
    """Marks the ops dispatched inside ``softmax(fp16 x, dtype=torch.float32)``."""

    def __init__(self, recorder: Recorder):
        super().__init__()
        self.recorder = recorder

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        mark = func in _SOFTMAX_FUNCTIONS and _is_half_upcast(args, kwargs)
        if mark:
            self.recorder.half_softmax_depth += 1
        try:
            return func(*args, **kwargs)
        finally:
            if mark:
                self.recorder.half_softmax_depth -= 1


def _is_half_upcast(args, kwargs) -> bool:
    x = args[0] if args and isinstance(args[0], torch.Tensor) else kwargs.get("input")
    dtypes = [a for a in list(args[1:]) + list(kwargs.values()) if isinstance(a, torch.dtype)]
    return isinstance(x, torch.Tensor) and x.dtype == torch.float16 and torch.float32 in dtypes


@dataclass
class Replay:
    ops: list[Op]
    storages: list[Storage]
    end: int
    batch: int
    #: extended from two periods of a repeated stack (memory/periodic.py)
    extended: bool = field(default=False, compare=False)


def same_lifetimes(a: "Replay", b: "Replay") -> bool:
    """Do two replays (at two batch sizes) make and free the same storages
    at the same ops?  Then they differ only in sizes, which the graph's
    expressions in B already carry."""
    return a.end == b.end and len(a.ops) == len(b.ops) and \
        all(x.func == y.func and x.new == y.new and x.half_softmax == y.half_softmax
            for x, y in zip(a.ops, b.ops)) and \
        [(s.op, s.output, s.death) for s in a.storages] == \
        [(s.op, s.output, s.death) for s in b.storages]


#: Replay a stack of repeated layers two periods deep and extend it
#: (memory/periodic.py); False replays every layer.
PERIODIC = True


def replay(traced, loaded, batch: int, periodic: bool | None = None,
           checked: bool = False) -> Replay:
    """Run the forward eagerly on fake tensors at the trace's length.

    A stack of layers that repeats with a period (tracing/repeat.py) runs
    two periods deep and the rest is extended from them, when that gives
    the replay of every layer (memory/periodic.py); ``periodic`` (default
    ``PERIODIC``) False runs every layer.  ``checked``: a replay at another
    batch was extended so already (the stack's structure does not follow
    the batch), so the third period that checks it is not run again."""
    if PERIODIC if periodic is None else periodic:
        short = _periodic(traced, loaded, batch, checked)
        if short is not None:
            return short
    return _run(traced, loaded, batch)[0]


def _periodic(traced, loaded, batch: int, checked: bool = False) -> Replay | None:
    """The replay extended from two periods of the repeated stack, where a
    replay three periods deep is what the two extend to (work before or
    after the stack that grows with its depth, a ``torch.stack`` of every
    layer's output, fails that); else None."""
    from .periodic import Stack, extend, layer_starts

    if traced.graph_module.meta.get("attncost_fixed"):
        return None  # values read from data: their order follows every layer
    block = find_repeated(loaded.module, getattr(loaded, "config", None))
    if block is None or block.count % block.period:
        return None
    try:
        runs = {}
        for periods in (2,) if checked else (2, 3):
            with truncated(block, periods):
                runs[periods] = _run(traced, loaded, batch,
                                     block.layers[:2 * block.period] if periods == 2 else ())
    except Exception:  # code that counts its layers: every layer runs instead
        return None
    short, calls = runs[2]
    starts = layer_starts(calls, block.traced_count)
    if starts is None or (not checked and extend(
            short, Stack(starts, block.period, 3 * block.period)) != runs[3][0]):
        return None
    extended = extend(short, Stack(starts, block.period, block.count))
    if extended is not None:
        extended.extended = True
    return extended


def _run(traced, loaded, batch: int, layers=()) -> tuple[Replay, list[tuple[int, str, int]]]:
    """The replay, and when each of ``layers`` began and ended (op indices)."""
    model = loaded.module
    mode = FakeTensorMode(allow_non_fake_inputs=True, shape_env=_fixed_values_env(traced))
    params, _ = fake_parameters(model, mode, loaded.trace_device, remove_duplicate=False)
    with mode:
        inputs = _to_device(loaded.example_inputs(traced.seq_len_hint, batch), loaded.trace_device)
    existing = {t.untyped_storage()._cdata for t in params.values()}
    existing |= {t.untyped_storage()._cdata for t in tree_flatten(inputs)[0]
                 if isinstance(t, torch.Tensor)}
    args, kwargs = call_args(inputs)

    recorder = Recorder(existing)
    calls: list[tuple[int, str, int]] = []
    # Global hooks, not the layers' own: a module with hooks of its own
    # leaves torch's fused path (nn.TransformerEncoderLayer), a real run has none.
    index = {id(layer): k for k, layer in enumerate(layers)}

    def mark(when):
        def hook(module, *_):
            k = index.get(id(module))
            if k is not None:
                calls.append((k, when, len(recorder.ops)))
        return hook

    hooks = [torch.nn.modules.module.register_module_forward_pre_hook(mark("pre")),
             torch.nn.modules.module.register_module_forward_hook(mark("post"))] if layers else []
    try:
        with torch.no_grad(), loaded.trace_context(), fast_paths(loaded.kernel_device), \
                warnings.catch_warnings(), \
                quiet_shape_log(), mode, recorder, _SoftmaxUpcasts(recorder), \
                module_state_kept(model):
            # Warnings about running on fake data concern the replay, not the model.
            warnings.simplefilter("ignore")
            out = functional_call(model, params, args, kwargs)
            end = len(recorder.ops)
            recorder.stop()
    finally:
        for h in hooks:
            h.remove()
    del out
    return Replay(recorder.ops, recorder.storages, end, batch), calls


def _fixed_values_env(traced) -> ShapeEnv | None:
    """Where the trace fixed values read from data (tracing.data_values), a
    shape environment that decides the replay's branches on them alike: the
    replay reads them in the same order, so its unbacked symbols have the
    trace's names."""
    fixed = traced.graph_module.meta.get("attncost_fixed") or []
    if not fixed:
        return None
    env = ShapeEnv()
    for f in fixed:
        env.real_tensor_prop_unbacked_vals[f.symbol] = sympy.Integer(f.value)
    return env


def _to_device(obj, device):
    return torch.utils._pytree.tree_map(
        lambda t: t.to(device) if isinstance(t, torch.Tensor) else t, obj)
