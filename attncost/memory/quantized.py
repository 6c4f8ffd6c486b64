"""Quantized weights and KV caches: the bytes each format holds, scales included.

Per weight of an nn.Linear of shape (out, in), n = out·in weights:

* ``int8``: 1 byte per weight and one float32 scale per output channel
  (bitsandbytes' LLM.int8 row scales; torchao int8 weight-only likewise per
  channel);
* ``fp8_e4m3``: 1 byte per weight and one float32 scale per output channel
  (row-wise fp8);
* ``int4``: 2 weights per byte and, per group of G inputs of each output
  channel (G = 128 unless ``group_size`` says), a bfloat16 scale and a
  bfloat16 zero point (asymmetric int4, torchao's int4 weight-only layout);
* ``nf4``: 2 weights per byte and one absmax per block of G = 64
  consecutive weights (bitsandbytes' blocksize), double-quantized as
  bitsandbytes does by default in transformers' 4-bit loading: each absmax
  stored in 1 byte, one float32 absmax per 256 blocks and one float32
  offset per tensor, and the tensor's own 16-entry float32 code (64 bytes).
  The 256-entry map the second level shares across tensors is not counted.

Which Linear layers: those transformers' quantizers convert by default
(``get_keys_to_not_convert``): all but the output embedding (``lm_head``),
layers whose weight is tied to another module, and the module of the
model's last parameter.  Embeddings, norms and every other parameter keep
the model's dtype.  Matmuls are counted in the model's dtype: a kernel that
dequantizes a weight into a temporary is not modelled.

A KV cache in ``fp8`` or ``int8`` holds 1 byte per element and one scale
per token per head (per vector of the head dim), in the model's dtype.
The cache is what a config's forward returns from inside its layers.
"""
from __future__ import annotations

import dataclasses
import math
import operator
from dataclasses import dataclass

import sympy
import torch
import torch.fx as fx

from ..errors import AttncostError
from ..paths import layer_of
from ..rules.ops import is_view
from ..units import KV_CACHE_DTYPES, WEIGHT_DTYPES, dtype_bits, dtype_name

#: Default group (block) size of the formats quantized in groups.
DEFAULT_GROUP_SIZE = {"int4": 128, "nf4": 64}
#: Bytes of the scales a format keeps (see the module's docstring).
ROW_SCALE_BYTES = 4          # int8, fp8_e4m3: float32 per output channel
INT4_SCALE_ZERO_BYTES = 2 + 2  # bfloat16 scale + bfloat16 zero point per group
NF4_NESTED_BLOCK = 256       # absmax values per second-level block
NF4_CODE_BYTES = 16 * 4      # the per-tensor NF4 code: 16 float32


@dataclass(frozen=True)
class Quantization:
    """What is stored quantized: the weights' format and group, the KV cache's."""

    weights: str | None = None
    group_size: int | None = None
    kv_cache: str | None = None

    def to_dict(self) -> dict:
        return {"weights": self.weights, "group_size": self.group_size, "kv_cache": self.kv_cache}


def quantization(weight_dtype: str | None = None, group_size: int | None = None,
                 kv_cache_dtype: str | None = None) -> Quantization | None:
    """The checked options (None when nothing is quantized)."""
    weights = _choice(weight_dtype, WEIGHT_DTYPES, "--weight-dtype")
    kv = _choice(kv_cache_dtype, KV_CACHE_DTYPES, "--kv-cache-dtype")
    if group_size is not None:
        if weights not in DEFAULT_GROUP_SIZE:
            raise AttncostError("--group-size applies to --weight-dtype int4 or nf4 (int8 and "
                                "fp8_e4m3 keep one scale per output channel)")
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size <= 0:
            raise AttncostError(f"--group-size must be a positive integer, not {group_size}")
    elif weights in DEFAULT_GROUP_SIZE:
        group_size = DEFAULT_GROUP_SIZE[weights]
    if weights is None and kv is None:
        return None
    return Quantization(weights, group_size, kv)


def _choice(value, allowed: tuple[str, ...], option: str) -> str | None:
    if value is None:
        return None
    name = dtype_name(value)
    names = {dtype_name(a): a for a in allowed}
    if name not in names:
        raise AttncostError(f"unknown {option} {value!r}: use one of {', '.join(allowed)}")
    return name if option == "--weight-dtype" else names[name]


def linear_weight_bytes(out_features: int, in_features: int, fmt: str,
                        group_size: int | None) -> int:
    """Bytes of one (out, in) weight stored as ``fmt``, its scales included."""
    n = out_features * in_features
    data = math.ceil(n * dtype_bits(fmt) / 8)
    if fmt in ("int8", "fp8_e4m3"):
        return data + out_features * ROW_SCALE_BYTES
    group = group_size or DEFAULT_GROUP_SIZE[fmt]
    if fmt == "int4":
        return data + out_features * math.ceil(in_features / group) * INT4_SCALE_ZERO_BYTES
    blocks = math.ceil(n / group)
    return data + blocks + 4 * math.ceil(blocks / NF4_NESTED_BLOCK) + 4 + NF4_CODE_BYTES


def kept_unquantized(model: torch.nn.Module) -> set[str]:
    """Module names transformers' quantizers leave alone: the output
    embedding, modules with tied weights, the module of the last parameter."""
    owners: dict[int, set[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        for p in module.parameters(recurse=False):
            owners.setdefault(id(p), set()).add(name)
    keep = {n for names in owners.values() if len(names) > 1 for n in names}
    params = list(model.named_parameters())
    if params:
        keep.add(params[-1][0].rpartition(".")[0])
    output = getattr(model, "get_output_embeddings", None)
    head = output() if callable(output) else None
    if head is not None:
        keep |= {n for n, m in model.named_modules() if m is head}
    return keep


def _conv1d_type():
    """transformers' Conv1D (GPT-2): a Linear whose weight is stored (in, out)."""
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:
        return ()
    return (Conv1D,)


def linear_dims(module: torch.nn.Module) -> tuple[int, int]:
    """(out, in) of a Linear or a Conv1D."""
    if isinstance(module, torch.nn.Linear):
        return module.out_features, module.in_features
    return module.weight.shape[1], module.weight.shape[0]


def quantized_linears(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The Linear (and Conv1D) layers whose weights a weight-only method quantizes."""
    keep = kept_unquantized(model)
    kinds = (torch.nn.Linear, *_conv1d_type())
    return {name: m for name, m in model.named_modules()
            if isinstance(m, kinds) and name not in keep}


def quantization_notes(model: torch.nn.Module, quant: Quantization) -> list[str]:
    """What ``quant`` applies to in ``model``, in a line."""
    if quant.weights is None:
        return []
    layers = quantized_linears(model)
    group = f" in groups of {quant.group_size}" if quant.group_size else ""
    if not layers:
        return [f"--weight-dtype {quant.weights}: the model has no Linear layer it applies to; "
                "weights count as built"]
    kept = sorted(n for n, m in model.named_modules()
                  if isinstance(m, (torch.nn.Linear, *_conv1d_type())) and n not in layers)
    return [f"{len(layers)} Linear weights counted as {quant.weights}{group} with their scales"
            + (f"; kept in the model's dtype: {', '.join(kept)}" if kept else "")]


def tensor_bytes(t: torch.Tensor) -> int:
    """A tensor's bytes; a tensor subclass (torchao's quantized weights)
    counts the inner tensors it is made of."""
    flatten = getattr(type(t), "__tensor_flatten__", None)
    if flatten is not None and type(t) not in (torch.Tensor, torch.nn.Parameter):
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, name)) for name in names)
    return t.numel() * t.element_size()


def weight_bytes(model: torch.nn.Module, quant: Quantization | None = None) -> int:
    """Parameters and buffers, each tensor once (tied weights count once),
    Linear weights at ``quant.weights``' size, packed weights of dynamically
    quantized layers at theirs."""
    from ..loader.quantized import DynamicQuantizedLinearStandIn

    formats = {}
    if quant is not None and quant.weights is not None:
        formats = {id(m.weight): m for m in quantized_linears(model).values()}
    seen: dict[int, int] = {}
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in seen:
            continue
        layer = formats.get(id(t))
        seen[id(t)] = tensor_bytes(t) if layer is None else linear_weight_bytes(
            *linear_dims(layer), quant.weights, quant.group_size)
    packed = sum(m.packed_bytes for m in model.modules()
                 if isinstance(m, DynamicQuantizedLinearStandIn))
    return sum(seen.values()) + packed


# ------------------------------------------------------------------ KV cache


def _base(node: fx.Node) -> tuple[fx.Node, int]:
    """The node whose storage a graph output views, and which of its outputs."""
    while node.op == "call_function":
        if node.target is operator.getitem and isinstance(node.args[0], fx.Node):
            src = node.args[0]
            if not is_view(src):
                return src, int(node.args[1])
            node = src
        elif is_view(node) and isinstance(node.args[0], fx.Node):
            node = node.args[0]
        else:
            break
    return node, 0


def kv_cache_outputs(traced) -> list[tuple[fx.Node, int]]:
    """The tensors a forward returns from inside its layers: its KV cache."""
    out_node = next(n for n in traced.nodes if n.op == "output")
    found: dict[tuple[fx.Node, int], None] = {}
    for arg in torch.utils._pytree.tree_flatten(out_node.args)[0]:
        if not isinstance(arg, fx.Node):
            continue
        base, k = _base(arg)
        if base.op == "call_function" and layer_of(traced.module_path(base)) is not None:
            found[(base, k)] = None
    return list(found)


def kv_vector_bytes(width, itemsize: int, kv_dtype: str | None):
    """Bytes of one cached vector (a head's key or value for one token) of
    ``width`` elements: as the model stores it (``itemsize`` bytes each), or
    quantized at ``kv_dtype`` plus one scale in the model's dtype."""
    if kv_dtype is None:
        return width * itemsize
    return width * sympy.Rational(dtype_bits(kv_dtype), 8) + itemsize


def kv_tensor_bytes(traced, node: fx.Node, output: int, kv_dtype: str | None) -> sympy.Expr:
    """Bytes of one cache tensor: its vectors along the last dim, each as
    ``kv_vector_bytes`` counts it."""
    from ..tracing.graph import tensor_outputs

    t = tensor_outputs(node)[output]
    dims = [traced.expr(s) for s in t.shape]
    if not dims:
        return sympy.Integer(t.element_size())
    vectors = sympy.Mul(*dims[:-1]) if len(dims) > 1 else sympy.Integer(1)
    return sympy.expand(vectors * kv_vector_bytes(dims[-1], t.element_size(), kv_dtype))


def kv_cache_bytes(traced, kv_dtype: str | None = None) -> sympy.Expr:
    """The KV cache's bytes as an expression in N and B (``kv_dtype`` None:
    as the model stores it)."""
    return sympy.expand(sum((kv_tensor_bytes(traced, node, k, kv_dtype)
                             for node, k in kv_cache_outputs(traced)), sympy.Integer(0)))


def quantize_cache(traced, allocations: list, quant: Quantization | None,
                   notes: list[str]) -> list:
    """The allocations with the cache's storages at the KV cache dtype's size."""
    if quant is None or quant.kv_cache is None:
        return allocations
    cache = set(kv_cache_outputs(traced))
    if not cache:
        notes.append(f"--kv-cache-dtype {quant.kv_cache}: the forward returns no KV cache "
                     "from its layers; nothing was resized")
    return [dataclasses.replace(a, bytes=kv_tensor_bytes(traced, a.node, a.output, quant.kv_cache))
            if (a.node, a.output) in cache else a for a in allocations]
