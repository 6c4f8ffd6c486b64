"""Other FLOP counters beside attncost's count, per layer.

A baseline is another tool's count of the same forward at the same N:
fvcore's ``FlopCountAnalysis`` (a real forward under ``torch.jit.trace``, so
only for models small enough to build on this CPU) and torch's
``FlopCounterMode`` (on fake tensors, any size).  Both miss work they have
no rule for (a fused attention call on a CPU counts 0); each layer's row
says what each misses.
"""
from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import sympy
import torch

from ..analysis import Analysis
from ..errors import AttncostError, first_line
from ..paths import layer_of
from ..rules.flops import node_flops
from ..tracing import tensors_of
from ..tracing.fake import call_args, fake_parameters
from ..units import human_bytes, human_tokens

BASELINES = ("fvcore", "flopcounter")
OUTSIDE = "(outside the layers)"

#: fvcore builds and runs the model for real on this CPU: the largest models it may.
MAX_REAL_PARAMETERS = 50_000_000
#: ... and the most memory that real float32 forward may need, as attncost predicts it.
MAX_REAL_BYTES = 4 << 30

#: Ops that do matrix work which a counter may have no rule for.
FUSED_OPS = frozenset({
    "scaled_dot_product_attention", "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_attention_math", "_native_multi_head_attention",
    "_transformer_encoder_layer_fwd", "flex_attention", "baddbmm", "addbmm", "addmv", "mv", "dot",
})
#: fvcore's rules for matrix work; its other rules (norms, pooling) count what attncost does not.
FVCORE_MATRIX_OPS = {"addmm", "bmm", "_convolution", "conv", "einsum", "matmul", "mm", "linear"}


@dataclass
class MissedOp:
    """Calls of one op that a counter counts as 0."""

    op: str
    calls: int
    #: what those calls do, 2 per multiply-add (None where it is not known)
    flops: int | None = None


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
    #: work fvcore counts that is not matrix work (op -> FLOPs, ×2)
    fvcore_extra: dict[str, int] = field(default_factory=dict)


def check_baselines(names: Iterable[str]) -> list[str]:
    """The requested baselines, once each; an unknown name is an error."""
    names = list(dict.fromkeys(names))
    for name in names:
        if name not in BASELINES:
            raise AttncostError(f"unknown baseline {name!r}: use {' or '.join(BASELINES)}")
    return names


def _layer_names(module: torch.nn.Module) -> list[str]:
    return [name for name, _ in module.named_modules() if name and layer_of(name) == name]


def _split_by_layer(per_module: dict[str, int], layers: list[str], total: int,
                    prefix: str = "") -> dict[str, int]:
    """Hierarchical per-module counts (a module includes its children) as
    disjoint per-layer counts, the rest under OUTSIDE."""
    out = {layer: int(per_module.get(prefix + layer, 0)) for layer in layers}
    out[OUTSIDE] = int(total) - sum(out.values())
    return out


def attncost_by_layer(a: Analysis, layers: list[str]) -> dict[str, int]:
    """attncost's FLOPs at the analysis' N and B, per layer of the traced graph."""
    traced = a.traced
    exprs: dict[str, sympy.Expr] = {}
    for node in traced.nodes:
        flops = node_flops(traced, node)
        if flops == 0:
            continue
        key = layer_of(traced.module_path(node)) or OUTSIDE
        exprs[key] = exprs.get(key, sympy.Integer(0)) + flops
    out = {layer: a.at(exprs.pop(layer, sympy.Integer(0))) for layer in layers}
    out[OUTSIDE] = sum(a.at(e) for e in exprs.values())
    return out


def count_with_baselines(choice, baselines: list[str]) -> BaselineComparison:
    """Count one forward at the choice's N with each baseline, per layer."""
    a = choice.analysis
    module = a.loaded.module
    layers = _layer_names(module)
    counts = {"attncost": attncost_by_layer(a, layers)}
    missed: dict[str, dict[str, list[MissedOp]]] = {}
    extra: dict[str, int] = {}
    if "fvcore" in baselines:
        counts["fvcore"], missed["fvcore"], extra = _fvcore_by_layer(choice, layers)
    if "flopcounter" in baselines:
        counts["flopcounter"], missed["flopcounter"] = _flopcounter_by_layer(a, layers)
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
    return BaselineComparison(choice.label, list(counts), rows, totals, extra)


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
    params, _ = fake_parameters(module, mode, "cpu")
    with mode:
        inputs = loaded.example_inputs(a.seq_len, a.batch)
    args, kwargs = call_args(inputs)

    tracker = ModuleTracker()
    recorder = _MissedOps(tracker, root)
    try:
        with torch.no_grad(), loaded.trace_context(), warnings.catch_warnings(), mode:
            warnings.simplefilter("ignore")
            with FlopCounterMode(display=False) as counter, tracker, recorder:
                functional_call(module, params, args, kwargs)
    except Exception as exc:
        raise AttncostError(f"FlopCounterMode could not run the model on fake tensors: "
                            f"{type(exc).__name__}: {first_line(exc)}") from exc
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
                group = layer_of(parent[len(prefix):])
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


def _fvcore_by_layer(choice, layers: list[str]):
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
                            f"{first_line(exc)}); try --baseline flopcounter") from exc
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
        return tuple(tensors_of(self.call(self.model, tensors)))


def check_fvcore_size(model_name: str, module: torch.nn.Module) -> None:
    """Refuse, from the meta-device model and before any tracing, a model too
    large for fvcore's real forward on this CPU."""
    n_params = sum(p.numel() for p in module.parameters())
    if n_params > MAX_REAL_PARAMETERS:
        raise AttncostError(f"--baseline fvcore runs the model for real on this CPU; {model_name} "
                            f"has {n_params / 1e6:,.0f}M parameters, more than "
                            f"{MAX_REAL_PARAMETERS // 10**6}M. Use --baseline flopcounter "
                            "(fake tensors, any size)")


def _real_model_and_inputs(a: Analysis):
    """The model built for real on this CPU in float32, its input tensors, and
    how to call it with them; refuses a model too large to run here."""
    loaded = a.loaded
    check_fvcore_size(a.model, loaded.module)
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
            from ..loader.files import import_file

            source = import_file(Path(loaded.path))
            builder = getattr(source, "build_model", None)
            with torch.device("cpu"):
                model = builder() if callable(builder) else source.model
    except Exception as exc:
        raise AttncostError(f"{a.model}: building the model for real raised "
                            f"{type(exc).__name__}: {first_line(exc)}") from exc
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
