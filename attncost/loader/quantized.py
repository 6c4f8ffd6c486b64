"""Models the user quantized with ``torch.ao.quantization.quantize_dynamic``.

Such a model keeps each Linear's weight as packed params, a TorchScript
object, and runs ``quantized::linear_dynamic``.  make_fx passes the object
through, but that op has no fake-tensor kernel (torch reserves its fake
implementation to an internal module), so the trace stops there.  Each
dynamically quantized Linear is therefore swapped for a stand-in that calls
``attncost::dynamic_quantized_linear``: on real tensors it runs the original
layer, on fake tensors it makes the output's shape; it carries the byte
size of the packed weight, which the weight count adds (memory/quantized.py).

attncost builds parameters on the meta device, where quantize_dynamic
cannot pick scales; while a model file loads, quantize_dynamic gets the
meta weights of the Linear layers it converts as zeros.  The packed sizes
are the real ones (scales and zero points are one per tensor or one per
channel, whatever the values); the values are not.
"""
from __future__ import annotations

import contextlib
import itertools
import sys
import weakref

import torch
import torch.nn as nn

#: The original dynamically quantized layers, by the handle their stand-in
#: calls; each stand-in holds its own, so a layer goes with its stand-in.
_ORIGINALS: "weakref.WeakValueDictionary[int, nn.Module]" = weakref.WeakValueDictionary()
_HANDLES = itertools.count()

#: Bytes of one scale and one zero point as fbgemm's packed weight holds them (float, int32).
PACKED_SCALE_BYTES = 4
PACKED_ZERO_POINT_BYTES = 4


@torch.library.custom_op("attncost::dynamic_quantized_linear", mutates_args=())
def dynamic_quantized_linear(x: torch.Tensor, handle: int, out_features: int) -> torch.Tensor:
    """The original layer's forward (``quantized::linear_dynamic``)."""
    return _ORIGINALS[handle](x)


@dynamic_quantized_linear.register_fake
def _(x, handle, out_features):
    return x.new_empty((*x.shape[:-1], out_features))


DYNAMIC_QUANTIZED_LINEAR = torch.ops.attncost.dynamic_quantized_linear.default


class DynamicQuantizedLinearStandIn(nn.Module):
    """A dynamically quantized Linear as make_fx can trace it: same output
    shape, same packed bytes (``packed_bytes``)."""

    def __init__(self, original: nn.Module):
        super().__init__()
        self.in_features = int(original.in_features)
        self.out_features = int(original.out_features)
        self.packed_bytes = packed_bytes(original)
        self.handle = next(_HANDLES)
        self.__dict__["_original"] = original  # not a submodule: its params are packed
        _ORIGINALS[self.handle] = original

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dynamic_quantized_linear(x, self.handle, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"packed_bytes={self.packed_bytes}"


def packed_bytes(layer: nn.Module) -> int:
    """What a dynamically quantized Linear's packed params hold: an int8
    weight with a float32 scale and an int32 zero point per tensor or per
    output channel (a float16 weight: 2 bytes each, no scales), and the bias."""
    weight, bias = layer._packed_params._weight_bias()
    total = bias.numel() * bias.element_size() if bias is not None else 0
    if layer._packed_params.dtype == torch.float16:
        return total + weight.numel() * 2
    if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric,
                            torch.per_channel_affine_float_qparams):
        scales = weight.q_per_channel_scales().numel()
    else:
        scales = 1
    return total + weight.numel() + scales * (PACKED_SCALE_BYTES + PACKED_ZERO_POINT_BYTES)


def _dynamic_linear_types() -> tuple[type, ...]:
    from torch.ao.nn.quantized.dynamic import Linear

    return (Linear,)


def _quantized_module_types() -> tuple[type, ...]:
    """Modules of torch.ao's quantized packages (statically quantized ones
    hold quantized tensors no fake kernel runs)."""
    import torch.ao.nn.quantized as nnq

    return (nnq.Linear, nnq.Conv1d, nnq.Conv2d, nnq.Conv3d, nnq.Embedding, nnq.EmbeddingBag)


def swap_dynamic_linears(model: nn.Module) -> list[str]:
    """Replace each dynamically quantized Linear with its stand-in; notes
    that say so (none if there is none).  A statically quantized module is
    an error: attncost cannot trace it."""
    from ..errors import ModelError

    dynamic = _dynamic_linear_types()
    swapped = []
    for name, module in list(model.named_modules()):
        if isinstance(module, dynamic):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, DynamicQuantizedLinearStandIn(module))
            swapped.append(name)
        elif isinstance(module, _quantized_module_types()):
            raise ModelError(f"{name or 'the model'} is a statically quantized "
                             f"{type(module).__name__}, which attncost cannot trace; "
                             "dynamically quantized Linear layers (quantize_dynamic) are supported")
    if not swapped:
        return []
    return [f"{len(swapped)} dynamically quantized Linear layers are traced as "
            "attncost::dynamic_quantized_linear (same shapes, FLOPs 2·M·K·N); their packed "
            "weights, scales, zero points and biases count at their size"]


def _materialize_linears(model: nn.Module) -> bool:
    """Meta weights of Linear layers made zeros on the CPU, so that
    quantize_dynamic can pick (meaningless) scales; whether any were."""
    changed = False
    for module in model.modules():
        if not isinstance(module, nn.Linear):
            continue
        for name, p in list(module.named_parameters(recurse=False)):
            if p.device.type == "meta":
                module._parameters[name] = nn.Parameter(torch.zeros(p.shape, dtype=p.dtype),
                                                        requires_grad=p.requires_grad)
                changed = True
    return changed


@contextlib.contextmanager
def quantize_dynamic_on_meta():
    """While a model file loads, quantize_dynamic gets zeros for the meta
    weights of Linear layers; yields the notes that say it did."""
    import torch.ao.quantization as tq

    original = tq.quantize_dynamic
    notes: list[str] = []

    def quantize_dynamic(model, *args, **kwargs):
        if _materialize_linears(model) and not notes:
            notes.append("quantize_dynamic ran on zero weights (attncost builds parameters "
                         "without values): the packed sizes are the model's, the scales not")
        return original(model, *args, **kwargs)

    # The function is bound in the modules it is defined and re-exported in.
    homes = [m for m in (tq, sys.modules.get("torch.ao.quantization.quantize"),
                         sys.modules.get("torch.quantization"),
                         sys.modules.get("torch.quantization.quantize"))
             if m is not None and getattr(m, "quantize_dynamic", None) is original]
    for home in homes:
        home.quantize_dynamic = quantize_dynamic
    try:
        yield notes
    finally:
        for home in homes:
            home.quantize_dynamic = original
