"""`attncost validate` for people: a terminal table and a figure.

Display only: every number comes from the report ``run_validation``
returns (attncost/kernels/harness.py); the figure's formula curves come
from specs/variants.yaml.
"""
from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table

from ..kernels.registry import SPARSE_BLOCK, SPARSE_PATTERN
from ..patterns.formulas import formula
from ..units import human_bytes, human_seconds, human_tokens

# ---------------------------------------------------------------------------
# Table
# ---------------------------------------------------------------------------

_COLUMNS = (("variant", "left"), ("max err", "right"), ("N^k fit/spec", "right"), ("at N", "right"),
            ("time", "right"), ("TFLOP/s", "right"), ("mem/spec", "right"), ("ok", "left"))


def print_validation(result: dict, console: Console) -> None:
    """`attncost validate` as a table: correctness, scaling and memory per variant."""
    table = Table(title=f"attncost validate on {result.get('device', '?')}", box=box.SIMPLE_HEAD,
                  title_justify="left", pad_edge=False, collapse_padding=True)
    for col, justify in _COLUMNS:
        table.add_column(col, justify=justify, no_wrap=True)
    for r in result.get("results", []):
        table.add_row(*_table_row(r))
    console.print(table)


def validation_markdown(result: dict) -> str:
    """`attncost validate --format markdown`: the same table, in Markdown."""
    header = [name for name, _ in _COLUMNS]
    out = [f"**attncost validate on {result.get('device', '?')}**", "",
           "| " + " | ".join(header) + " |",
           "|" + "|".join("---:" if j == "right" else "---" for _, j in _COLUMNS) + "|"]
    out += ["| " + " | ".join(_table_row(r)) + " |" for r in result.get("results", [])]
    return "\n".join(out) + "\n"


def _table_row(r: dict) -> list[str]:
    """One variant's cells; the sweep columns show its largest length (the last point)."""
    points = r.get("points") or []
    last = points[-1] if points else {}
    fit = r.get("fitted_exponent")
    exponent = f"{fit:.2f} / {r.get('formula_exponent')}" if fit is not None else \
        f"- / {r.get('formula_exponent')}"
    ratio = (last.get("peak_bytes") / last["predicted_bytes"]
             if last.get("predicted_bytes") and last.get("peak_bytes") else None)
    return [
        r.get("variant", "?"),
        f"{r.get('max_abs_error', float('nan')):.1e}" + ("" if r.get("correct") else " WRONG"),
        exponent,
        human_tokens(last["seq_len"]) if last else "-",
        human_seconds(last["seconds"]) if last.get("seconds") else "-",
        f"{last['tflops']:.0f}" if last.get("tflops") else "-",
        f"{ratio:.3f}" if ratio else "-",
        "yes" if r.get("ok") else "no",
    ]


# ---------------------------------------------------------------------------
# Figure
# ---------------------------------------------------------------------------


def plot_validation(report: dict, path) -> None:
    """One column per variant: time (top) and peak memory (bottom) against N, log-log.

    Measured points are markers; the predicted time is the formula's
    useful FLOPs scaled to the largest measured point (so the slope is the
    formula's), the predicted memory is the formula itself.  Without
    measurements (CPU) the panels show the formulas alone.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["results"]
    cols = max(1, len(results))
    fig, axes = plt.subplots(2, cols, figsize=(4.2 * cols, 7.5), squeeze=False)
    for col, res in enumerate(results):
        _plot_variant(axes[0][col], axes[1][col], res)
    measured = any("seconds" in p for r in results for p in r.get("points", []))
    what = "measured vs formula" if measured else \
        "formulas only: no measured points on this device (correctness only)"
    fig.suptitle(f"attncost kernels on {report.get('device', '?')} ({report.get('dtype', '')}): "
                 f"{what}", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_variant(ax_t, ax_m, res: dict) -> None:
    """One variant's column: its title, its curves, and axes a person reads."""
    pts = [p for p in res.get("points", []) if "seconds" in p]
    ax_t.set_title(_panel_title(res), fontsize=10)
    if pts:
        ns = _plot_measured(ax_t, ax_m, res, pts)
    else:
        ns = _plot_formulas(ax_t, ax_m, res)
    ax_m.set_ylabel("peak memory")
    _human_axes(ax_t, ax_m, ns, timed=bool(pts))
    for ax in (ax_t, ax_m):
        ax.set_xlabel("sequence length N (tokens)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)


def _panel_title(res: dict) -> str:
    status = "ok" if res.get("ok") else ("correct" if res.get("correct") else "FAILED")
    title = f"{res['variant']} ({status})"
    err = res.get("max_abs_error")
    if err is not None:
        title += f"\nmax |err| {err:.2g}"
    return title


def _plot_measured(ax_t, ax_m, res: dict, pts: list[dict]) -> list[int]:
    """Measured time and peak memory beside the formula; returns the lengths plotted."""
    ns = [p["seq_len"] for p in pts]
    secs = [p["seconds"] for p in pts]
    useful = [p["predicted_useful_flops"] for p in pts]
    scale = secs[-1] / useful[-1]
    ax_t.loglog(ns, [u * scale for u in useful], "-", color="tab:gray",
                label=f"formula, N^{res['formula_exponent']}")
    fit = res.get("fitted_exponent")
    ax_t.loglog(ns, secs, "o", color="tab:blue",
                label="measured" + (f", fit N^{fit:.2f}" if fit is not None else ""))
    ax_t.set_ylabel("seconds per call")
    ax_m.loglog(ns, [p["predicted_bytes"] for p in pts], "-", color="tab:gray", label="formula")
    ax_m.loglog(ns, [p["peak_bytes"] for p in pts], "s", color="tab:orange", label="measured peak")
    return ns


def _plot_formulas(ax_t, ax_m, res: dict) -> list[int]:
    """No measurements (a CPU run): the formulas alone, at the GPU sweep's shape."""
    spec = formula(res["variant"])
    ns = [2 ** i for i in range(10, 21)]
    values = _symbol_values(res.get("settings", {}))
    ax_t.loglog(ns, [spec.evaluate("useful_flops", N=n, **values) for n in ns], "-", color="tab:gray",
                label=f"formula useful FLOPs, N^{res['formula_exponent']}")
    ax_t.set_ylabel("FLOPs (no timing on this device)")
    ax_m.loglog(ns, [spec.evaluate("memory_bytes", N=n, **values) for n in ns], "-", color="tab:gray",
                label="formula")
    for ax in (ax_t, ax_m):
        ax.text(0.5, 0.5, "no measured points\n(correctness check only)", transform=ax.transAxes,
                ha="center", va="center", fontsize=9, color="tab:red", alpha=0.8)
    return ns


def _human_axes(ax_t, ax_m, ns, timed: bool) -> None:
    """Tick labels a person reads: 4k/64k/1M tokens, ms, MiB/GiB."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    for ax in (ax_t, ax_m):
        ax.xaxis.set_major_locator(FixedLocator(sorted(set(ns))))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: human_tokens(int(round(x)))))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    ax_m.set_yscale("log", base=2)  # ticks at 64 MiB, 128 MiB, ...
    ax_m.yaxis.set_major_formatter(FuncFormatter(lambda y, _: human_bytes(y)))
    ax_m.yaxis.set_minor_formatter(NullFormatter())
    if timed:
        ax_t.yaxis.set_major_formatter(FuncFormatter(lambda y, _: human_seconds(y)))
        ax_t.yaxis.set_minor_formatter(NullFormatter())


def _symbol_values(settings: dict) -> dict:
    """Formula symbols for a result without points (shape of the GPU sweep defaults)."""
    d = settings.get("head_dim", 128)
    values = {"B": settings.get("batch", 1), "H": settings.get("heads", 16), "d": d,
              "s": 4 if settings.get("dtype") == "float32" else 2,
              "w": settings.get("window", 512), "r": d}
    block = settings.get("block_size", SPARSE_BLOCK)
    values["k"] = block * (SPARSE_PATTERN["window_blocks"] + SPARSE_PATTERN["random_blocks"] + 2)
    return values
