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
FLOPs of one token per sequence (decode.py).  Which ops launch and what they
touch: launches.py.

Rates come from a calibration (`attncost calibrate`) when there is one for
the GPU, else from the datasheet (peak FLOP/s and bandwidth, a default
launch overhead): then every figure is a lower bound.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch.fx as fx

from ..calibration.rates import DEFAULT_LAUNCH_OVERHEAD, Rates
from ..calibration.tables import Calibration, bundled_calibration, load_calibration, names_card
from ..errors import AttncostError
from ..gpus import GPU, get_gpu
from ..paths import layer_or_path
from ..rules import flop_rules, node_flops
from ..rules.ops import FLEX_ATTENTION, is_fused_attention, op_name, qkv_args, schema_args
from ..tracing.graph import tensor_outputs
from ..units import dtype_name
from .decode import decode_step
from .launches import Evaluator, launches_kernel

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


@dataclass(frozen=True)
class OpWork:
    """What one launched op does at one N and B, and what its rate is looked
    up by (a fused attention call: its kernel, masks, head dim and length)."""

    node: str
    op: str
    kind: str  # matmul | attention | memory
    layer: str
    module: str
    site: str | None
    flops: int
    bytes: int
    dtype: str
    kernel: str = ""
    masks: tuple[str, ...] = ()
    head_dim: int = 0
    length: int = 0


def _query_head_dim(node: fx.Node) -> int:
    val = getattr(qkv_args(node)[0], "meta", {}).get("val")
    return int(val.shape[-1]) if val is not None else 64


def op_work(analysis, flop_exprs: dict, ev: Evaluator) -> list[OpWork]:
    """Every launched op of the traced graph at ``ev``'s N and B."""
    traced = analysis.traced
    sites_of: dict[str, list] = {}  # a computation whose heads differ is several sites
    for s in analysis.sites:
        for name in s.nodes:
            sites_of.setdefault(name, []).append(s)
    out = []
    for node in traced.nodes:
        if not launches_kernel(node):
            continue
        group = sites_of.get(node.name, [])
        site = group[0] if group else None
        flops, nbytes = ev.value(flop_exprs[node.name]), ev.in_bytes(node) + ev.out_bytes(node)
        dtype, path = _dtype_of(node, analysis.dtype), traced.module_path(node)
        extra: dict = {}
        if is_fused_attention(node):
            kind = "attention"
            kernel, masks, skips = attention_kernel(node, site, dtype)
            written = sum(ev.value(s.flops) for s in group)
            if skips and written:
                flops = flops * sum(ev.value(s.useful_flops) for s in group) // written
            extra = dict(kernel=kernel, masks=masks,
                         head_dim=site.head_dim if site is not None else _query_head_dim(node),
                         length=ev.value(site.key_len) if site is not None else ev.seq_len)
        else:
            kind = "matmul" if flops > 0 else "memory"
        out.append(OpWork(node=node.name, op=op_name(node), kind=kind,
                          layer=layer_or_path(path) or "<root>", module=path,
                          site=site.name if site else None, flops=flops, bytes=nbytes,
                          dtype=dtype, **extra))
    return out


def timed(work: OpWork, rates: Rates) -> OpTime:
    """An op's time: the longer of its FLOPs at its class's rate and its bytes
    at the bandwidth for that many bytes, plus a launch."""
    if work.kind == "attention":
        rate = rates.attention(work.kernel, work.masks, work.head_dim, work.length, work.dtype)
    elif work.kind == "matmul":
        rate = rates.matmul(work.flops, work.dtype)
    else:
        rate = None
    return OpTime(
        node=work.node, op=work.op, kind=work.kind, site=work.site, layer=work.layer,
        flops=work.flops, bytes=work.bytes,
        compute_seconds=work.flops / rate if rate else 0.0,
        memory_seconds=work.bytes / rates.bandwidth(work.bytes) if work.bytes else 0.0,
        overhead_seconds=rates.launch_overhead, kernel=work.kernel)


def op_times(analysis, rates: Rates, flop_exprs: dict, ev: Evaluator) -> list[OpTime]:
    """Every launched op of the traced graph at ``ev``'s N and B, timed."""
    return [timed(w, rates) for w in op_work(analysis, flop_exprs, ev)]


def _site_time(name: str, mine: list[tuple[OpTime, int]], share: float,
               decode_seconds: float) -> SiteTime:
    """One site from its ops, each with how many times it runs."""
    fused = [o.kernel for o, _ in mine if o.kind == "attention"]
    compute = sum(o.compute_seconds * c for o, c in mine)
    memory = sum(o.memory_seconds * c for o, c in mine)
    overhead = sum(o.overhead_seconds * c for o, c in mine)
    bound = "launch" if overhead > max(compute, memory) else \
        "compute" if compute >= memory else "memory"
    return SiteTime(name, share * sum(o.seconds * c for o, c in mine), decode_seconds,
                    fused[0] if fused else "unfused", bound)


def _site_times(analysis, ops: list[OpTime], decode: dict) -> list[SiteTime]:
    out = []
    for site in analysis.sites:
        nodes = set(site.nodes)
        out.append(_site_time(site.name, [(o, 1) for o in ops if o.node in nodes],
                              float(site.head_share), decode.get(site.name, 0.0)))
    return out


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
    if analysis.traced is None and getattr(analysis, "loaded", None) is None:
        raise AttncostError("no time estimate for this analysis: it has no traced graph")
    if getattr(analysis, "mode", "infer") != "infer":
        raise AttncostError("--gpu times inference (prefill and decode), not --mode train")
    n = analysis.seq_len if seq_len is None else int(seq_len)
    lo, hi = analysis.n_range
    if n < lo or (hi is not None and n > hi):
        raise AttncostError(f"the trace holds for N in {lo}..{hi or 'inf'}, not {n}: "
                            "analyze the model at that length")
    ev = Evaluator(analysis.traced, n, analysis.batch if batch is None else int(batch))
    spec, calib = resolve(gpu, calibration, analysis.dtype, gpu_specs)
    rates = Rates(spec, analysis.dtype, calib)
    if analysis.traced is None:
        return _loop_estimate(analysis, spec, calib, rates, ev)
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


def _loop_estimate(analysis, spec: GPU, calib, rates: Rates, ev: Evaluator) -> TimeEstimate:
    """A model that loops over the sequence: its ops fitted from short traces
    (loop_time.py)."""
    from .loop_time import loop_time, site_ops

    t = loop_time(analysis, rates, ev.seq_len, ev.batch, flop_rules())
    kv_seconds = {k: b / rates.bandwidth(b) if b else 0.0 for k, b in t.kv_bytes.items()}
    layers: dict[str, list[float]] = {}
    for i, done in enumerate((t.prefill, t.step)):
        for o, w, c in done:
            layers.setdefault(w.layer, [0.0, 0.0])[i] += o.seconds * c
    sites = []
    for s in analysis.sites:
        step = sum(o.seconds * c for o, c in site_ops(s, t, step=True)) + \
            kv_seconds.get(s.name, 0.0)
        sites.append(_site_time(s.name, site_ops(s, t), 1.0, step))
    return TimeEstimate(
        gpu=spec.name, calibration=rates.kind, seq_len=ev.seq_len, batch=ev.batch,
        prefill_seconds=sum(o.seconds * c for o, _, c in t.prefill),
        decode_seconds_per_token=sum(o.seconds * c for o, _, c in t.step) +
        sum(kv_seconds.values()),
        launch_overhead_seconds=rates.launch_overhead, ops=sum(c for _, _, c in t.prefill),
        kv_cache_bytes=sum(t.kv_bytes.values()),
        decode_bytes=sum(o.bytes * c for o, _, c in t.step) + sum(t.kv_bytes.values()),
        sites=sites, layers=[LayerTime(k, p, d) for k, (p, d) in layers.items()],
        calibration_file=calib.source if calib is not None else None,
        notes=_notes(spec, calib, rates) + [_loop_note(t)])


def _loop_note(t) -> str:
    return (f"the model loops over the sequence: its launched ops are fitted from traces at "
            f"N={', '.join(map(str, t.lengths))} (exact at N={t.held}); decode is one token's "
            "forward with the loop's state carried")


def time_if_inference(analysis, gpu: GPU | None, calibration=None) -> TimeEstimate | None:
    """The time on ``gpu`` (what `fits --gpu` shows); None without a GPU or
    for a training step, which has no prefill or decode."""
    if gpu is None or getattr(analysis, "mode", "infer") != "infer":
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

