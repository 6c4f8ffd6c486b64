"""One model under several choices (attention implementation, dtype), side
by side, and other FLOP counters beside attncost's count (baselines.py).

A choice is one trace; a comparison puts their FLOPs, attention FLOPs, peak
memory and largest N on a GPU side by side.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

from ..analysis import Analysis, analyze
from ..loader import load
from .baselines import BaselineComparison, check_baselines, check_fvcore_size, \
    count_with_baselines
from .fits import check_fits, uses_allocator


@dataclass
class Choice:
    """The model under one attention implementation and dtype, at N."""

    label: str
    analysis: Analysis = field(repr=False)
    flops: int
    attention_flops: int
    useful_attention_flops: int
    peak_memory_bytes: int
    max_seq_len: int | None = None
    fits: bool | None = None


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


def _choice(a: Analysis, budget: int | None) -> Choice:
    label = ", ".join(x for x in (a.attn_implementation, a.dtype) if x)
    peak = a.at(a.peak_memory_bytes)
    choice = Choice(label=label, analysis=a, flops=a.at(a.flops),
                    attention_flops=a.at(a.attention_flops),
                    useful_attention_flops=a.at(a.useful_attention_flops), peak_memory_bytes=peak)
    if budget is not None:
        result = check_fits(a.memory, a.seq_len, a.batch, budget, n_range=a.n_range,
                            allocator=uses_allocator(a.memory))
        choice.max_seq_len, choice.fits = result.max_seq_len, result.fits
    return choice


#: Keywords of ``analyze`` that are decided when the model is loaded.
_LOAD_OPTIONS = ("last_logits_only", "weight_dtype", "group_size", "kv_cache_dtype")


def _analyses(model: str, seq_len: int, pairs: list[tuple], batch: int, device: str,
              kv_cache: bool | None, fvcore: bool,
              progress: Callable[[str], None] | None, options: dict) -> list[Analysis]:
    """One analysis per (implementation, dtype).  Every model is loaded (on
    the meta device, quickly) before any is traced, so that one too large for
    fvcore is refused before the long work."""
    at_load = {k: v for k, v in options.items() if k in _LOAD_OPTIONS}
    rest = {k: v for k, v in options.items() if k not in _LOAD_OPTIONS}
    loaded = [load(model, dtype=dtype, attn_implementation=impl, kv_cache=kv_cache, **at_load)
              for impl, dtype in pairs]
    if fvcore:
        for m in loaded:
            check_fvcore_size(str(model), m.module)
    out = []
    for (impl, dtype), m in zip(pairs, loaded):
        say = None
        if progress is not None:
            label = ", ".join(str(x) for x in (impl, dtype) if x) or "as written"

            def say(msg: str, label=label) -> None:
                progress(f"{label}: {msg}" if len(pairs) > 1 else msg)
        out.append(analyze(m, seq_len, batch=batch, device=device, progress=say, **rest))
    return out


def compare_choices(model: str, seq_len: int, batch: int = 1, device: str = "cuda",
                    attn_implementations: Iterable[str | None] = (None,),
                    dtypes: Iterable[str | None] = (None,), kv_cache: bool | None = None,
                    gpu=None, budget_bytes: int | None = None,
                    baselines: Iterable[str] = (),
                    progress: Callable[[str], None] | None = None, **options) -> Comparison:
    """Analyze every (implementation, dtype) pair at N; count each distinct
    implementation with the requested baselines too.  With ``gpu``, the
    largest N whose peak fits ``budget_bytes`` (its memory less a reserve).
    ``progress`` hears what is being done; ``options`` are more keywords of
    ``analyze`` (quantization, training, logits)."""
    baselines = check_baselines(baselines)
    budget = None
    if gpu is not None:
        budget = gpu.memory_bytes if budget_bytes is None else budget_bytes
    pairs = [(impl, dtype) for impl in list(dict.fromkeys(attn_implementations)) or [None]
             for dtype in list(dict.fromkeys(dtypes)) or [None]]
    analyses = _analyses(model, seq_len, pairs, batch, device, kv_cache, "fvcore" in baselines,
                         progress, options)
    choices = [_choice(a, budget) for a in analyses]
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
            if progress is not None:
                progress(f"counting FLOPs with {', '.join(baselines)}")
            comparison.baselines.append(count_with_baselines(choice, baselines))
    return comparison
