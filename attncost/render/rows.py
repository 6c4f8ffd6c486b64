"""The rows of attncost's tables, shared by the terminal and Markdown."""
from __future__ import annotations

from ..paths import any_index, range_label
from ..questions.baselines import OUTSIDE
from ..units import human_bytes, human_flops, human_tokens
from .sentences import (COUNTER_NAMES, expr_text, forward_flops, heads_text, missed_text,
                        site_kind)


class SiteRow:
    """Sites that differ only by their layer index, shown once."""

    def __init__(self, site, value: int):
        self.site, self.count, self.flops_value = site, 1, value
        self.first = self.label = site.name
        self.key = (any_index(site.name), site.variant, site.implementation, site.causal,
                    site.heads, site.kv_heads, site.head_dim, site.window, str(site.flops))


def site_rows(analysis) -> list[SiteRow]:
    rows: list[SiteRow] = []
    for s in analysis.sites:
        row = SiteRow(s, analysis.at(s.flops))
        if rows and rows[-1].key == row.key:
            rows[-1].count += 1
            rows[-1].label = range_label(rows[-1].first, s.name)
            continue
        rows.append(row)
    return rows


def site_cells(analysis, row: SiteRow) -> list[str]:
    """variant, heads, formula, value at N and share of the model's (forward's) FLOPs."""
    total = analysis.at(forward_flops(analysis)) or 1
    s = row.site
    return [site_kind(s), heads_text(s), expr_text(s.flops),
            human_flops(row.flops_value * row.count), f"{row.flops_value * row.count / total:.1%}"]


def choice_rows(c) -> tuple[list[str], list[list[str]]]:
    header = ["choice", "FLOPs", "attention", "share", "peak memory"]
    if c.gpu:
        header.append(f"max N ({c.gpu})")
    rows = []
    for ch in c.choices:
        row = [ch.label, human_flops(ch.flops), human_flops(ch.attention_flops),
               f"{ch.attention_flops / ch.flops:.1%}" if ch.flops else "-",
               human_bytes(ch.peak_memory_bytes)]
        if c.gpu:
            row.append(human_tokens(ch.max_seq_len) if ch.max_seq_len else "none")
        rows.append(row)
    return header, rows


def _collapsed_layer_rows(b) -> list[tuple[str, object]]:
    """Consecutive layers whose counts are all equal, shown once ('layers.{0..21} ×22')."""
    out: list[tuple[list[str], object, tuple]] = []
    for row in b.layers:
        key = (row.parameters, row.flops,
               {k: [missed_text(m) for m in v] for k, v in row.missed.items()})
        if out and row.layer != OUTSIDE and out[-1][1].layer != OUTSIDE and out[-1][2] == key:
            out[-1][0].append(row.layer)
            continue
        out.append(([row.layer], row, key))
    return [(_layers_label(names), row) for names, row, _ in out]


def _layers_label(names: list[str]) -> str:
    if len(names) == 1:
        return names[0]
    head, _, first = names[0].rpartition(".")
    last = names[-1].rpartition(".")[2]
    return f"{head + '.' if head else ''}{{{first}..{last}}} ×{len(names)}"


def baseline_rows(b) -> tuple[list[str], list[list[str]], list[str]]:
    """The per-layer table, and a line per layer on what the counters count as 0."""
    header = ["layer", "params"] + [COUNTER_NAMES[c] for c in b.counters]
    rows, missed_lines = [], []
    for label, row in _collapsed_layer_rows(b):
        rows.append([label, f"{row.parameters:,}"]
                    + [human_flops(row.flops[c]) for c in b.counters])
        where = label.rsplit(" ×", 1)[0] + (", each" if " ×" in label else "")
        for counter, ops in row.missed.items():
            missed_lines.append(f"{where}: {COUNTER_NAMES[counter].split(' ')[0]} counts 0 for "
                                + ", ".join(missed_text(m) for m in ops))
    rows.append(["total", f"{sum(r.parameters for r in b.layers):,}"]
                + [human_flops(b.totals[c]) for c in b.counters])
    return header, rows, missed_lines
