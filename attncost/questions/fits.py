"""Does a context length fit a memory budget, and what is the largest that does.

The peak is an exact integer function of N (an expression or a MemoryModel),
so the largest N under a budget is found on integers, not by solving a
polynomial numerically: peak(max) <= budget < peak(max + 1).

On a CUDA device the budget is what PyTorch's caching allocator may reserve
(a card's memory less its CUDA context, or what
``set_per_process_memory_fraction`` allows), and a length fits when the
allocation sequence runs under it without an out-of-memory error
(memory/allocator.py): rounding, segments and fragmentation included.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import sympy

from ..errors import AttncostError
from ..expr import value_at
from ..gpus import GPU, get_gpu
from ..units import parse_budget, parse_size
from .latency import TimeEstimate, time_if_inference
from .search import (MAX_SEQ_LEN_CAP, RangedRuns, first_failure, largest_under, max_batch,
                     max_seq_len_across, unreached_warning)


@dataclass
class FitResult:
    """Whether one length and batch fit a budget, and how far this model reaches."""

    fits: bool
    seq_len: int
    peak_memory_bytes: int
    budget_bytes: int
    headroom_bytes: int
    max_seq_len: int | None
    gpu: str | None
    batch: int = 1
    #: the largest batch that fits at ``seq_len`` (asked for with --max-batch)
    max_batch: int | None = None
    #: the search stopped at a length it could not trace: max_seq_len is a lower bound
    max_seq_len_lower_bound: bool = False
    #: what the caching allocator reserves at its peak (max_memory_reserved), on CUDA
    reserved_peak_bytes: int | None = None


@dataclass
class WhatIf:
    """The same model with one thing changed, and how far it then reaches."""

    change: str
    result: FitResult


@dataclass
class FitsAnswer:
    """`attncost fits`: the answer, what might make it fit, and an estimate of time."""

    result: FitResult
    gpu: GPU | None
    #: the shortest length the trace holds for (what "no length fits" means)
    lowest_seq_len: int
    breakdown: list = field(default_factory=list)
    what_if: list[WhatIf] = field(default_factory=list)
    #: prefill and decode time on the GPU (with --gpu)
    time: TimeEstimate | None = None
    #: the model, as the analysis names it, and the dtype it was analysed in
    model: str = ""
    dtype: str = ""
    #: one-line warnings (formulas used outside the range they hold for, ...)
    warnings: list[str] = field(default_factory=list)
    #: whether the largest batch was asked for (result.max_batch is then its answer)
    asked_max_batch: bool = False
    #: the busiest GPU of a --fsdp/--tp/--cp plan at N (training.parallel.PerGpuMemory)
    parallel: object = None
    #: what is counted quantized (memory.quantized.Quantization), if anything
    quantization: object = None


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


def uses_allocator(memory_model) -> bool:
    """A CUDA memory model whose allocations can be replayed through the
    caching allocator (an expression or a callable cannot)."""
    return getattr(memory_model, "device", None) == "cuda" and hasattr(memory_model, "_profile")


def runs_function(memory_model, budget: int, allocator: bool | None = None):
    """(n, b) -> whether one forward runs under ``budget``: through the
    caching allocator for a CUDA memory model, else peak <= budget."""
    if allocator is None:
        allocator = uses_allocator(memory_model)
    if allocator:
        from ..memory.reserved import runs_under

        return lambda n, b: runs_under(memory_model, n, b, budget)
    f = _peak_function(memory_model)
    return lambda n, b: f(n, b) <= budget


def check_fits(memory_model, seq_len: int, batch: int, budget_bytes: int,
               gpu: GPU | str | None = None,
               n_range: tuple[int, int | None] | None = None,
               allocator: bool = False) -> FitResult:
    """Does (seq_len, batch) fit ``budget_bytes``, with what headroom, and the
    largest N that does at this batch (within the range the trace holds for).
    With ``allocator`` the budget bounds reserved memory (see the module):
    the headroom is the budget less what is reserved when it runs, and less
    the live tensors alone when it does not (the least it is short by)."""
    n, b, budget = int(seq_len), int(batch), int(budget_bytes)
    peak = _peak_function(memory_model)(n, b)
    ok = runs_function(memory_model, budget, allocator)
    reserved = _reserved(memory_model, n, b, budget) if allocator else None
    lo, hi = n_range or getattr(memory_model, "n_range", None) or (1, None)
    cap = MAX_SEQ_LEN_CAP if hi is None else min(int(hi), MAX_SEQ_LEN_CAP)
    largest = largest_under(lambda x: ok(x, b), n, cap, floor=max(1, int(lo)))
    if allocator:
        largest = first_failure(lambda x: ok(x, b), largest, _scan_from(n, largest, lo))
    name = gpu.name if isinstance(gpu, GPU) else gpu
    runs = ok(n, b)
    return FitResult(fits=runs, seq_len=n, peak_memory_bytes=peak, budget_bytes=budget,
                     headroom_bytes=budget - (reserved if runs and reserved is not None else peak),
                     max_seq_len=largest, gpu=name, batch=b, reserved_peak_bytes=reserved)


def _reserved(memory_model, n: int, b: int, budget: int) -> int:
    """What ``max_memory_reserved`` reports: under the budget where the run
    fits it (cached blocks are released before the allocator gives up), else
    what the run would reserve with no limit."""
    from ..memory.reserved import events_at, simulate

    events = events_at(memory_model, n, b)
    run = simulate(events, limit=budget)
    return run.reserved_peak_bytes if not run.oom else simulate(events).reserved_peak_bytes


def budget_for(gpu: str | None = None, memory: str | int | None = None,
               reserve: str | int | None = None,
               gpu_specs: Iterable[str] = ()) -> tuple[int, GPU | None]:
    """The tensor budget: ``memory`` as given, or the GPU's capacity less the reserve."""
    if (gpu is None) == (memory is None):
        raise AttncostError("give exactly one of --gpu NAME or --memory SIZE")
    if memory is not None:
        return parse_budget(memory), None
    spec = get_gpu(gpu, gpu_specs)
    held = spec.held_back() if reserve is None else parse_size(reserve, allow_zero=True)
    budget = spec.memory_bytes - held
    if budget <= 0:
        raise AttncostError(f"a reserve of {held} bytes leaves nothing of {spec.name}'s "
                            f"{spec.memory_bytes} bytes")
    return budget, spec


def fits(analysis, gpu: str | None = None, memory: str | None = None,
         reserve: str | None = None, gpu_specs: Iterable[str] = (),
         progress: Callable[[str], None] | None = None, want_max_batch: bool = False,
         retrace: Callable[[int], object] | None = None,
         calibration: str | None = None) -> FitsAnswer:
    """`attncost fits`: does the analysis' N and B fit, and if not, what would.
    The largest N is searched beyond the range the trace holds for by
    tracing again (``retrace(n)``, default: the same analysis at n);
    ``progress`` hears about each re-analysis."""
    budget, spec = budget_for(gpu, memory, reserve, gpu_specs)
    allocator = uses_allocator(analysis.memory)
    result = check_fits(analysis.memory, analysis.seq_len, analysis.batch, budget, spec,
                        n_range=analysis.n_range, allocator=allocator)
    warnings = list(getattr(analysis, "warnings", []) or [])
    peaks = RangedRuns(runs=lambda a, n, b: runs_function(a.memory, budget, allocator)(n, b),
                       retrace=retrace or _retracer(analysis, progress), analyses=[analysis])
    result.max_seq_len = max_seq_len_across(peaks, result.batch, result.seq_len)
    if allocator:
        result.max_seq_len = first_failure(
            lambda x: peaks.ok(x, result.batch), result.max_seq_len,
            _scan_from(result.seq_len, result.max_seq_len, _lowest_seq_len(peaks)),
            checkable=lambda x: peaks.covering(x) is not None)
    note = unreached_warning(peaks, result.max_seq_len)
    if note:
        warnings.append(note)
        result.max_seq_len_lower_bound = result.max_seq_len is not None
    warnings += _limit_warnings(analysis, result)
    if want_max_batch and _batch_free(analysis):
        warnings.append("--max-batch: the model's memory is the same at every batch (its "
                        "inputs have no batch dim); no largest batch to give")
    elif want_max_batch:
        runs = runs_function(analysis.memory, budget, allocator)
        result.max_batch = max_batch(runs, result.seq_len)
        if allocator:
            result.max_batch = first_failure(lambda b: runs(result.seq_len, b),
                                             result.max_batch, 1)
    return FitsAnswer(
        result=result, gpu=spec, lowest_seq_len=_lowest_seq_len(peaks),
        breakdown=analysis.memory.breakdown(result.seq_len, result.batch, top=3),
        what_if=[] if result.fits else what_ifs(analysis, budget, spec, progress, result),
        time=time_if_inference(analysis, spec, calibration),
        model=analysis.model, dtype=analysis.dtype, warnings=warnings,
        asked_max_batch=want_max_batch, parallel=getattr(analysis, "parallel", None),
        quantization=getattr(getattr(analysis, "loaded", None), "quantization", None))


def _batch_free(analysis) -> bool:
    """Whether the peak does not change with the batch (inputs without a batch dim)."""
    n = analysis.seq_len
    return analysis.memory.at(n, 2) == analysis.memory.at(n, 3)


def _limit_warnings(analysis, result: FitResult) -> list[str]:
    """The largest N that fits memory, when it is past the model's position limit."""
    from ..loader.positions import position_limit

    loaded = getattr(analysis, "loaded", None)
    limit = position_limit(getattr(loaded, "config", None))
    if limit is None or result.max_seq_len is None or result.max_seq_len <= limit[0]:
        return []
    return [f"the largest N that fits memory ({result.max_seq_len:,}) is past the model's "
            f"position limit of {limit[0]:,} ({limit[1]})"]


def _scan_from(seq_len: int, found: int | None, lowest: int) -> int:
    """Where a scan for the first failure starts: half the answer (a
    fragmentation hole below the requested length counts too)."""
    return max(1, lowest, (found or 1) // 2)


def _lowest_seq_len(peaks: RangedRuns) -> int:
    """The shortest length any of the search's traces holds for."""
    return min((a.n_range or (1, None))[0] for a in peaks.analyses)


def _retracer(analysis, progress: Callable[[str], None] | None) -> Callable[[int], object]:
    """The same analysis at another length: same model object and options."""
    def retrace(n: int):
        if progress is not None:
            progress(f"tracing again at N={n:,} (the first trace holds for "
                     f"{_range_text(analysis.n_range)})")
        return analysis.again_at(n)
    return retrace


def _range_text(n_range) -> str:
    lo, hi = n_range or (1, None)
    return f"{lo:,}..{f'{hi:,}' if hi else 'inf'}"


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


def _helps(other: FitResult, current: FitResult | None) -> bool:
    """A change is worth listing only if it lowers the peak or reaches further."""
    if current is None:
        return True
    return (other.peak_memory_bytes < current.peak_memory_bytes
            or (other.max_seq_len or 0) > (current.max_seq_len or 0))


def what_ifs(analysis, budget: int, spec: GPU | None,
             progress: Callable[[str], None] | None = None,
             current: FitResult | None = None) -> list[WhatIf]:
    """Re-analyze the model under each variation (one trace each); with
    ``current``, keep only the changes that lower the peak or raise the
    largest N (attn_implementation=eager, say, when eager can only be worse)."""
    from ..analysis import analyze

    results = []
    for change, kwargs in _variations(analysis):
        say = None
        if progress is not None:
            def say(msg: str, change=change) -> None:
                progress(f"what if {change}: {msg}")
            say("loading the model")
        try:
            other = analyze(analysis.model, analysis.seq_len, batch=analysis.batch,
                            device=analysis.device, progress=say, **kwargs)
        except AttncostError:
            continue
        result = check_fits(other.memory, other.seq_len, other.batch, budget, spec,
                            n_range=other.n_range, allocator=uses_allocator(other.memory))
        if _helps(result, current):
            results.append(WhatIf(change, result))
    return results
