"""Tables for the terminal (rich)."""
from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table

from ..units import PEAK_FLOPS_DTYPES, human_tokens
from .rows import baseline_rows, choice_rows, site_cells, site_rows
from .sentences import analysis_lines, analysis_title, baseline_notes, comparison_site_lines, \
    comparison_title


def print_lines(lines: list[str], console: Console) -> None:
    for line in lines:
        console.print(line, highlight=False, soft_wrap=False)


def print_analysis(a, console: Console) -> None:
    """The sites table, then the summary under it."""
    table = Table(title=analysis_title(a), box=box.SIMPLE_HEAD, title_justify="left",
                  show_footer=False, pad_edge=False, show_edge=False, collapse_padding=True)
    table.add_column("site", overflow="fold", max_width=40)
    table.add_column("×", justify="right")
    table.add_column("variant", overflow="fold", max_width=22)
    table.add_column("heads", justify="right")
    table.add_column("FLOPs formula", overflow="fold", max_width=24)
    table.add_column(f"at N={human_tokens(a.seq_len)}", justify="right")
    table.add_column("share", justify="right")
    for row in site_rows(a):
        table.add_row(row.label, str(row.count), *site_cells(a, row))
    console.print(table)
    console.print()
    print_lines(analysis_lines(a), console)


def _simple_table(console: Console, title: str, header: list[str], rows: list[list[str]]) -> None:
    """A table whose first column is text and the rest numbers."""
    t = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    for i, name in enumerate(header):
        t.add_column(name, justify="right" if i else "left", no_wrap=True)
    for row in rows:
        t.add_row(*row)
    console.print(t)


def print_comparison(c, console: Console) -> None:
    """The choices side by side, then each baseline's per-layer counts."""
    _simple_table(console, comparison_title(c), *choice_rows(c))
    for line in comparison_site_lines(c):
        console.print(line, highlight=False)
    for b in c.baselines:
        header, rows, missed = baseline_rows(b)
        console.print()
        _simple_table(console, f"FLOPs per layer, {b.choice}: attncost and other counters",
                      header, rows)
        for line in missed + baseline_notes(b):
            console.print(line, highlight=False)


def print_gpus(gpus: dict, console: Console) -> None:
    table = Table(title="GPUs (dense peak FLOP/s from datasheets)")
    for col in ("GPU", "memory", "bandwidth", *PEAK_FLOPS_DTYPES):
        table.add_column(col, justify="left" if col == "GPU" else "right")
    for g in gpus.values():
        table.add_row(g.name, f"{g.memory_bytes / (1 << 30):g} GiB",
                      f"{g.memory_bandwidth / 1e12:.3g} TB/s",
                      *[f"{g.peak_flops[k] / 1e12:g} T" if k in g.peak_flops else "-"
                        for k in PEAK_FLOPS_DTYPES])
    console.print(table)
