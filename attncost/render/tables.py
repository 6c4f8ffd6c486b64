"""Tables for the terminal (rich), fitted to its width.

A table never cuts a name or a number: columns of words (a variant, a
choice's label, a header) wrap at spaces, and when that is not enough the
long formulas move below the table.  Only a name longer than the whole
terminal is ever folded.
"""
from __future__ import annotations

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

from ..units import PEAK_FLOPS_DTYPES, human_tokens
from .console import wrapped
from .rows import baseline_rows, choice_rows, site_cells, site_rows
from .sentences import analysis_lines, analysis_title, baseline_notes, comparison_site_lines, \
    comparison_title, time_lines

#: Between two columns (one space of padding and the blank rule of SIMPLE_HEAD).
SEPARATOR = 2


def print_lines(lines: list[str], console: Console) -> None:
    """Sentences, folded at spaces to the terminal's width (see console.wrap_width)."""
    for line in wrapped(lines):
        console.print(line, highlight=False, soft_wrap=True, markup=False)


def _longest_word(text: str) -> int:
    return max((cell_len(w) for w in text.split()), default=0)


def fit_widths(columns: list[list[str]], width: int, shrinkable: list[int]) -> list[int] | None:
    """Column widths (header and cells each) that fit ``width``: natural where
    they can, columns in ``shrinkable`` narrowed (in that order) as far as
    their longest word.  None when even that is too wide."""
    natural = [max(cell_len(c) for c in col) for col in columns]
    widths = list(natural)
    excess = sum(widths) + SEPARATOR * (len(widths) - 1) - width
    for i in shrinkable:
        if excess <= 0:
            break
        give = min(excess, natural[i] - max(_longest_word(c) for c in columns[i]))
        widths[i] -= max(give, 0)
        excess -= max(give, 0)
    return widths if excess <= 0 else None


def _table(header: list[str], rows: list[list[str]], widths: list[int] | None,
           left: set[int], fold: set[int] = frozenset()) -> Table:
    """A borderless table of ``widths`` (None: rich decides); a column wraps
    at spaces only where its width is below what its cells need."""
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True)
    columns = [[h] + [r[i] for r in rows] for i, h in enumerate(header)]
    for i, name in enumerate(header):
        natural = max(cell_len(c) for c in columns[i])
        width = widths[i] if widths else None
        t.add_column(name, justify="left" if i in left else "right", width=width,
                     no_wrap=i not in fold and (width is None or width >= natural),
                     overflow="fold")
    for row in rows:
        t.add_row(*row)
    return t


def _print_title(title: str, console: Console) -> None:
    print_lines([title], console)


def print_analysis(a, console: Console, time=None) -> None:
    """The sites table, then the summary under it (and the time on a GPU)."""
    _print_title(analysis_title(a), console)
    header = ["site", "×", "variant", "heads", "FLOPs formula", f"at N={human_tokens(a.seq_len)}",
              "share"]
    site_table = site_rows(a)
    rows = [[row.label, str(row.count), *site_cells(a, row)] for row in site_table]
    below: list[str] = []
    layout = _analysis_layout(header, rows, console.width)
    if layout is None:  # the formulas go below the table
        below = _formula_lines(site_table, rows)
        header, rows = header[:4] + header[5:], [r[:4] + r[5:] for r in rows]
        layout = _analysis_layout(header, rows, console.width)
    fold = set()
    if layout is None:  # a terminal too narrow for the site names: fold them, only them
        layout, fold = _squeezed(header, rows, console.width), {0}
    console.print(_table(header, rows, layout, left={0, 2, 4} if len(header) == 7 else {0, 2},
                         fold=fold))
    print_lines(below, console)
    console.print()
    print_lines(analysis_lines(a) + time_lines(time), console)


def _analysis_layout(header, rows, width) -> list[int] | None:
    columns = [[h] + [r[i] for r in rows] for i, h in enumerate(header)]
    return fit_widths(columns, width, [2, 3])  # the variant and heads wrap at spaces


def _squeezed(header, rows, width) -> list[int]:
    """Every column as narrow as its words allow, the first one taking what is left."""
    columns = [[h] + [r[i] for r in rows] for i, h in enumerate(header)]
    widths = [max(cell_len(c) for c in col) for col in columns]
    for i in (2, 3):
        widths[i] = max(_longest_word(c) for c in columns[i])
    widths[0] = max(8, width - sum(widths[1:]) - SEPARATOR * (len(widths) - 1))
    return widths


def _formula_lines(site_table, rows) -> list[str]:
    if len(rows) == 1:
        return [f"FLOPs formula: {rows[0][4]}"]
    return [f"FLOPs formula of {row.label}: {cells[4]}" for row, cells in zip(site_table, rows)]


def _numbers_table(console: Console, title: str | None, header: list[str],
                   rows: list[list[str]]) -> None:
    """A table whose first column is text and the rest numbers; a number is
    never cut: if it cannot fit, each row is printed as a line instead."""
    if title:
        _print_title(title, console)
    columns = [[h] + [r[i] for r in rows] for i, h in enumerate(header)]
    widths = fit_widths(columns, console.width, list(range(len(header))))
    numbers_whole = widths is not None and all(
        widths[i] >= max(cell_len(r[i]) for r in rows) for i in range(1, len(header)))
    if numbers_whole:
        console.print(_table(header, rows, widths, left={0}))
        console.print()
        return
    print_lines([f"{row[0]}: " + ", ".join(f"{h} {v}" for h, v in zip(header[1:], row[1:]))
                 for row in rows], console)


def print_comparison(c, console: Console) -> None:
    """The choices side by side, then each baseline's per-layer counts."""
    _numbers_table(console, comparison_title(c), *choice_rows(c))
    print_lines(comparison_site_lines(c), console)
    for b in c.baselines:
        header, rows, missed = baseline_rows(b)
        console.print()
        _numbers_table(console, f"FLOPs per layer, {b.choice}: attncost and other counters",
                       header, rows)
        print_lines(missed + baseline_notes(b), console)


def print_gpus(gpus: dict, console: Console) -> None:
    header = ["GPU", "memory", "bandwidth", *PEAK_FLOPS_DTYPES]
    rows = [[g.name, f"{g.memory_bytes / (1 << 30):g} GiB", f"{g.memory_bandwidth / 1e12:.3g} TB/s",
             *[f"{g.peak_flops[k] / 1e12:g} T" if k in g.peak_flops else "-"
               for k in PEAK_FLOPS_DTYPES]] for g in gpus.values()]
    _numbers_table(console, "GPUs: memory in GiB (2^30 bytes), bandwidth in TB/s (10^12 bytes/s), "
                   "dense peak FLOP/s per dtype from datasheets", header, rows)
