"""Markdown: the same tables and sentences, for a README or a pull request."""
from __future__ import annotations

from .rows import baseline_rows, choice_rows, site_cells, site_rows
from .sentences import analysis_lines, analysis_title, baseline_notes, breakdown_sentence, \
    comparison_site_lines, comparison_title, fits_verdict, peak_entries, time_lines, \
    what_if_lines


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def _bullets(lines: list[str]) -> list[str]:
    return [f"- {line}" for line in lines]


def analysis_markdown(a, time=None) -> str:
    out = [f"**{analysis_title(a)}**", "",
           "| site | variant | heads | FLOPs formula | at N | share |",
           "|---|---|---:|---|---:|---:|"]
    for row in site_rows(a):
        kind, heads, formula, value, share = site_cells(a, row)
        label = row.label + (f" ×{row.count}" if row.count > 1 else "")
        out.append(f"| `{label}` | {kind} | {heads} | `{formula}` | {value} | {share} |")
    out.append("")
    out.extend(_bullets(analysis_lines(a) + time_lines(time)))
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


def fits_markdown(answer) -> str:
    """`attncost fits`: the verdict in bold, what is at the peak as a table,
    what would fit and the time on the GPU as bullets."""
    verdict, *reach = fits_verdict(answer)
    out = [f"**{verdict}**", ""] + _bullets(reach)
    entries = peak_entries(answer.breakdown)
    if entries:
        out += ["", "| at the peak | share |", "|---|---:|"]
        out += [f"| {_cell(breakdown_sentence(e).rsplit(': ', 1)[0])} | {e.share:.0%} |"
                for e in entries]
    what_if = what_if_lines(answer.what_if)
    if what_if:
        out += ["", "**what if**", ""] + _bullets(what_if)
    time = time_lines(answer.time)
    if time:
        out += [""] + _bullets(time)
    return "\n".join(out) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def gpus_markdown(gpus: dict) -> str:
    """`attncost specs` as a Markdown table."""
    from ..units import PEAK_FLOPS_DTYPES

    header = ["GPU", "memory (GiB)", "bandwidth (TB/s)"] + \
        [f"{k} (TFLOP/s)" for k in PEAK_FLOPS_DTYPES] + ["datasheet"]
    rows = [[g.name, f"{g.memory_bytes / (1 << 30):g}", f"{g.memory_bandwidth / 1e12:.3g}"]
            + [f"{g.peak_flops[k] / 1e12:g}" if k in g.peak_flops else "-"
               for k in PEAK_FLOPS_DTYPES] + [g.datasheet] for g in gpus.values()]
    return "\n".join(_table(header, rows)) + "\n"
