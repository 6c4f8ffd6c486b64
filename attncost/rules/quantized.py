"""FLOPs of quantized matmuls: a quantized Linear does the work of a Linear.

``quantized::linear_dynamic`` (and its fp16 and fused-ReLU forms) take the
input and a packed weight; attncost traces a dynamically quantized Linear
as ``attncost::dynamic_quantized_linear`` (loader/quantized.py).  Each is
2·M·K·N for an input of M rows of K features and N outputs, as
FlopCounterMode counts the float Linear it replaces; quantizing and
dequantizing the activations is elementwise work, not counted.
"""
from __future__ import annotations

import sympy
import torch

from ..loader.quantized import DYNAMIC_QUANTIZED_LINEAR
from .flops import FLOP_RULES

_QUANTIZED_LINEARS = [getattr(torch.ops.quantized, name) for name in
                      ("linear_dynamic", "linear_dynamic_fp16", "linear_relu_dynamic",
                       "linear_relu_dynamic_fp16")
                      if hasattr(torch.ops.quantized, name)]


@FLOP_RULES.register(DYNAMIC_QUANTIZED_LINEAR, *_QUANTIZED_LINEARS)
def quantized_linear_flops(x, *args, out_shape=None, **kwargs):
    """(..., K) rows times a (N, K) packed weight: 2 per multiply-add."""
    return 2 * sympy.Mul(*x) * out_shape[-1]
