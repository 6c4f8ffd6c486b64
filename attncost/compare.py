"""One model under several choices (attention implementation, dtype), and
other FLOP counters beside attncost's count.

A choice is one trace; the table puts their FLOPs, attention FLOPs, peak
memory and largest N on a GPU side by side.  A baseline is another tool's
count of the same forward at the same N, per layer: fvcore's
``FlopCountAnalysis`` (a real forward under ``torch.jit.trace``, so only for
models small enough to build on this CPU) and torch's ``FlopCounterMode``
(on fake tensors, any size).  Both miss work they have no rule for (a fused
attention call on a CPU counts 0); the per-layer table shows what each
misses.  The data (``Comparison``) is built first and rendered second.
"""
from __future__ import annotations

import json
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import sympy
import torch

from .analysis import Analysis, analyze
from .errors import AttncostError
from .report import human_bytes, human_flops, human_tokens

BASELINES = ("fvcore", "flopcounter")
COUNTER_NAMES = {"attncost": "attncost", "fvcore": "fvcore ×2", "flopcounter": "FlopCounterMode"}
OUTSIDE = "(outside the layers)"

#: fvcore builds and runs the model for real on this CPU: the largest models it may.
MAX_REAL_PARAMETERS = 50_000_000
#: ... and the most memory that real float32 forward may need, as attncost predicts it.
MAX_REAL_BYTES = 4 << 30

#: Ops that do matrix work which a counter may have no rule for, by readable name.
FUSED_OPS = {
    "scaled_dot_product_attention": "fused SDPA",
    "_scaled_dot_product_flash_attention_for_cpu": "fused SDPA",
    "_scaled_dot_product_attention_math": "SDPA (math)",
    "_native_multi_head_attention": "nn.MultiheadAttention fast path",
    "_transformer_encoder_layer_fwd": "nn.TransformerEncoderLayer fast path",
    "flex_attention": "flex_attention",
    "baddbmm": "baddbmm",
    "addbmm": "addbmm",
    "addmv": "addmv",
    "mv": "mv",
    "dot": "dot",
}
#: fvcore's rules for matrix work; its other rules (norms, pooling) count what attncost does not.
FVCORE_MATRIX_OPS = {"addmm", "bmm", "_convolution", "conv", "einsum", "matmul", "mm", "linear"}


# ------------------------------------------------------------------ data


@dataclass
class Choice:
    """The model under one attention implementation and dtype, at N."""

    label: str
    analysis: Analysis = field(repr=False)
    flops: int
    attention_flops: int
    useful_attention_flops: int
    peak_memory_bytes: int | None
    max_seq_len: int | None = None
    fits: bool | None = None

    @property
    def attention_summary(self) -> list[str]:
        """'dense causal (sdpa) ×22': sites that differ only by layer, once."""
        counts = Counter(_site_kind(s) for s in self.analysis.sites)
        return [f"{kind} ×{n}" if n > 1 else kind for kind, n in counts.items()]


@dataclass
class MissedOp:
    """Calls of one op that a counter counts as 0."""

    op: str
    calls: int
    #: what those calls do, 2 per multiply-add (None where it is not known)
    flops: int | None = None

    @property
    def text(self) -> str:
        name = FUSED_OPS.get(self.op, self.op)
        calls = f" ×{self.calls}" if self.calls > 1 else ""
        worth = f" = {human_flops(self.flops)}" if self.flops else ""
        return f"{name}{calls}{worth}"


@dataclass
class LayerCount:
    """What each counter reports for one layer (module path up to its index)."""

    layer: str
    parameters: int
    flops: dict[str, int]              # counter -> FLOPs, 2 per multiply-add
    missed: dict[str, list[MissedOp]]  # counter -> ops it counts 0


@dataclass
class BaselineComparison:
    """attncost's count against other counters, per layer, for one choice."""

    choice: str
    counters: list[str]
    layers: list[LayerCount]
    totals: dict[str, int]
    notes: list[str] = field(default_factory=list)


@dataclass
class Comparison:
    model: str
    seq_len: int
    batch: int
    device: str
    choices: list[Choice]
    gpu: str | None = None
    budget_bytes: int | None = None
    baselines: list[BaselineComparison] = field(default_factory=list)


def _site_kind(site) -> str:
    parts = [site.variant] + (["causal"] if site.causal else [])
    if site.window:
        parts.append(f"w={site.window}")
    return f"{' '.join(parts)} ({site.implementation})"


def compare_choices(model: str, seq_len: int, batch: int = 1, device: str = "cuda",
                    attn_implementations: Iterable[str | None] = (None,),
                    dtypes: Iterable[str | None] = (None,), kv_cache: bool | None = None,
                    gpu=None, budget_bytes: int | None = None,
                    baselines: Iterable[str] = ()) -> Comparison:
    """Analyze every (implementation, dtype) pair at N; count each distinct
    implementation with the requested baselines too.  With ``gpu``, the
    largest N whose peak fits ``budget_bytes`` (its memory less a reserve)."""
    from .plot import largest_fitting_seq_len

    implementations = list(dict.fromkeys(attn_implementations)) or [None]
    dtype_list = list(dict.fromkeys(dtypes)) or [None]
    baselines = list(dict.fromkeys(baselines))
    for name in baselines:
        if name not in BASELINES:
            raise AttncostError(f"unknown baseline {name!r}: use {' or '.join(BASELINES)}")
    budget = None
    if gpu is not None:
        budget = gpu.memory_bytes if budget_bytes is None else budget_bytes

    choices: list[Choice] = []
    for impl in implementations:
        for dtype in dtype_list:
            a = analyze(model, seq_len, batch=batch, dtype=dtype, device=device,
                        attn_implementation=impl, kv_cache=kv_cache)
            label = ", ".join(x for x in (a.attn_implementation, a.dtype) if x)
            peak = a.at(a.peak_memory_bytes) if a.peak_memory_bytes is not None else None
            choice = Choice(label=label, analysis=a, flops=a.at(a.flops),
                            attention_flops=a.at(a.attention_flops),
                            useful_attention_flops=a.at(a.useful_attention_flops),
                            peak_memory_bytes=peak)
            if budget is not None and peak is not None:
                choice.max_seq_len = largest_fitting_seq_len([a], budget, batch)
                choice.fits = peak <= budget
            choices.append(choice)

    comparison = Comparison(model=str(model), seq_len=seq_len, batch=batch, device=device,
                            choices=choices, gpu=gpu.name if gpu is not None else None,
                            budget_bytes=budget)
    if baselines:
        counted: set = set()
        for choice in choices:
            impl = choice.analysis.attn_implementation
            if impl in counted:
                continue  # the dtype does not change what a counter counts
            counted.add(impl)
            comparison.baselines.append(count_with_baselines(choice, baselines))
    return comparison


# ------------------------------------------------------------- per layer


def layer_group(path: str) -> str | None:
    """The module path up to its first index (``model.layers.3.mlp.0`` ->
    ``model.layers.3``); None outside any numbered layer."""
    parts = path.split(".") if path else []
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return None


def _layer_names(module: torch.nn.Module) -> list[str]:
    return [name for name, _ in module.named_modules() if name and layer_group(name) == name]


def _split_by_layer(per_module: dict[str, int], layers: list[str], total: int,
                    prefix: str = "") -> dict[str, int]:
    """Hierarchical per-module counts (a module includes its children) as
    disjoint per-layer counts, the rest under OUTSIDE."""
    out = {layer: int(per_module.get(prefix + layer, 0)) for layer in layers}
    out[OUTSIDE] = int(total) - sum(out.values())
    return out


def attncost_by_layer(a: Analysis, layers: list[str]) -> dict[str, int]:
    """attncost's FLOPs at the analysis' N and B, per layer of the traced graph."""
    from .symbolic import node_flops

    traced = a.traced
    exprs: dict[str, sympy.Expr] = {}
    for node in traced.graph_module.graph.nodes:
        flops = node_flops(traced, node)
        if flops == 0:
            continue
        key = layer_group(traced.module_path(node)) or OUTSIDE
        exprs[key] = exprs.get(key, sympy.Integer(0)) + flops
    out = {layer: a.at(exprs.pop(layer, sympy.Integer(0))) for layer in layers}
    out[OUTSIDE] = sum(a.at(e) for e in exprs.values())
    return out


def count_with_baselines(choice: Choice, baselines: list[str]) -> BaselineComparison:
    """Count one forward at the choice's N with each baseline, per layer."""
    a = choice.analysis
    module = a.loaded.module
    layers = _layer_names(module)
    counts = {"attncost": attncost_by_layer(a, layers)}
    missed: dict[str, dict[str, list[MissedOp]]] = {}
    notes: list[str] = []
    if "fvcore" in baselines:
        counts["fvcore"], missed["fvcore"], extra = _fvcore_by_layer(choice, layers)
        if extra:
            notes.append("fvcore also counts work that is not matrix work (attncost and "
                         "FlopCounterMode do not): "
                         + ", ".join(f"{op} {human_flops(v)}" for op, v in extra.items()))
        notes.append("fvcore counts one FLOP per multiply-add; shown ×2")
    if "flopcounter" in baselines:
        counts["flopcounter"], missed["flopcounter"] = _flopcounter_by_layer(a, layers)
    if any(missed.values()):
        notes.append("attncost counts a fused attention call 4·B·H·N_q·N_k·d, as FlopCounterMode "
                     "does on a GPU; on this CPU the counters run kernels they have no rule for")

    params = _parameter_counts(module)
    total_params = int(params.get("", 0))
    rows = []
    for layer in layers + [OUTSIDE]:
        n_params = (int(params.get(layer, 0)) if layer != OUTSIDE
                    else total_params - sum(int(params.get(x, 0)) for x in layers))
        row = LayerCount(layer, n_params, {c: v[layer] for c, v in counts.items()},
                         {c: m.get(layer, []) for c, m in missed.items() if m.get(layer)})
        if any(row.flops.values()) or row.missed or row.parameters:
            rows.append(row)
    totals = {c: sum(v.values()) for c, v in counts.items()}
    return BaselineComparison(choice.label, list(counts), rows, totals, notes)


def _fvcore():
    """fvcore.nn, imported quietly (its import scripts functions with torch.jit)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import fvcore.nn
    except ImportError as exc:
        raise AttncostError("--baseline fvcore needs fvcore: pip install fvcore") from exc
    return fvcore.nn


def _parameter_counts(module: torch.nn.Module) -> dict[str, int]:
    """Module path -> parameters in it and its children ('' for the whole model)."""
    try:
        return dict(_fvcore().parameter_count(module))
    except AttncostError:  # fvcore is optional for everything but its baseline
        counts: Counter = Counter()
        for name, p in module.named_parameters():
            parts = name.split(".")
            for i in range(len(parts)):
                counts[".".join(parts[:i])] += p.numel()
        return dict(counts)


# ----------------------------------------------------------- FlopCounterMode


def _flopcounter_by_layer(a: Analysis, layers: list[str]):
    """FlopCounterMode over a forward on fake tensors at the analysis' N and B,
    and the ops it has no rule for, per layer."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.func import functional_call
    from torch.utils.flop_counter import FlopCounterMode
    from torch.utils.module_tracker import ModuleTracker

    loaded = a.loaded
    module = loaded.module
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    root = type(module).__name__
    with mode:
        params = {name: torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="cpu")
                  for name, t in [*module.named_parameters(), *module.named_buffers()]}
        inputs = loaded.example_inputs(a.seq_len, a.batch)
    args, kwargs = ((), dict(inputs)) if isinstance(inputs, dict) else (tuple(inputs), {})

    tracker = ModuleTracker()
    recorder = _MissedOps(tracker, root)
    try:
        with torch.no_grad(), loaded.trace_context(), warnings.catch_warnings(), mode:
            warnings.simplefilter("ignore")
            with FlopCounterMode(display=False) as counter, tracker, recorder:
                functional_call(module, params, args, kwargs)
    except Exception as exc:
        raise AttncostError(f"FlopCounterMode could not run the model on fake tensors: "
                            f"{type(exc).__name__}: {_first_line(exc)}") from exc
    per_module = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    by_layer = _split_by_layer(per_module, layers, counter.get_total_flops(), prefix=f"{root}.")
    return by_layer, recorder.by_layer()


class _MissedOps(torch.utils._python_dispatch.TorchDispatchMode):
    """Calls of matrix-work ops FlopCounterMode has no rule for, with the
    layer that made them and, where the shapes say, their FLOPs."""

    def __init__(self, tracker, root: str):
        super().__init__()
        self.tracker, self.root = tracker, root
        self.calls: dict[tuple[str, str], MissedOp] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from torch.utils.flop_counter import flop_registry

        kwargs = kwargs or {}
        packet = func.overloadpacket
        name = packet.__name__
        if name in FUSED_OPS and packet not in flop_registry:
            layer = self._layer()
            key = (layer, name)
            op = self.calls.setdefault(key, MissedOp(name, 0, 0))
            op.calls += 1
            flops = _fused_flops(name, args)
            op.flops = None if flops is None or op.flops is None else op.flops + flops
        return func(*args, **kwargs)

    def _layer(self) -> str:
        prefix = self.root + "."
        for parent in self.tracker.parents:
            if parent.startswith(prefix):
                group = layer_group(parent[len(prefix):])
                if group is not None:
                    return group
        return OUTSIDE

    def by_layer(self) -> dict[str, list[MissedOp]]:
        out: dict[str, list[MissedOp]] = {}
        for (layer, _), op in self.calls.items():
            out.setdefault(layer, []).append(op)
        return out


def _fused_flops(name: str, args) -> int | None:
    """2 per multiply-add of a fused call, from its shapes (None: not known)."""
    if name == "_scaled_dot_product_flash_attention_for_cpu":
        q, k, v = args[0], args[1], args[2]
        b, h, n_q, d = q.shape
        # Q·Kᵀ (d per score) and P·V (d_v per score), over every (query, key) pair
        return 2 * b * h * n_q * k.shape[-2] * (d + v.shape[-1])
    if name == "_native_multi_head_attention":
        query, key, embed, heads = args[0], args[1], args[3], args[4]
        b, n_q, e = query.shape
        n_k = key.shape[1]
        in_proj = 2 * b * n_q * e * embed + 2 * b * n_k * e * 2 * embed
        attention = 2 * (2 * b * heads * n_q * n_k * (embed // heads))
        return in_proj + attention + 2 * b * n_q * embed * embed
    return None


# ------------------------------------------------------------------ fvcore


def _fvcore_by_layer(choice: Choice, layers: list[str]):
    """fvcore's FlopCountAnalysis of a real forward on this CPU, ×2, per layer."""
    FlopCountAnalysis = _fvcore().FlopCountAnalysis
    a = choice.analysis
    model, tensors, call = _real_model_and_inputs(a)
    wrapped = _PositionalCall(model, call)
    prefix = "model."
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            analysis = FlopCountAnalysis(wrapped, tuple(tensors))
            analysis.unsupported_ops_warnings(False)
            analysis.uncalled_modules_warnings(False)
            analysis.tracer_warnings("none")
            total = analysis.total()
            per_module = analysis.by_module()
            per_op = analysis.by_module_and_operator()
    except Exception as exc:
        raise AttncostError(f"fvcore could not trace the model ({type(exc).__name__}: "
                            f"{_first_line(exc)}); try --baseline flopcounter") from exc
    by_layer = {k: 2 * v for k, v in _split_by_layer(per_module, layers, total, prefix).items()}

    missed: dict[str, list[MissedOp]] = {}
    inside = Counter()
    for layer in layers:
        ops = _fused_only(analysis.unsupported_ops(prefix + layer))
        inside.update(ops)
        if ops:
            missed[layer] = [MissedOp(op, n) for op, n in ops.items()]
    rest = _fused_only(analysis.unsupported_ops("")) - inside
    if rest:
        missed[OUTSIDE] = [MissedOp(op, n) for op, n in rest.items()]
    extra: dict[str, int] = {}
    for op, flops in per_op.get("", {}).items():
        if op not in FVCORE_MATRIX_OPS and flops:
            extra[op] = 2 * int(flops)
    return by_layer, missed, extra


def _fused_only(ops: Counter) -> Counter:
    """fvcore's unsupported ops ('aten::softmax': 2) restricted to matrix work."""
    out = Counter()
    for name, n in ops.items():
        short = name.split("::")[-1]
        if short in FUSED_OPS:
            out[short] += n
    return out


class _PositionalCall(torch.nn.Module):
    """Calls a model with tensors given positionally (what jit.trace needs)
    and returns the tensors of its output."""

    def __init__(self, model: torch.nn.Module, call):
        super().__init__()
        self.model = model
        self.call = call

    def forward(self, *tensors):
        from .tracer import tensors_of

        return tuple(tensors_of(self.call(self.model, tensors)))


def _real_model_and_inputs(a: Analysis):
    """The model built for real on this CPU in float32, its input tensors, and
    how to call it with them; refuses a model too large to run here."""
    loaded = a.loaded
    n_params = sum(p.numel() for p in loaded.module.parameters())
    if n_params > MAX_REAL_PARAMETERS:
        raise AttncostError(f"--baseline fvcore runs the model for real on this CPU; {a.model} has "
                            f"{n_params / 1e6:,.0f}M parameters, more than "
                            f"{MAX_REAL_PARAMETERS // 10**6}M. Use --baseline flopcounter "
                            "(fake tensors, any size)")
    if a.peak_memory_bytes is not None:
        itemsize = torch.empty((), dtype=loaded.dtype).element_size()
        need = a.at(a.peak_memory_bytes) * 4 // itemsize
        if need > MAX_REAL_BYTES:
            raise AttncostError(f"--baseline fvcore runs the model for real on this CPU: at "
                                f"N={human_tokens(a.seq_len)} that needs about {human_bytes(need)}, "
                                f"more than {human_bytes(MAX_REAL_BYTES)}. Use a shorter --seq-len "
                                "or --baseline flopcounter")
    torch.manual_seed(0)
    try:
        if loaded.source == "config":
            with torch.device("cpu"):
                model = type(loaded.module)(loaded.module.config)
        else:
            from .loader import import_file

            source = import_file(Path(loaded.path))
            builder = getattr(source, "build_model", None)
            with torch.device("cpu"):
                model = builder() if callable(builder) else source.model
    except Exception as exc:
        raise AttncostError(f"{a.model}: building the model for real raised "
                            f"{type(exc).__name__}: {_first_line(exc)}") from exc
    model = model.float().eval()
    inputs = _to_float32(loaded.example_inputs(a.seq_len, a.batch))
    if isinstance(inputs, dict):
        names = [k for k, v in inputs.items() if isinstance(v, torch.Tensor)]
        constants = {k: v for k, v in inputs.items() if not isinstance(v, torch.Tensor)}
        tensors = [inputs[k] for k in names]

        def call(model, tensors):
            return model(**dict(zip(names, tensors)), **constants)
    else:
        inputs = list(inputs)
        slots = [i for i, v in enumerate(inputs) if isinstance(v, torch.Tensor)]
        tensors = [inputs[i] for i in slots]

        def call(model, tensors):
            args = list(inputs)
            for i, t in zip(slots, tensors):
                args[i] = t
            return model(*args)
    return model, tensors, call


def _to_float32(obj):
    if isinstance(obj, torch.Tensor):
        return obj.float() if obj.is_floating_point() else obj
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to_float32(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _to_float32(v) for k, v in obj.items()}
    return obj


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""


# -------------------------------------------------------------- rendering


def to_dict(c: Comparison) -> dict[str, Any]:
    choices = []
    for ch in c.choices:
        a = ch.analysis
        choices.append({
            "label": ch.label, "attn_implementation": a.attn_implementation, "dtype": a.dtype,
            "attention": ch.attention_summary,
            "flops": {"expr": str(sympy.expand(a.flops)), "value": ch.flops},
            "attention_flops": {"expr": str(a.attention_flops), "value": ch.attention_flops},
            "useful_attention_flops": ch.useful_attention_flops,
            "peak_memory_bytes": ch.peak_memory_bytes,
            "max_seq_len": ch.max_seq_len, "fits": ch.fits,
        })
    baselines = [{
        "choice": b.choice, "counters": b.counters, "totals": b.totals, "notes": b.notes,
        "layers": [{"layer": row.layer, "parameters": row.parameters, "flops": row.flops,
                    "missed": {counter: [{"op": m.op, "calls": m.calls, "flops": m.flops}
                                         for m in ops] for counter, ops in row.missed.items()}}
                   for row in b.layers],
    } for b in c.baselines]
    return {"model": c.model, "seq_len": c.seq_len, "batch": c.batch, "device": c.device,
            "gpu": c.gpu, "budget_bytes": c.budget_bytes, "choices": choices,
            "baselines": baselines}


def _choice_rows(c: Comparison) -> tuple[list[str], list[list[str]]]:
    header = ["choice", "FLOPs", "attention", "share", "peak memory"]
    if c.gpu:
        header.append(f"max N ({c.gpu})")
    rows = []
    for ch in c.choices:
        row = [ch.label, human_flops(ch.flops), human_flops(ch.attention_flops),
               f"{ch.attention_flops / ch.flops:.1%}" if ch.flops else "-",
               human_bytes(ch.peak_memory_bytes) if ch.peak_memory_bytes is not None else "-"]
        if c.gpu:
            row.append(human_tokens(ch.max_seq_len) if ch.max_seq_len else "none")
        rows.append(row)
    return header, rows


def _site_lines(c: Comparison) -> list[str]:
    """The attention sites of each choice (once, when all choices have the same)."""
    summaries = {ch.label: "; ".join(ch.attention_summary) or "no attention found"
                 for ch in c.choices}
    if len(set(summaries.values())) == 1:
        return [f"attention sites: {next(iter(summaries.values()))}"]
    return [f"attention sites of {label}: {text}" for label, text in summaries.items()]


def _collapsed_layer_rows(b: BaselineComparison) -> list[tuple[str, LayerCount]]:
    """Consecutive layers whose counts are all equal, shown once ('layers.{0..21} ×22')."""
    out: list[tuple[list[str], LayerCount]] = []
    for row in b.layers:
        key = (row.parameters, row.flops, {k: [m.text for m in v] for k, v in row.missed.items()})
        if out and row.layer != OUTSIDE and out[-1][1].layer != OUTSIDE and out[-1][2] == key:
            out[-1][0].append(row.layer)
            continue
        out.append(([row.layer], row, key))
    return [(_layers_label(names), row) for names, row, _ in out]


def _layers_label(names: list[str]) -> str:
    if len(names) == 1:
        return names[0]
    head, _, first = names[0].rpartition(".")
    last = names[-1].rpartition(".")[2]
    return f"{head + '.' if head else ''}{{{first}..{last}}} ×{len(names)}"


def _baseline_rows(b: BaselineComparison) -> tuple[list[str], list[list[str]], list[str]]:
    """The per-layer table, and a line per layer on what the counters count as 0."""
    header = ["layer", "params"] + [COUNTER_NAMES[c] for c in b.counters]
    rows, missed_lines = [], []
    for label, row in _collapsed_layer_rows(b):
        rows.append([label, f"{row.parameters:,}"]
                    + [human_flops(row.flops[c]) for c in b.counters])
        where = label.rsplit(" ×", 1)[0] + (", each" if " ×" in label else "")
        for counter, ops in row.missed.items():
            missed_lines.append(f"{where}: {COUNTER_NAMES[counter].split(' ')[0]} counts 0 for "
                                + ", ".join(m.text for m in ops))
    rows.append(["total", f"{sum(r.parameters for r in b.layers):,}"]
                + [human_flops(b.totals[c]) for c in b.counters])
    return header, rows, missed_lines


def _title(c: Comparison) -> str:
    return (f"{c.model}: N={human_tokens(c.seq_len)}, B={c.batch}, device {c.device}"
            + (f", {c.gpu} ({human_bytes(c.budget_bytes)} for tensors)" if c.gpu else ""))


def render_comparison(c: Comparison, fmt: str = "table", console=None) -> str | None:
    """JSON or Markdown text, or tables printed to ``console``."""
    if fmt == "json":
        return json.dumps(to_dict(c), indent=2)
    if fmt == "markdown":
        return _markdown(c)
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console()

    def table(title, header, rows, numeric: range):
        t = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
        for i, name in enumerate(header):
            t.add_column(name, justify="right" if i in numeric else "left", no_wrap=True)
        for row in rows:
            t.add_row(*row)
        console.print(t)

    header, rows = _choice_rows(c)
    table(_title(c), header, rows, numeric=range(1, len(header)))
    for line in _site_lines(c):
        console.print(line, highlight=False)
    for b in c.baselines:
        header, rows, missed = _baseline_rows(b)
        console.print()
        table(f"FLOPs per layer, {b.choice}: attncost and other counters", header, rows,
              numeric=range(1, len(header)))
        for line in missed + b.notes:
            console.print(line, highlight=False)
    return None


def _markdown(c: Comparison) -> str:
    def md_table(header, rows):
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
                  for row in rows]
        return lines

    out = [f"**{_title(c)}**", ""]
    out += md_table(*_choice_rows(c))
    out += [""] + [f"- {line}" for line in _site_lines(c)]
    for b in c.baselines:
        out += ["", f"**FLOPs per layer, {b.choice}: attncost and other counters**", ""]
        header, rows, missed = _baseline_rows(b)
        out += md_table(header, rows)
        out += [""] + [f"- {line}" for line in missed + b.notes]
    return "\n".join(out) + "\n"
