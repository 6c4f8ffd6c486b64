"""One decode step: a token at context N for each of B sequences, with a
KV cache.  Memory-bound: the weights are read once for the batch (as they
are stored: quantized weights at their size), each sequence's KV cache (or
a linear site's state), and the ops of one forward are launched."""
from __future__ import annotations

import operator
from dataclasses import dataclass

import torch.fx as fx

from ..calibration.rates import Rates
from ..paths import layer_or_path
from ..rules.ops import is_view, op_name
from ..units import parse_dtype
from ..memory.quantized import kv_vector_bytes
from .launches import LOOKUP_OPS, Evaluator, launches_kernel

def consumers(node: fx.Node) -> list[fx.Node]:
    """The ops that read a value, looking through views of it."""
    out, todo, seen = [], list(node.users), set()
    while todo:
        user = todo.pop(0)
        if user in seen:
            continue
        seen.add(user)
        if is_view(user) or user.target is operator.getitem:
            todo.extend(user.users)
        elif launches_kernel(user):
            out.append(user)
    return out


def weight_reads(traced, ev: Evaluator, stored: dict[str, int] | None = None) -> dict[str, int]:
    """Bytes of parameters and buffers one decode step reads, by layer: each
    once, in the layer of the first op that reads it whole (a table only
    looked up, such as an untied embedding, is read a row at a time);
    ``stored`` gives the bytes of weights stored quantized, by name."""
    stored = stored or {}
    out: dict[str, int] = {}
    for p in traced.placeholders("parameter") + traced.placeholders("buffer"):
        readers = [u for u in consumers(p) if op_name(u) not in LOOKUP_OPS]
        if readers:
            layer = layer_or_path(traced.module_path(readers[0])) or "<root>"
            nbytes = stored.get(p.meta.get("attncost_param"), ev.out_bytes(p))
            out[layer] = out.get(layer, 0) + nbytes
    return out


def quantized_weight_bytes(analysis) -> dict[str, int]:
    """Parameter name -> bytes as stored, for the Linear weights that
    --weight-dtype quantizes (scales included; memory/quantized.py)."""
    quant = getattr(getattr(analysis, "loaded", None), "quantization", None)
    if quant is None or quant.weights is None:
        return {}
    from ..memory.quantized import linear_dims, linear_weight_bytes, quantized_linears

    out = {}
    for name, module in quantized_linears(analysis.loaded.module).items():
        out_features, in_features = linear_dims(module)
        out[f"{name}.weight" if name else "weight"] = linear_weight_bytes(
            out_features, in_features, quant.weights, quant.group_size)
    return out


def kv_read(site, ev: Evaluator, itemsize: int, kv_dtype: str | None = None) -> tuple[int, int]:
    """(bytes, FLOPs) of one decode step at the site, over the batch: the
    keys and values of the context (at most the window), or a linear
    site's state of heads × head_dim × features; a quantized cache
    (``kv_dtype``) as memory/quantized.py counts it."""
    if site.variant == "linear":
        state = site.heads * site.head_dim * (site.feature_dim or site.head_dim)
        return state * itemsize * ev.batch, 4 * state * ev.batch
    keys = ev.value(site.key_len)
    if site.window:
        keys = min(keys, int(site.window))
    per_head_token = int(kv_vector_bytes(site.head_dim, itemsize, kv_dtype))
    return (2 * site.kv_heads * per_head_token * keys * ev.batch,
            4 * site.heads * site.head_dim * keys * ev.batch)


@dataclass
class DecodeStep:
    seconds: float
    bytes: int
    kv_bytes: int
    sites: dict[str, float]
    layers: dict[str, float]


def decode_step(analysis, ops: list, rates: Rates, flop_exprs: dict,
                at_n: Evaluator) -> DecodeStep:
    """One token at context N for each of B sequences: the weights once, each
    sequence's KV cache, the launches of one forward; memory-bound unless
    the batch makes the FLOPs of one token per sequence take longer."""
    traced = analysis.traced
    one_token = Evaluator(traced, 1, at_n.batch)
    itemsize = parse_dtype(analysis.dtype, None).itemsize
    weights = weight_reads(traced, at_n, quantized_weight_bytes(analysis))
    quant = getattr(getattr(analysis, "loaded", None), "quantization", None)
    kv_dtype = quant.kv_cache if quant is not None else None
    kv = {s.name: kv_read(s, at_n, itemsize, kv_dtype) for s in analysis.sites}
    site_nodes = {n for s in analysis.sites for n in s.nodes}
    matmuls = [o for o in ops if o.kind == "matmul" and o.node not in site_nodes]
    flops = sum(one_token.value(flop_exprs[o.node]) for o in matmuls) + \
        sum(f for _, f in kv.values())
    kv_bytes = sum(b for b, _ in kv.values())
    total = sum(weights.values()) + kv_bytes
    bandwidth = rates.bandwidth(total)
    rate = rates.matmul(flops / max(len(matmuls), 1), analysis.dtype)
    launches = len(ops) * rates.launch_overhead
    seconds = max(flops / rate if flops else 0.0, total / bandwidth) + launches
    layers: dict[str, float] = {}
    for o in ops:
        layers[o.layer] = layers.get(o.layer, 0.0) + o.overhead_seconds
    for layer, nbytes in weights.items():
        layers[layer] = layers.get(layer, 0.0) + nbytes / bandwidth
    sites = {}
    for site in analysis.sites:
        layers[site.layer] = layers.get(site.layer, 0.0) + kv[site.name][0] / bandwidth
        overhead = sum(o.overhead_seconds for o in ops if o.site == site.name)
        sites[site.name] = kv[site.name][0] / bandwidth + overhead
    return DecodeStep(seconds, total, kv_bytes, sites, layers)
