"""How long the traced model takes on a GPU: prefill (one forward at N) and
decode (one token at context N with a KV cache), per site, per layer, in total.

Every op the traced graph launches costs the longer of its FLOPs at the
rate its class achieves and its bytes at the bandwidth achieved for that
many bytes, plus one launch overhead (eager PyTorch launches every op from
Python); views launch nothing and cost nothing.  Classes: matrix products
(FLOP/s by the FLOPs of one product), fused attention kernels (FLOP/s by N,
per kernel, mask and head dim; kernels that skip masked blocks are charged
the FLOPs the mask lets through), everything else by its bytes.

Bytes moved by an op are its inputs plus its outputs, each read or written
once: an approximation that ignores caches and kernels that read an input
twice; a lookup (embedding, index) reads the rows it returns, not its table.

Decode is memory-bound: one step reads the weights once for the whole batch
and each sequence's KV cache, launches the ops of one forward, and does the
FLOPs of one token per sequence.

Rates come from a calibration (`attncost calibrate`) when there is one for
the GPU, else from the datasheet (peak FLOP/s and bandwidth, a default
launch overhead): then every figure is a lower bound.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.fx as fx

from ..calibration.rates import DEFAULT_LAUNCH_OVERHEAD, Rates
from ..calibration.tables import Calibration, bundled_calibration, load_calibration, names_card
from ..errors import AttncostError
from ..expr import value_at
from ..gpus import GPU, get_gpu
from ..paths import layer_or_path
from ..rules import flop_rules, node_flops
from ..rules.ops import (FLEX_ATTENTION, GATHER_OPS, is_fused_attention, is_view, op_name,
                         schema_args)
from ..tracing.graph import tensor_outputs
from ..units import dtype_name, parse_dtype

#: Ops that allocate without launching a kernel.
NO_KERNEL_OPS = frozenset({"empty", "empty_strided", "empty_like", "new_empty",
                           "new_empty_strided", "_assert_async", "_assert_scalar"})
#: Ops that read rows of their first input (a table), not all of it.
LOOKUP_OPS = frozenset({"embedding"} | {op.__name__ for op in GATHER_OPS})
#: SDPA's aten forms that name their kernel.
_NAMED_KERNELS = {"_scaled_dot_product_flash_attention": "flash", "_flash_attention_forward": "flash",
                  "_scaled_dot_product_cudnn_attention": "flash",
                  "_scaled_dot_product_efficient_attention": "efficient",
                  "_efficient_attention_forward": "efficient",
                  "_scaled_dot_product_attention_math": "math"}


@dataclass(frozen=True)
class OpTime:
    """One launched op at the analysis' N and B."""

    node: str
    op: str
    kind: str  # matmul | attention | memory
    layer: str
    site: str | None
    flops: int  # what the kernel does (useful FLOPs where it skips masked blocks)
    bytes: int
    compute_seconds: float
    memory_seconds: float
    overhead_seconds: float
    kernel: str = ""  # an attention op's kernel: flash, efficient, math, flex

    @property
    def seconds(self) -> float:
        return max(self.compute_seconds, self.memory_seconds) + self.overhead_seconds


@dataclass
class SiteTime:
    """One attention site: prefill and per-token decode seconds."""

    name: str
    seconds: float
    decode_seconds: float
    kernel: str  # flash, efficient, math, flex, or the ops of an unfused site
    bound: str  # compute | memory | launch


@dataclass
class LayerTime:
    layer: str
    prefill_seconds: float
    decode_seconds: float


@dataclass
class TimeEstimate:
    """Prefill and decode time of one analysis on one GPU."""

    gpu: str
    calibration: str  # measured | datasheet
    seq_len: int
    batch: int
    prefill_seconds: float
    decode_seconds_per_token: float
    launch_overhead_seconds: float
    ops: int
    kv_cache_bytes: int
    decode_bytes: int
    sites: list[SiteTime] = field(default_factory=list)
    layers: list[LayerTime] = field(default_factory=list)
    calibration_file: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def prefill_tokens_per_second(self) -> float:
        return self.batch * self.seq_len / self.prefill_seconds if self.prefill_seconds else 0.0

    @property
    def decode_tokens_per_second(self) -> float:
        """Tokens a decode step yields per second over the batch."""
        return self.batch / self.decode_seconds_per_token if self.decode_seconds_per_token else 0.0


# ------------------------------------------------------------------ ops


def launches_kernel(node: fx.Node) -> bool:
    """Does eager PyTorch launch work for this node (not a view, not Python)?"""
    if node.op != "call_function" or is_view(node) or op_name(node) in NO_KERNEL_OPS:
        return False
    if node.target is FLEX_ATTENTION:
        return True
    return isinstance(node.target, torch._ops.OpOverload) and bool(tensor_outputs(node))


class _Evaluator:
    """Byte counts of graph values at one N and B, each expression evaluated once."""

    def __init__(self, traced, seq_len: int, batch: int):
        self.traced, self.seq_len, self.batch = traced, seq_len, batch
        self._values: dict = {}

    def value(self, expr) -> int:
        if expr not in self._values:
            self._values[expr] = max(0, value_at(expr, self.seq_len, self.batch))
        return self._values[expr]

    def out_bytes(self, node: fx.Node) -> int:
        return sum(self.value(e) for e in self.traced.output_bytes(node))

    def in_bytes(self, node: fx.Node) -> int:
        args, rows = _input_nodes(node), 0
        if op_name(node) in LOOKUP_OPS and args:
            args, rows = args[1:], self.out_bytes(node)  # the rows read, not the table
        return sum(self.out_bytes(a) for a in args) + rows


def _input_nodes(node: fx.Node) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), found.append)
    return [n for n in found if tensor_outputs(n)]


def attention_kernel(node: fx.Node, site, dtype) -> tuple[str, tuple[str, ...], bool]:
    """(kernel, its tables' masks in order of preference, does it skip masked
    blocks) for a fused attention call, as SDPA would dispatch it on a GPU:
    flash for 16-bit inputs without a mask, memory-efficient otherwise."""
    window = bool(site is not None and site.window)
    causal = bool(site is not None and site.causal)
    if node.target is FLEX_ATTENTION:
        kernel, skips = "flex", True
    else:
        args = schema_args(node)
        has_mask = args.get("attn_mask") is not None or args.get("attn_bias") is not None
        kernel = _NAMED_KERNELS.get(op_name(node))
        if kernel is None:
            big_head = site is not None and site.head_dim > 256
            kernel = "efficient" if has_mask or big_head or dtype_name(dtype) == "float32" \
                else "flash"
        skips = kernel != "math" and not has_mask
    if skips and window:
        return kernel, ("window", "causal", "full"), True
    return kernel, ("causal", "full") if causal else ("full", "causal"), skips


def _dtype_of(node: fx.Node, default: str) -> str:
    outs = tensor_outputs(node)
    return dtype_name(outs[0].dtype) if outs and outs[0].is_floating_point() else default


def op_times(analysis, rates: Rates, flop_exprs: dict, ev: _Evaluator) -> list[OpTime]:
    """Every launched op of the traced graph at ``ev``'s N and B."""
    traced = analysis.traced
    site_of = {name: s for s in analysis.sites for name in s.nodes}
    out = []
    for node in traced.nodes:
        if not launches_kernel(node):
            continue
        site = site_of.get(node.name)
        flops, nbytes = ev.value(flop_exprs[node.name]), ev.in_bytes(node) + ev.out_bytes(node)
        dtype = _dtype_of(node, analysis.dtype)
        kernel = ""
        if is_fused_attention(node):
            kind = "attention"
            kernel, masks, skips = attention_kernel(node, site, dtype)
            if skips and site is not None and ev.value(site.flops):
                flops = flops * ev.value(site.useful_flops) // ev.value(site.flops)
            head_dim = site.head_dim if site is not None else 64
            length = ev.value(site.key_len) if site is not None else ev.seq_len
            rate = rates.attention(kernel, masks, head_dim, length, dtype)
        elif flops > 0:
            kind, rate = "matmul", rates.matmul(flops, dtype)
        else:
            kind, rate = "memory", None
        out.append(OpTime(
            node=node.name, op=op_name(node), kind=kind, site=site.name if site else None,
            layer=layer_or_path(traced.module_path(node)) or "<root>", flops=flops, bytes=nbytes,
            compute_seconds=flops / rate if rate else 0.0,
            memory_seconds=nbytes / rates.bandwidth(nbytes) if nbytes else 0.0,
            overhead_seconds=rates.launch_overhead, kernel=kernel))
    return out


def _site_times(analysis, ops: list[OpTime], decode: dict) -> list[SiteTime]:
    out = []
    for site in analysis.sites:
        mine = [o for o in ops if o.site == site.name]
        fused = [o.kernel for o in mine if o.kind == "attention"]
        kernel = fused[0] if fused else "unfused"
        compute = sum(o.compute_seconds for o in mine)
        memory = sum(o.memory_seconds for o in mine)
        overhead = sum(o.overhead_seconds for o in mine)
        bound = "launch" if overhead > max(compute, memory) else \
            "compute" if compute >= memory else "memory"
        out.append(SiteTime(site.name, sum(o.seconds for o in mine), decode.get(site.name, 0.0),
                            kernel, bound))
    return out


# ------------------------------------------------------------------ decode


def _consumers(node: fx.Node) -> list[fx.Node]:
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


def weight_reads(traced, ev: _Evaluator, stored: dict[str, int] | None = None) -> dict[str, int]:
    """Bytes of parameters and buffers one decode step reads, by layer: each
    once, in the layer of the first op that reads it whole (a table only
    looked up, such as an untied embedding, is read a row at a time);
    ``stored`` gives the bytes of weights stored quantized, by name."""
    stored = stored or {}
    out: dict[str, int] = {}
    for p in traced.placeholders("parameter") + traced.placeholders("buffer"):
        readers = [u for u in _consumers(p) if op_name(u) not in LOOKUP_OPS]
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


def kv_read(site, ev: _Evaluator, itemsize: int, kv_dtype: str | None = None) -> tuple[int, int]:
    """(bytes, FLOPs) of one decode step at the site, over the batch: the
    keys and values of the context (at most the window), or a linear
    site's state of heads × head_dim × features.  A quantized cache
    (``kv_dtype``) holds 1 byte per element and a scale per token and head
    in the model's dtype (memory/quantized.py)."""
    if site.variant == "linear":
        state = site.heads * site.head_dim * (site.feature_dim or site.head_dim)
        return state * itemsize * ev.batch, 4 * state * ev.batch
    keys = ev.value(site.key_len)
    if site.window:
        keys = min(keys, int(site.window))
    per_head_token = site.head_dim * itemsize if kv_dtype is None else site.head_dim + itemsize
    return (2 * site.kv_heads * per_head_token * keys * ev.batch,
            4 * site.heads * site.head_dim * keys * ev.batch)


@dataclass
class DecodeStep:
    seconds: float
    bytes: int
    kv_bytes: int
    sites: dict[str, float]
    layers: dict[str, float]


def decode_step(analysis, ops: list[OpTime], rates: Rates, flop_exprs: dict,
                at_n: _Evaluator) -> DecodeStep:
    """One token at context N for each of B sequences: the weights once, each
    sequence's KV cache, the launches of one forward; memory-bound unless
    the batch makes the FLOPs of one token per sequence take longer."""
    traced = analysis.traced
    one_token = _Evaluator(traced, 1, at_n.batch)
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


# ------------------------------------------------------------------ the answer


def resolve(gpu: str | GPU | None, calibration, dtype: str,
            gpu_specs=()) -> tuple[GPU, Calibration | None]:
    """The GPU and its calibration: the file given, else the one shipped for
    the card (attncost/specs/calibration), else none (the datasheet)."""
    if isinstance(calibration, (str, Path)):
        calibration = load_calibration(calibration)
    if gpu is None and calibration is None:
        raise AttncostError("a time estimate needs --gpu NAME (or --calibration FILE)")
    spec = gpu if isinstance(gpu, GPU) else get_gpu(gpu if gpu is not None else calibration.gpu,
                                                    gpu_specs)
    if calibration is None:
        calibration = bundled_calibration(spec, dtype)
    return spec, calibration


def time_model(analysis, gpu: str | GPU | None = None, calibration=None, gpu_specs=(),
               seq_len: int | None = None, batch: int | None = None) -> TimeEstimate:
    """Prefill and decode time of ``analysis`` on ``gpu`` (a name or GPU),
    at its N and B or at ``seq_len`` and ``batch`` within the range its
    trace holds for; ``calibration`` is a file `attncost calibrate` wrote."""
    if analysis.traced is None:
        raise AttncostError("no time estimate for this model: its formulas are fitted from "
                            "traces at short lengths (it loops over the sequence), and the time "
                            "model walks one traced graph; analyse it without --gpu")
    if getattr(analysis, "mode", "infer") != "infer":
        raise AttncostError("--gpu times inference (prefill and decode), not --mode train")
    n = analysis.seq_len if seq_len is None else int(seq_len)
    lo, hi = analysis.n_range
    if n < lo or (hi is not None and n > hi):
        raise AttncostError(f"the trace holds for N in {lo}..{hi or 'inf'}, not {n}: "
                            "analyze the model at that length")
    ev = _Evaluator(analysis.traced, n, analysis.batch if batch is None else int(batch))
    spec, calib = resolve(gpu, calibration, analysis.dtype, gpu_specs)
    rates = Rates(spec, analysis.dtype, calib)
    rules = flop_rules()
    exprs = {n.name: node_flops(analysis.traced, n, rules) for n in analysis.traced.nodes
             if launches_kernel(n)}
    ops = op_times(analysis, rates, exprs, ev)
    decode = decode_step(analysis, ops, rates, exprs, ev)
    layers: dict[str, float] = {}
    for o in ops:
        layers[o.layer] = layers.get(o.layer, 0.0) + o.seconds
    names = list(dict.fromkeys(list(layers) + list(decode.layers)))
    return TimeEstimate(
        gpu=spec.name, calibration=rates.kind, seq_len=ev.seq_len, batch=ev.batch,
        prefill_seconds=sum(o.seconds for o in ops), decode_seconds_per_token=decode.seconds,
        launch_overhead_seconds=rates.launch_overhead, ops=len(ops),
        kv_cache_bytes=decode.kv_bytes, decode_bytes=decode.bytes,
        sites=_site_times(analysis, ops, decode.sites),
        layers=[LayerTime(n, layers.get(n, 0.0), decode.layers.get(n, 0.0)) for n in names],
        calibration_file=calib.source if calib is not None else None,
        notes=_notes(spec, calib, rates))


def time_if_inference(analysis, gpu: GPU | None, calibration=None) -> TimeEstimate | None:
    """The time on ``gpu`` (what `fits --gpu` shows); None without a GPU or
    for a training step, which has no prefill or decode."""
    if gpu is None or getattr(analysis, "mode", "infer") != "infer" or analysis.traced is None:
        return None
    return time_model(analysis, gpu, calibration)


def _notes(spec: GPU, calib: Calibration | None, rates: Rates) -> list[str]:
    if calib is None:
        return [f"{spec.name}'s datasheet peak FLOP/s and bandwidth, "
                f"{DEFAULT_LAUNCH_OVERHEAD * 1e6:g} µs per launched op assumed; real runs are "
                "slower (`attncost calibrate` on the card measures what it achieves)"]
    notes = [f"calibrated on {calib.gpu} ({calib.dtype}, torch {calib.torch_version or '?'}, "
             f"{calib.date or 'undated'})"]
    if not names_card(calib.gpu, spec):
        notes.append(f"the calibration was measured on {calib.gpu}, not {spec.name}")
    if rates.fallbacks:
        notes.append("not in the calibration, the datasheet's peak used instead: "
                     + ", ".join(sorted(rates.fallbacks)))
    return notes

