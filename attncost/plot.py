"""FLOPs and peak memory against N, on log-log axes, from the formulas.

Each curve comes from one trace: its expressions are evaluated at every
point, never traced again per point.  A trace holds only for the range of N
its guards allow (``Analysis.n_range``); where a model branches on the
length, each piece of the plot range is traced once at a length inside it.
The data (``PlotData``) is computed first and drawn second.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from .analysis import Analysis, analyze
from .errors import AttncostError
from .gpus import GPU
from .report import human_bytes, human_flops, human_tokens

#: How many times one curve may be traced to cover the plot range.
MAX_TRACES_PER_CURVE = 4
FORMATS = (".png", ".svg")


@dataclass
class Curve:
    """One model configuration's cost at each plotted N."""

    label: str
    seq_lens: list[int]
    flops: list[int]
    attention_flops: list[int]
    #: what the masks let through (causal about half, a window N·w, a pattern its nonzeros)
    useful_attention_flops: list[int]
    peak_bytes: list[int] | None
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
    notes: list[str] = field(default_factory=list)


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
        if _holds_for(a, n) and a.peak_memory_bytes is not None:
            return a.at(a.peak_memory_bytes, n, batch)
    return None


def largest_fitting_seq_len(pieces: list[Analysis], budget_bytes: int, batch: int) -> int | None:
    """The largest N whose peak memory fits ``budget_bytes``, over the ranges
    the pieces hold for.  None when no length in them fits."""
    from .fits import max_seq_len

    best = None
    for a in pieces:
        peak = a.memory if a.memory is not None else a.peak_memory_bytes
        if peak is None:
            continue
        lo, hi = a.n_range
        found = max_seq_len(peak, batch, budget_bytes, lo=lo, hi=hi)
        if found is not None:
            best = found if best is None else max(best, found)
    return best


def plot_data(model: str, seq_range: tuple[int, int], batch: int = 1, dtype: str | None = None,
              device: str = "cuda", attn_implementations: Iterable[str | None] = (None,),
              kv_cache: bool | None = None, gpus: Iterable[tuple[GPU, int]] = (),
              points: int = 60) -> PlotData:
    """Trace once per attention implementation (more only where the model
    branches on N) and evaluate FLOPs and peak memory at ``points`` lengths.
    ``gpus``: (GPU, bytes it leaves for tensors) pairs."""
    lo, hi = seq_range
    seq_lens = log_spaced_lengths(lo, hi, points)
    implementations = list(dict.fromkeys(attn_implementations)) or [None]
    curves: list[Curve] = []
    notes: list[str] = []
    first: Analysis | None = None
    for impl in implementations:
        def run(n: int, impl=impl) -> Analysis:
            return analyze(model, n, batch=batch, dtype=dtype, device=device,
                           attn_implementation=impl, kv_cache=kv_cache)

        pieces, clipped = covering_analyses(run, seq_lens)
        if not pieces:
            raise AttncostError(f"{model}: no trace holds inside {human_tokens(lo)}.."
                                f"{human_tokens(hi)}; plot another range")
        first = first or pieces[0]
        label = impl or pieces[0].attn_implementation or "as written"
        covered = [n for n in seq_lens if n not in set(clipped)]
        curve = Curve(label=label, seq_lens=covered, flops=[], attention_flops=[],
                      useful_attention_flops=[], peak_bytes=[], pieces=pieces, clipped=clipped)
        # The expressions of each piece, built once and evaluated at every point.
        exprs = [(a.flops, a.attention_flops, a.useful_attention_flops, a.peak_memory_bytes)
                 for a in pieces]
        for n in covered:
            index = next(i for i, p in enumerate(pieces) if _holds_for(p, n))
            a, (flops, attention, useful, peak) = pieces[index], exprs[index]
            curve.piece_index.append(index)
            curve.flops.append(a.at(flops, n, batch))
            curve.attention_flops.append(a.at(attention, n, batch))
            curve.useful_attention_flops.append(a.at(useful, n, batch))
            curve.peak_bytes.append(a.at(peak, n, batch) if peak is not None else None)
        if all(p is None for p in curve.peak_bytes):
            curve.peak_bytes = None
        if len(pieces) > 1:
            notes.append(f"{label}: the model branches on N; traced {len(pieces)} times, at "
                         + ", ".join(human_tokens(p.seq_len) for p in pieces))
        if clipped:
            notes.append(f"{label}: no trace holds for N in {human_tokens(clipped[0])}.."
                         f"{human_tokens(clipped[-1])}; those points are left out")
        curves.append(curve)

    limits = []
    for gpu, budget in gpus:
        limits.append(GpuLimit(gpu.name, gpu.memory_bytes, budget,
                               {c.label: largest_fitting_seq_len(c.pieces, budget, batch)
                                for c in curves}))
    if any(c.peak_bytes is None for c in curves):
        notes.append("peak memory is not modelled for this model; the memory panel is empty")
    assert first is not None
    return PlotData(model=str(model), batch=batch, dtype=first.dtype, device=device,
                    seq_range=(lo, hi), curves=curves, gpus=limits, notes=notes)


# --------------------------------------------------------------- drawing


def _power_ticks(lo: float, hi: float, base: int, most: int = 12) -> list[float]:
    """Powers of ``base`` inside lo..hi, thinned to at most ``most``."""
    first = math.ceil(math.log(lo, base) - 1e-9)
    last = math.floor(math.log(hi, base) + 1e-9)
    exps = list(range(first, last + 1))
    step = max(1, math.ceil(len(exps) / most))
    return [float(base) ** e for e in exps[::step]]


def _token_label(n: float) -> str:
    return human_tokens(int(round(n)))


def _segments(curve: Curve, values: list) -> list[tuple[list[int], list]]:
    """The points of a curve split where the trace they come from changes."""
    out: list[tuple[list[int], list]] = []
    previous = None
    for n, v, piece in zip(curve.seq_lens, values, curve.piece_index):
        if piece != previous:
            out.append(([], []))
            previous = piece
        out[-1][0].append(n)
        out[-1][1].append(v)
    return out


def _plot_segments(ax, curve: Curve, values: list, **style):
    """Draw a curve piece by piece; returns one line for the legend."""
    lines = [ax.plot(xs, ys, **style)[0] for xs, ys in _segments(curve, values)]
    return lines[0]


def draw(data: PlotData, out: str | Path) -> Path:
    """Draw ``data`` to a .png or .svg file: FLOPs and peak memory panels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise AttncostError(f"--out {out}: write a .png or .svg file")
    if not out.parent.exists():
        raise AttncostError(f"--out {out}: the folder {out.parent} does not exist")

    fig = Figure(figsize=(12, 5.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax_flops, ax_mem = fig.subplots(1, 2)
    lo, hi = data.seq_range
    colors = [f"C{i}" for i in range(10)]
    dashes = ["--", ":", "-."]
    handles, labels = [], []

    for i, curve in enumerate(data.curves):
        color = colors[i % len(colors)]
        name = curve.label if len(data.curves) > 1 or curve.label != "as written" else "model"
        # Earlier curves are drawn wider, so that equal curves stay visible.
        width = max(1.2, 3.4 - 1.1 * i)
        handles.append(_plot_segments(ax_flops, curve, curve.flops, color=color, lw=width))
        labels.append(f"{name}: all FLOPs")
        if any(curve.attention_flops):
            handles.append(_plot_segments(ax_flops, curve, [max(x, 1) for x in curve.attention_flops],
                                          color=color, lw=width * 0.7, ls="--"))
            labels.append(f"{name}: attention FLOPs")
        if curve.useful_attention_flops != curve.attention_flops and any(
                curve.useful_attention_flops):
            handles.append(_plot_segments(ax_flops, curve,
                                          [max(x, 1) for x in curve.useful_attention_flops],
                                          color=color, lw=width * 0.7, ls=":"))
            labels.append(f"{name}: attention the masks let through")
        if curve.peak_bytes is not None:
            handles.append(_plot_segments(ax_mem, curve, curve.peak_bytes, color=color, lw=width))
            labels.append(f"{name}: peak memory")

    all_bytes = [b for c in data.curves for b in (c.peak_bytes or []) if b]
    for j, gpu in enumerate(data.gpus):
        style = dashes[j % len(dashes)]
        h = ax_mem.axhline(gpu.budget_bytes, color="0.35", lw=1.2, ls=style)
        fits = ", ".join((f"{label} " if len(data.curves) > 1 else "")
                         + (f"fits N <= {human_tokens(n)}" if n else "fits no N")
                         for label, n in gpu.max_seq_len.items())
        reserve = gpu.memory_bytes - gpu.budget_bytes
        budget = (f"{human_bytes(gpu.budget_bytes)} of {human_bytes(gpu.memory_bytes)}"
                  if reserve else human_bytes(gpu.memory_bytes))
        handles.append(h)
        labels.append(f"{gpu.name} ({budget}): {fits}")
        all_bytes.append(gpu.budget_bytes)
        for i, curve in enumerate(data.curves):
            n = gpu.max_seq_len.get(curve.label)
            if n is None or not lo <= n <= hi:
                continue
            peak = peak_at(curve.pieces, n, data.batch)
            ax_mem.plot([n], [peak], marker="o", ms=8, color=colors[i % len(colors)],
                        markeredgecolor="black", zorder=5)
            ax_mem.annotate(human_tokens(n), (n, peak), textcoords="offset points",
                            xytext=(-6, 8), ha="right", fontsize=9)

    all_flops = [f for c in data.curves
                 for f in c.flops + c.attention_flops + c.useful_attention_flops if f > 0]
    for ax, values, base, fmt, title in (
            (ax_flops, all_flops, 10, human_flops, "FLOPs of one forward pass"),
            (ax_mem, all_bytes, 2, human_bytes, "peak memory")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=base)
        ax.set_xlim(lo, hi)
        ax.xaxis.set_major_locator(FixedLocator(_power_ticks(lo, hi, 2)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: _token_label(x)))
        ax.xaxis.set_minor_locator(NullLocator())
        if values:
            ymin, ymax = min(values) / 1.5, max(values) * 1.5
            ax.set_ylim(ymin, ymax)
            ax.yaxis.set_major_locator(FixedLocator(_power_ticks(ymin, ymax, base, most=9)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _, fmt=fmt: fmt(y)))
            ax.yaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("sequence length N (tokens)")
        ax.set_title(title)
        ax.grid(True, which="major", alpha=0.3)

    fig.suptitle(f"{data.model}: B={data.batch}, {data.dtype}, device {data.device}",
                 fontsize=12)
    fig.legend(handles, labels, loc="outside lower center", ncols=2 if len(labels) > 3 else 1,
               fontsize=9, frameon=False, title="\n".join(data.notes) or None,
               title_fontsize=8.5)
    fig.savefig(out, dpi=110)
    return out
