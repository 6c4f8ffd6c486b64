"""Does a context length fit a memory budget, and what is the largest that does.

The peak is an exact integer function of N (an expression or a MemoryModel),
so the largest N under a budget is found on integers, not by solving a
polynomial numerically: peak(max) <= budget < peak(max + 1).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable

import sympy

from .errors import AttncostError
from .gpus import DEFAULT_RESERVE, GPU, dtype_key, get_gpu, parse_size
from .tracer import value_at

#: No answer is larger than this (a 1T-token context).
MAX_SEQ_LEN_CAP = 2**40


@dataclass
class FitResult:
    """DESIGN's `attncost fits` answer for one length and batch."""

    fits: bool
    seq_len: int
    peak_memory_bytes: int
    budget_bytes: int
    headroom_bytes: int
    max_seq_len: int | None
    gpu: str | None
    batch: int = 1

    def to_dict(self) -> dict:
        return {"fits": self.fits, "seq_len": self.seq_len,
                "peak_memory_bytes": self.peak_memory_bytes, "budget_bytes": self.budget_bytes,
                "headroom_bytes": self.headroom_bytes, "max_seq_len": self.max_seq_len,
                "gpu": self.gpu}


def _peak_function(peak) -> Callable[[int, int], int]:
    """An exact (n, b) -> bytes function from a MemoryModel, a callable or an expression."""
    if hasattr(peak, "at") and callable(peak.at):
        return lambda n, b: int(peak.at(n, b))
    if callable(peak) and not isinstance(peak, sympy.Basic):
        return lambda n, b: int(peak(n, b))
    expr = sympy.sympify(peak)
    return lambda n, b: value_at(expr, n, b)


def max_seq_len(peak, batch: int, budget: int, lo: int = 1, hi: int | None = None) -> int | None:
    """The largest N in [lo, hi] with peak(N) <= budget, for a peak that does
    not decrease with N: exponential search for a length that does not fit,
    then bisection on exact integer values.  None if N = lo does not fit;
    at most ``hi`` (default 2**40)."""
    f = _peak_function(peak)
    cap = MAX_SEQ_LEN_CAP if hi is None else min(int(hi), MAX_SEQ_LEN_CAP)
    lo = max(1, int(lo))
    if lo > cap or f(lo, batch) > budget:
        return None
    good, step = lo, 1
    while True:
        probe = min(good + step, cap)
        if probe == good:
            return good  # the cap fits
        if f(probe, batch) > budget:
            bad = probe
            break
        good, step = probe, step * 2
    while bad - good > 1:
        mid = (good + bad) // 2
        if f(mid, batch) <= budget:
            good = mid
        else:
            bad = mid
    return good


def check_fits(memory_model, seq_len: int, batch: int, budget_bytes: int,
               gpu: GPU | str | None = None,
               n_range: tuple[int, int | None] | None = None) -> FitResult:
    """Does (seq_len, batch) fit ``budget_bytes``, with what headroom, and the
    largest N that does at this batch (within the range the trace holds for)."""
    f = _peak_function(memory_model)
    peak = f(int(seq_len), int(batch))
    lo, hi = n_range or getattr(memory_model, "n_range", None) or (1, None)
    largest = max_seq_len(f, int(batch), int(budget_bytes), lo=lo, hi=hi)
    name = gpu.name if isinstance(gpu, GPU) else gpu
    return FitResult(fits=peak <= budget_bytes, seq_len=int(seq_len), peak_memory_bytes=peak,
                     budget_bytes=int(budget_bytes), headroom_bytes=int(budget_bytes) - peak,
                     max_seq_len=largest, gpu=name, batch=int(batch))


def budget_for(gpu: str | None = None, memory: str | int | None = None,
               reserve: str | int | None = None,
               gpu_specs: Iterable[str] = ()) -> tuple[int, GPU | None]:
    """The tensor budget: ``memory`` as given, or the GPU's capacity less the reserve."""
    if (gpu is None) == (memory is None):
        raise AttncostError("give exactly one of --gpu NAME or --memory SIZE")
    if memory is not None:
        return parse_size(memory), None
    spec = get_gpu(gpu, gpu_specs)
    held = DEFAULT_RESERVE if reserve is None else _reserve_bytes(reserve)
    budget = spec.memory_bytes - held
    if budget <= 0:
        raise AttncostError(f"a reserve of {held} bytes leaves nothing of {spec.name}'s "
                            f"{spec.memory_bytes} bytes")
    return budget, spec


def _reserve_bytes(reserve) -> int:
    """Like a size, but 0 (no reserve) is allowed."""
    if re.fullmatch(r"\s*0*\.?0*\s*[a-zA-Z]*\s*", str(reserve)) and re.search(r"0", str(reserve)):
        return 0
    return parse_size(reserve)


def roofline(site_flops: float, site_bytes: float, gpu: GPU, dtype) -> float:
    """An estimate of the seconds a computation needs, from the roofline
    model: the larger of its FLOPs at the dtype's dense peak and its bytes at
    the memory bandwidth.  A lower bound in practice (no kernel reaches peak)."""
    compute = float(site_flops) / gpu.flops_for(dtype_key(dtype))
    memory = float(site_bytes) / gpu.memory_bandwidth
    return max(compute, memory)


# ------------------------------------------------------------------ CLI


def run_fits(analysis, gpu: str | None = None, memory: str | None = None,
             reserve: str | None = None, gpu_specs: Iterable[str] = (),
             fmt: str = "table", console=None) -> int:
    """`attncost fits`: print the answer; exit status 0 if it fits, 1 if not."""
    import click

    budget, spec = budget_for(gpu, memory, reserve, gpu_specs)
    model = analysis.memory if analysis.memory is not None else analysis.peak_memory_bytes
    if model is None:
        raise AttncostError("no memory model for this analysis")
    result = check_fits(model, analysis.seq_len, analysis.batch, budget, spec,
                        n_range=analysis.n_range)
    alternatives = [] if result.fits else what_ifs(analysis, budget, spec)
    times = site_times(analysis, spec) if spec is not None else []
    data = result.to_dict()
    data["what_if"] = [{"change": w.change, "peak_memory_bytes": w.result.peak_memory_bytes,
                        "fits": w.result.fits, "max_seq_len": w.result.max_seq_len}
                       for w in alternatives]
    if times:
        data["roofline_estimate"] = [{"site": name, "seconds": sec, "bound": bound}
                                     for name, sec, bound in times]
    if fmt == "json":
        import json
        click.echo(json.dumps(data, indent=2))
    elif fmt == "yaml":
        import yaml
        click.echo(yaml.safe_dump(data, sort_keys=False), nl=False)
    else:
        for line in _summary(result, analysis, spec):
            click.echo(line)
        for line in _what_if_lines(alternatives) + _roofline_lines(times, spec):
            click.echo(line)
    return 0 if result.fits else 1


@dataclass
class WhatIf:
    """The same model with one thing changed, and how far it then reaches."""

    change: str
    result: FitResult


def _variations(analysis) -> list[tuple[str, dict]]:
    """Changes worth trying when a length does not fit."""
    base = dict(dtype=analysis.dtype, attn_implementation=analysis.attn_implementation,
                kv_cache=analysis.kv_cache if analysis.source == "config" else None)
    out = []
    if analysis.source == "config":
        for impl in ("sdpa", "eager"):
            if impl != analysis.attn_implementation:
                out.append((f"attn_implementation={impl}", dict(base, attn_implementation=impl)))
        out.append(("logits for the last position only (logits_to_keep=1)",
                    dict(base, last_logits_only=True)))
        if analysis.kv_cache:
            out.append(("no KV cache returned (use_cache=False)", dict(base, kv_cache=False)))
    if analysis.dtype == "float32":
        out.append(("dtype=bfloat16", dict(base, dtype="bfloat16")))
    return out


def what_ifs(analysis, budget: int, spec: GPU | None) -> list[WhatIf]:
    """Re-analyze the model under each variation (one trace each)."""
    from .analysis import analyze

    results = []
    for change, kwargs in _variations(analysis):
        try:
            other = analyze(analysis.model, analysis.seq_len, batch=analysis.batch,
                            device=analysis.device, **kwargs)
        except AttncostError:
            continue
        model = other.memory if other.memory is not None else other.peak_memory_bytes
        if model is None:
            continue
        results.append(WhatIf(change, check_fits(model, other.seq_len, other.batch, budget, spec,
                                                 n_range=other.n_range)))
    return results


def _what_if_lines(alternatives: list[WhatIf]) -> list[str]:
    from .report import human_bytes

    lines = ["what if:"] if alternatives else []
    for w in alternatives:
        reach = f"up to {w.result.max_seq_len:,} tokens fit" if w.result.max_seq_len else "nothing fits"
        verdict = "fits" if w.result.fits else "does not fit"
        lines.append(f"  {w.change}: peak {human_bytes(w.result.peak_memory_bytes)}, {verdict}; {reach}")
    return lines


def site_times(analysis, spec: GPU) -> list[tuple[str, float, str]]:
    """Roofline estimate of each attention site on ``spec`` at the requested N."""
    out = []
    for site in analysis.sites:
        flops = analysis.at(site.flops)
        size = analysis.at(site.memory_bytes)
        seconds = roofline(flops, size, spec, analysis.dtype)
        compute = flops / spec.flops_for(dtype_key(analysis.dtype))
        out.append((site.name, seconds, "compute" if compute >= seconds else "memory"))
    return out


def _roofline_lines(times, spec) -> list[str]:
    if not times:
        return []
    total = sum(t for _, t, _ in times)
    bounds = {b for _, _, b in times}
    kind = bounds.pop() if len(bounds) == 1 else "mixed"
    from .report import human_seconds

    return [f"roofline estimate (not a measurement): attention {human_seconds(total)} per forward "
            f"on {spec.name} over {len(times)} site(s), {kind}-bound at peak FLOP/s and bandwidth"]


def _summary(result: FitResult, analysis, spec: GPU | None) -> list[str]:
    from .report import human_bytes, human_tokens

    where = f"{spec.name} ({human_bytes(spec.memory_bytes)} less the reserve)" if spec else "the budget"
    verdict = "fits" if result.fits else "does not fit"
    lines = [f"N={human_tokens(result.seq_len)}, B={result.batch} {verdict} in {where}: "
             f"peak {human_bytes(result.peak_memory_bytes)} of {human_bytes(result.budget_bytes)}, "
             f"headroom {'-' if result.headroom_bytes < 0 else ''}"
             f"{human_bytes(abs(result.headroom_bytes))}"]
    if result.max_seq_len is None:
        lo = (analysis.n_range or (1, None))[0]
        lines.append(f"no length fits at B={result.batch}: not even N={lo}")
    else:
        lines.append(f"largest N that fits at B={result.batch}: {result.max_seq_len:,}")
    memory = getattr(analysis, "memory", None)
    if memory is not None and hasattr(memory, "describe"):
        lines.append("at the peak:")
        lines += [f"  {text}" for text in memory.describe(result.seq_len, result.batch, top=3)]
    return lines
