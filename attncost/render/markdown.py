"""Markdown: the same tables and sentences, for a README or a pull request."""
from __future__ import annotations

from .rows import baseline_rows, choice_rows, site_cells, site_rows
from .sentences import analysis_lines, analysis_title, baseline_notes, comparison_site_lines, \
    comparison_title


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def _bullets(lines: list[str]) -> list[str]:
    return [f"- {line}" for line in lines]


def analysis_markdown(a) -> str:
    out = [f"**{analysis_title(a)}**", "",
           "| site | variant | heads | FLOPs formula | at N | share |",
           "|---|---|---:|---|---:|---:|"]
    for row in site_rows(a):
        kind, heads, formula, value, share = site_cells(a, row)
        label = row.label + (f" ×{row.count}" if row.count > 1 else "")
        out.append(f"| `{label}` | {kind} | {heads} | `{formula}` | {value} | {share} |")
    out.append("")
    out.extend(_bullets(analysis_lines(a)))
    return "\n".join(out) + "\n"


def comparison_markdown(c) -> str:
    out = [f"**{comparison_title(c)}**", ""]
    out += _table(*choice_rows(c))
    out += [""] + _bullets(comparison_site_lines(c))
    for b in c.baselines:
        out += ["", f"**FLOPs per layer, {b.choice}: attncost and other counters**", ""]
        header, rows, missed = baseline_rows(b)
        out += _table(header, rows)
        out += [""] + _bullets(missed + baseline_notes(b))
    return "\n".join(out) + "\n"
