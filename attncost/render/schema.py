"""The JSON contract: every object attncost writes as JSON or YAML, built
in one place from the data.  Other tools parse these: fields are added,
never renamed or removed.  An expression is {"expr": text, "value": int at
the requested N and B}.
"""
from __future__ import annotations

import sympy

from ..expr import N, leading_term
from .console import clean
from .sentences import attention_summary, site_notes


def _expression(a, expr) -> dict:
    return {"expr": str(sympy.expand(expr)), "value": a.at(expr)}


def site_dict(a, s) -> dict:
    def ev(expr):
        return _expression(a, expr)

    data = {
        "name": s.name, "layer": s.layer, "variant": s.variant,
        "implementation": s.implementation, "causal": s.causal,
        "heads": s.heads, "kv_heads": s.kv_heads, "head_dim": s.head_dim,
        "window": s.window, "flops": ev(s.flops), "useful_flops": ev(s.useful_flops),
        "flops_per_head": ev(s.flops_per_head), "memory_bytes": ev(s.allocated_bytes),
        "complexity": s.complexity, "query_len": str(s.query_len), "key_len": str(s.key_len),
        "mask": s.mask, "content_based": s.content_based,
        "head_indices": s.head_indices, "density": s.density, "feature_dim": s.feature_dim,
        "formula": s.formula, "matches_formula": s.matches_formula, "notes": site_notes(s),
    }
    if getattr(s, "backward_flops", None) is not None:
        data["backward_flops"] = ev(s.backward_flops)
    return data


def breakdown_dict(e) -> dict:
    return {"tensor": e.name, "module": e.module_path, "layer": e.layer, "shape": e.shape,
            "dtype": e.dtype, "bytes": e.bytes, "share": round(e.share, 4), "count": e.count}


def totals_dict(a) -> dict:
    """What the whole model costs: `analyze`'s "totals", one per choice in `compare`."""
    return {
        "flops": _expression(a, a.flops),
        "attention_flops": _expression(a, a.attention_flops),
        "useful_attention_flops": _expression(a, a.useful_attention_flops),
        "weight_bytes": int(a.weight_bytes),
        "peak_memory_bytes": _expression(a, a.peak_memory_bytes),
        "leading_term": str(leading_term(a.flops, N)),
        **({"forward_flops": _expression(a, a.forward_flops),
            "backward_flops": _expression(a, a.backward_flops)}
           if getattr(a, "mode", "infer") == "train" else {}),
    }


def analysis_dict(a, time=None) -> dict:
    """`attncost analyze` (with ``time``, a latency.TimeEstimate: its "time")."""
    totals = totals_dict(a)
    quadratic = [{
        "node": q.node, "op": q.op, "layer": q.layer, "shape": [str(x) for x in q.shape],
        "dtype": q.dtype, "bytes": _expression(a, q.bytes), "in_attention_site": q.in_site,
    } for q in a.quadratic]
    data = {
        "model": a.model, "seq_len": a.seq_len, "batch": a.batch,
        "dtype": a.dtype, "device": a.device, "attn_implementation": a.attn_implementation,
        "sites": [site_dict(a, s) for s in a.sites], "totals": totals,
        "valid_for": a.valid_for(), "guards": list(a.guards),
        "quadratic_tensors": quadratic, "memory_notes": [clean(n) for n in a.memory.notes],
        "peak_breakdown": [breakdown_dict(e) for e in a.memory.breakdown(a.seq_len, a.batch, top=5)],
        "hidden_quadratic": bool(a.hidden_quadratics()),
        "warnings": [clean(w) for w in a.warnings],
        "notes": [clean(n) for n in a.notes],
    }
    data["mode"] = getattr(a, "mode", "infer")
    step = getattr(a.memory, "step", None)
    if step is not None:
        data["training"] = training_dict(a, step)
    quant = getattr(getattr(a, "loaded", None), "quantization", None)
    if quant is not None:
        data["quantization"] = quant.to_dict()
    if getattr(a, "parallel", None) is not None:
        data["parallel"] = parallel_object(a.parallel)
    if time is not None:
        data["time"] = time_dict(time)
    return data


def parallel_object(per_gpu) -> dict:
    """The JSON "parallel" object of a --fsdp/--tp/--cp plan."""
    from ..training.parallel import parallel_dict

    return parallel_dict(per_gpu)


def training_dict(a, step) -> dict:
    """A training step's memory in parts, at the requested N and B."""
    return {"parameter_bytes": step.parameter_bytes, "gradient_bytes": step.gradient_bytes,
            "optimizer_bytes": step.optimizer_bytes,
            "activation_bytes": step.activations(a.seq_len, a.batch),
            **{k: v for k, v in (a.options or {}).items()
               if k in ("optimizer", "mixed_precision", "checkpointing", "trainable")}}


def time_dict(t) -> dict:
    """Prefill and decode time on a GPU (questions/latency.py), in seconds."""
    return {
        "gpu": t.gpu, "prefill_seconds": t.prefill_seconds,
        "decode_seconds_per_token": t.decode_seconds_per_token, "calibration": t.calibration,
        "sites": [{"name": s.name, "seconds": s.seconds, "decode_seconds": s.decode_seconds,
                   "kernel": s.kernel, "bound": s.bound} for s in t.sites],
        "prefill_tokens_per_second": t.prefill_tokens_per_second,
        "decode_tokens_per_second": t.decode_tokens_per_second,
        "layers": [{"layer": x.layer, "prefill_seconds": x.prefill_seconds,
                    "decode_seconds": x.decode_seconds} for x in t.layers],
        "launch_overhead_seconds": t.launch_overhead_seconds, "ops": t.ops,
        "kv_cache_bytes": t.kv_cache_bytes, "decode_bytes": t.decode_bytes,
        "calibration_file": t.calibration_file, "notes": [clean(n) for n in t.notes],
    }


def fit_dict(r) -> dict:
    """One FitResult."""
    return {"fits": r.fits, "seq_len": r.seq_len, "peak_memory_bytes": r.peak_memory_bytes,
            "budget_bytes": r.budget_bytes, "headroom_bytes": r.headroom_bytes,
            "max_seq_len": r.max_seq_len, "gpu": r.gpu,
            "reserved_peak_bytes": r.reserved_peak_bytes}


def fits_dict(answer) -> dict:
    """`attncost fits`."""
    r = answer.result
    data = {"model": answer.model, "seq_len": r.seq_len, "batch": r.batch, "dtype": answer.dtype}
    data.update(fit_dict(r))
    if r.max_seq_len_lower_bound:
        data["max_seq_len_lower_bound"] = True
    if answer.asked_max_batch:
        data["max_batch"] = r.max_batch
    if getattr(answer, "parallel", None) is not None:
        data["parallel"] = parallel_object(answer.parallel)
    if getattr(answer, "quantization", None) is not None:
        data["quantization"] = answer.quantization.to_dict()
    data["peak_breakdown"] = [breakdown_dict(e) for e in answer.breakdown]
    data["warnings"] = [clean(w) for w in answer.warnings]
    data["what_if"] = [{"change": w.change, "peak_memory_bytes": w.result.peak_memory_bytes,
                        "fits": w.result.fits, "max_seq_len": w.result.max_seq_len}
                       for w in answer.what_if]
    if answer.time is not None:
        data["time"] = time_dict(answer.time)
        data["roofline_estimate"] = [{"site": s.name, "seconds": s.seconds, "bound": s.bound}
                                     for s in answer.time.sites]
    return data


def gpu_dict(g) -> dict:
    return {"name": g.name, "memory_bytes": g.memory_bytes,
            "memory_bandwidth": g.memory_bandwidth, "peak_flops": dict(g.peak_flops),
            "datasheet": g.datasheet, "aliases": list(g.aliases)}


def _baseline_dict(b) -> dict:
    from .sentences import baseline_notes

    return {
        "choice": b.choice, "counters": b.counters, "totals": b.totals, "notes": baseline_notes(b),
        "layers": [{"layer": row.layer, "parameters": row.parameters, "flops": row.flops,
                    "missed": {counter: [{"op": m.op, "calls": m.calls, "flops": m.flops}
                                         for m in ops] for counter, ops in row.missed.items()}}
                   for row in b.layers],
    }


def comparison_dict(c) -> dict:
    """`attncost compare`."""
    choices = []
    for ch in c.choices:
        a = ch.analysis
        choices.append({
            "label": ch.label, "attn_implementation": a.attn_implementation, "dtype": a.dtype,
            "attention": attention_summary(a),
            "flops": {"expr": str(sympy.expand(a.flops)), "value": ch.flops},
            "attention_flops": {"expr": str(a.attention_flops), "value": ch.attention_flops},
            "useful_attention_flops": ch.useful_attention_flops,
            "peak_memory_bytes": ch.peak_memory_bytes,
            "max_seq_len": ch.max_seq_len, "fits": ch.fits,
            "totals": totals_dict(a),
            "warnings": [clean(w) for w in a.warnings],
        "notes": [clean(n) for n in a.notes],
        })
    return {"model": c.model, "seq_len": c.seq_len, "batch": c.batch, "device": c.device,
            "gpu": c.gpu, "budget_bytes": c.budget_bytes, "choices": choices,
            "baselines": [_baseline_dict(b) for b in c.baselines]}
