"""Figures: FLOPs and peak memory against N (log-log), drawn from PlotData."""
from __future__ import annotations

import math
from pathlib import Path

from ..errors import AttncostError
from ..questions.sweep import Curve, PlotData, peak_at
from ..units import human_bytes, human_flops, human_tokens
from .sentences import sweep_notes

FORMATS = (".png", ".svg")


def _power_ticks(lo: float, hi: float, base: int, most: int = 12) -> list[float]:
    """Powers of ``base`` inside lo..hi, thinned to at most ``most``."""
    first = math.ceil(math.log(lo, base) - 1e-9)
    last = math.floor(math.log(hi, base) + 1e-9)
    exps = list(range(first, last + 1))
    step = max(1, math.ceil(len(exps) / most))
    return [float(base) ** e for e in exps[::step]]


def _length_ticks(lo: float, hi: float) -> list[float]:
    """Powers of 2 inside lo..hi and both ends (a 1k..10M plot labels 10M),
    without a power so close to an end that the labels would collide."""
    inner = [t for t in _power_ticks(lo, hi, 2) if t / lo >= 1.5 and hi / t >= 1.5]
    return [float(lo)] + inner + [float(hi)]


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


_COLORS = [f"C{i}" for i in range(10)]
_DASHES = ["--", ":", "-."]


def _draw_curves(data: PlotData, ax_flops, ax_mem, legend: list) -> None:
    """Each curve: all FLOPs, attention FLOPs, what the masks let through, peak memory."""
    for i, curve in enumerate(data.curves):
        color = _COLORS[i % len(_COLORS)]
        name = curve.label if len(data.curves) > 1 or curve.label != "as written" else "model"
        # Earlier curves are drawn wider, so that equal curves stay visible.
        width = max(1.2, 3.4 - 1.1 * i)
        legend.append((_plot_segments(ax_flops, curve, curve.flops, color=color, lw=width),
                       f"{name}: all FLOPs (left)"))
        if any(curve.attention_flops):
            legend.append((_plot_segments(ax_flops, curve, [max(x, 1) for x in curve.attention_flops],
                                          color=color, lw=width * 0.7, ls="--"),
                           f"{name}: attention FLOPs"))
        if curve.useful_attention_flops != curve.attention_flops and any(
                curve.useful_attention_flops):
            legend.append((_plot_segments(ax_flops, curve,
                                          [max(x, 1) for x in curve.useful_attention_flops],
                                          color=color, lw=width * 0.7, ls=":"),
                           f"{name}: attention the masks let through"))
        # Peak memory: square markers, so it never reads as the FLOPs line in the legend.
        legend.append((_plot_segments(ax_mem, curve, curve.peak_bytes, color=color, lw=width,
                                      marker="s", ms=4,
                                      markevery=max(1, len(curve.seq_lens) // 12)),
                       f"{name}: peak memory (right)"))


def _gpu_groups(data: PlotData) -> list[list]:
    """GPUs that leave the same budget, together: one line and one label."""
    groups: dict[int, list] = {}
    for gpu in data.gpus:
        groups.setdefault(gpu.budget_bytes, []).append(gpu)
    return list(groups.values())


def _gpu_label(data: PlotData, group: list) -> str:
    gpu = group[0]
    fits = ", ".join((f"{label} " if len(data.curves) > 1 else "")
                     + (f"fits N <= {human_tokens(n)}" if n else "fits no N")
                     for label, n in gpu.max_seq_len.items())
    reserve = gpu.memory_bytes - gpu.budget_bytes
    budget = (f"{human_bytes(gpu.budget_bytes)} of {human_bytes(gpu.memory_bytes)}"
              if reserve else human_bytes(gpu.memory_bytes))
    return f"{', '.join(g.name for g in group)} ({budget}): {fits}"


def _draw_gpus(data: PlotData, ax_mem, legend: list) -> None:
    """Each GPU budget as a line, the largest N that fits as a marker."""
    lo, hi = data.seq_range
    for j, group in enumerate(_gpu_groups(data)):
        gpu = group[0]
        h = ax_mem.axhline(gpu.budget_bytes, color="0.35", lw=1.2, ls=_DASHES[j % len(_DASHES)])
        legend.append((h, _gpu_label(data, group)))
        for i, curve in enumerate(data.curves):
            n = gpu.max_seq_len.get(curve.label)
            if n is None or not lo <= n <= hi:
                continue
            peak = peak_at(curve.pieces, n, data.batch)
            ax_mem.plot([n], [peak], marker="o", ms=8, color=_COLORS[i % len(_COLORS)],
                        markeredgecolor="black", zorder=5)
            ax_mem.annotate(human_tokens(n), (n, peak), textcoords="offset points",
                            xytext=(-6, 8), ha="right", fontsize=9)


#: The memory axis reaches at most this factor above the largest GPU budget
#: (or, without GPUs, above the lowest curve's top).
MEMORY_AXIS_HEADROOM = 64


def memory_axis_top(data: PlotData) -> tuple[float | None, str | None]:
    """Where to clip the memory axis so one steep curve (eager attention's
    N×N scores) does not flatten the rest, and a note saying so; (None, None)
    when nothing needs clipping."""
    tops = {c.label: max(c.peak_bytes) for c in data.curves if c.peak_bytes}
    if not tops:
        return None, None
    anchor = max([g.budget_bytes for g in data.gpus] + [min(tops.values())])
    cap = anchor * MEMORY_AXIS_HEADROOM
    over = {label: top for label, top in tops.items() if top > cap}
    if not over:
        return None, None
    label, top = max(over.items(), key=lambda x: x[1])
    return cap, (f"memory axis clipped at {human_bytes(cap)}: {label} reaches "
                 f"{human_bytes(top)} at N={human_tokens(data.seq_range[1])}")


def _format_axes(ax, seq_range, values, base: int, fmt, title: str,
                 top: float | None = None) -> None:
    """Log-log axes with ticks a person reads (4k, 1M; GiB, TFLOP); ``top``
    clips the y axis."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    lo, hi = seq_range
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=base)
    ax.set_xlim(lo, hi)
    ax.xaxis.set_major_locator(FixedLocator(_length_ticks(lo, hi)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: _token_label(x)))
    ax.xaxis.set_minor_locator(NullLocator())
    if values:
        ymin, ymax = min(values) / 1.5, (top if top is not None else max(values) * 1.5)
        ax.set_ylim(ymin, ymax)
        ax.yaxis.set_major_locator(FixedLocator(_power_ticks(ymin, ymax, base, most=9)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: fmt(y)))
        ax.yaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("sequence length N (tokens)")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)


def check_out(out: str | Path) -> Path:
    """The image path, refused before any work if it cannot be written."""
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise AttncostError(f"--out {out}: write a .png or .svg file")
    if not out.parent.exists():
        raise AttncostError(f"--out {out}: the folder {out.parent} does not exist")
    return out


def draw(data: PlotData, out: str | Path) -> Path:
    """Draw ``data`` to a .png or .svg file: FLOPs and peak memory panels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = check_out(out)
    fig = Figure(figsize=(12, 5.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax_flops, ax_mem = fig.subplots(1, 2)
    legend: list = []
    _draw_curves(data, ax_flops, ax_mem, legend)
    _draw_gpus(data, ax_mem, legend)
    all_flops = [f for c in data.curves
                 for f in c.flops + c.attention_flops + c.useful_attention_flops if f > 0]
    all_bytes = [b for c in data.curves for b in c.peak_bytes if b] + [g.budget_bytes
                                                                     for g in data.gpus]
    _format_axes(ax_flops, data.seq_range, all_flops, 10, human_flops, "FLOPs of one forward pass")
    top, clip_note = memory_axis_top(data)
    _format_axes(ax_mem, data.seq_range, [b for b in all_bytes if top is None or b <= top], 2,
                 human_bytes, "peak memory" + (" (axis clipped)" if top else ""), top=top)
    fig.suptitle(f"{data.model}: B={data.batch}, {data.dtype}, device {data.device}",
                 fontsize=12)
    handles, labels = [h for h, _ in legend], [label for _, label in legend]
    fig.legend(handles, labels, loc="outside lower center", ncols=2 if len(labels) > 3 else 1,
               fontsize=9, frameon=False,
               title="\n".join(sweep_notes(data) + ([clip_note] if clip_note else [])) or None,
               title_fontsize=8.5)
    fig.savefig(out, dpi=110)
    return out
