"""FLOPs and peak memory over a range of N, from the formulas.

Each curve comes from one trace: its expressions are evaluated at every
point, never traced again per point.  A trace holds only for the range of N
its guards allow (``Analysis.n_range``); where a model branches on the
length, each piece of the plot range is traced once at a length inside it.
This module computes the data (``PlotData``); render/figures.py draws it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable

from ..analysis import Analysis, analyze
from ..errors import AttncostError
from ..gpus import GPU
from ..units import human_tokens
from .fits import check_fits, uses_allocator

#: How many times one curve may be traced to cover the plot range.
MAX_TRACES_PER_CURVE = 4


@dataclass
class Curve:
    """One model configuration's cost at each plotted N."""

    label: str
    seq_lens: list[int]
    flops: list[int]
    attention_flops: list[int]
    #: what the masks let through (causal about half, a window N·w, a pattern its nonzeros)
    useful_attention_flops: list[int]
    peak_bytes: list[int]
    #: for each point, which of ``pieces`` it comes from (the curve breaks between pieces)
    piece_index: list[int] = field(default_factory=list)
    #: the analyses the points come from, each valid for its n_range
    pieces: list[Analysis] = field(repr=False, default_factory=list)
    #: plot points no trace holds for (left out of the curve)
    clipped: list[int] = field(default_factory=list)


@dataclass
class GpuLimit:
    """A GPU's memory budget and the largest N each curve fits in it."""

    name: str
    memory_bytes: int
    budget_bytes: int
    max_seq_len: dict[str, int | None]  # curve label -> largest N that fits


@dataclass
class PlotData:
    model: str
    batch: int
    dtype: str
    device: str
    seq_range: tuple[int, int]
    curves: list[Curve]
    gpus: list[GpuLimit]


# ------------------------------------------------------------------ data


def log_spaced_lengths(lo: int, hi: int, points: int = 60) -> list[int]:
    """About ``points`` integer lengths from lo to hi, evenly spaced in log N."""
    if lo <= 0 or hi < lo:
        raise AttncostError(f"a plot range needs 0 < LO <= HI, not {lo}..{hi}")
    if lo == hi or points < 2:
        return [lo]
    ratio = math.log(hi / lo)
    values = {round(lo * math.exp(ratio * i / (points - 1))) for i in range(points)}
    return sorted(values | {lo, hi})


def _holds_for(analysis: Analysis, n: int) -> bool:
    lo, hi = analysis.n_range
    return n >= lo and (hi is None or n <= hi)


def covering_analyses(run: Callable[[int], Analysis], seq_lens: list[int],
                      max_traces: int = MAX_TRACES_PER_CURVE) -> tuple[list[Analysis], list[int]]:
    """Trace at the first length, then again at the first length no trace
    holds for, until every length is covered or ``max_traces`` is spent.
    Returns the analyses and the lengths left uncovered."""
    pieces: list[Analysis] = []
    uncovered = list(seq_lens)
    while uncovered and len(pieces) < max_traces:
        analysis = run(uncovered[0])
        if not _holds_for(analysis, uncovered[0]):
            break  # the trace does not hold even at its own length
        pieces.append(analysis)
        uncovered = [n for n in uncovered if not _holds_for(analysis, n)]
    return pieces, uncovered


def peak_at(pieces: list[Analysis], n: int, batch: int) -> int | None:
    """Peak memory at N=n from the piece that holds there (None: none does)."""
    for a in pieces:
        if _holds_for(a, n):
            return a.at(a.peak_memory_bytes, n, batch)
    return None


def largest_fitting_seq_len(pieces: list[Analysis], budget_bytes: int, batch: int) -> int | None:
    """The largest N whose peak memory fits ``budget_bytes``, over the ranges
    the pieces hold for.  None when no length in them fits."""
    found = [check_fits(a.memory, a.n_range[0], batch, budget_bytes, n_range=a.n_range,
                        allocator=uses_allocator(a.memory)).max_seq_len for a in pieces]
    return max((n for n in found if n is not None), default=None)


def _curve(label: str, pieces: list[Analysis], seq_lens: list[int], clipped: list[int],
           batch: int) -> Curve:
    """The pieces' expressions, built once, evaluated at every covered length."""
    covered = [n for n in seq_lens if n not in set(clipped)]
    curve = Curve(label=label, seq_lens=covered, flops=[], attention_flops=[],
                  useful_attention_flops=[], peak_bytes=[], pieces=pieces, clipped=clipped)
    exprs = [(a.flops, a.attention_flops, a.useful_attention_flops, a.peak_memory_bytes)
             for a in pieces]
    for n in covered:
        index = next(i for i, p in enumerate(pieces) if _holds_for(p, n))
        a, (flops, attention, useful, peak) = pieces[index], exprs[index]
        curve.piece_index.append(index)
        curve.flops.append(a.at(flops, n, batch))
        curve.attention_flops.append(a.at(attention, n, batch))
        curve.useful_attention_flops.append(a.at(useful, n, batch))
        curve.peak_bytes.append(a.at(peak, n, batch))
    return curve


def plot_data(model: str, seq_range: tuple[int, int], batch: int = 1, dtype: str | None = None,
              device: str = "cuda", attn_implementations: Iterable[str | None] = (None,),
              kv_cache: bool | None = None, gpus: Iterable[tuple[GPU, int]] = (),
              points: int = 60, progress: Callable[[str], None] | None = None,
              **options) -> PlotData:
    """Trace once per attention implementation (more only where the model
    branches on N) and evaluate FLOPs and peak memory at ``points`` lengths.
    ``gpus``: (GPU, bytes it leaves for tensors) pairs; ``progress`` hears
    which trace is running; ``options`` are more keywords of ``analyze``."""
    lo, hi = seq_range
    seq_lens = log_spaced_lengths(lo, hi, points)
    curves: list[Curve] = []
    for impl in list(dict.fromkeys(attn_implementations)) or [None]:
        def run(n: int, impl=impl) -> Analysis:
            say = None
            if progress is not None:
                where = f"{impl}, " if impl else ""

                def say(msg: str) -> None:
                    progress(f"{where}N={human_tokens(n)}: {msg}")
            return analyze(model, n, batch=batch, dtype=dtype, device=device,
                           attn_implementation=impl, kv_cache=kv_cache, progress=say, **options)

        pieces, clipped = covering_analyses(run, seq_lens)
        if not pieces:
            raise AttncostError(f"{model}: no trace holds inside {human_tokens(lo)}.."
                                f"{human_tokens(hi)}; plot another range")
        label = impl or pieces[0].attn_implementation or "as written"
        if progress is not None:
            progress(f"evaluating {label} at {len(seq_lens)} lengths")
        curves.append(_curve(label, pieces, seq_lens, clipped, batch))
    limits = [GpuLimit(gpu.name, gpu.memory_bytes, budget,
                       {c.label: largest_fitting_seq_len(c.pieces, budget, batch) for c in curves})
              for gpu, budget in gpus]
    return PlotData(model=str(model), batch=batch, dtype=curves[0].pieces[0].dtype, device=device,
                    seq_range=(lo, hi), curves=curves, gpus=limits)
