"""Render an Analysis: terminal table (rich), JSON, YAML, Markdown.

Display only: every number comes from the Analysis data model.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

import sympy
import yaml
from rich import box
from rich.console import Console
from rich.table import Table

from .analysis import Analysis
from .symbolic import leading_term
from .tracer import N

FORMATS = ("table", "json", "yaml", "markdown")


# ------------------------------------------------------------------ units

def human_flops(x: int | float) -> str:
    return _scaled(x, ["FLOP", "kFLOP", "MFLOP", "GFLOP", "TFLOP", "PFLOP", "EFLOP", "ZFLOP"], 1000)


def human_bytes(x: int | float) -> str:
    return _scaled(x, ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"], 1024)


def human_seconds(x: float) -> str:
    """0.00042 -> 420 µs, 0.15 -> 150 ms, 200.0 -> 200 s."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if x >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x * 1e9:.3g} ns"


def human_tokens(n: int) -> str:
    """4096 -> 4k, 131072 -> 128k, 1048576 -> 1M; other values with separators."""
    for unit, size in (("M", 1 << 20), ("k", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n:,}"


def _scaled(x, units, base) -> str:
    x = float(x)
    i = 0
    while abs(x) >= base and i < len(units) - 1:
        x /= base
        i += 1
    if i == 0:
        return f"{int(x)} {units[0]}"
    return f"{x:.3g} {units[i]}" if x < 100 else f"{x:.0f} {units[i]}"


# --------------------------------------------------------- row grouping

@dataclass
class SiteRow:
    """Sites that differ only by their layer index, shown once."""

    label: str
    count: int
    site: object
    flops_value: int
    first: str
    key: tuple


def site_rows(analysis: Analysis) -> list[SiteRow]:
    rows: list[SiteRow] = []
    for s in analysis.sites:
        key = (re.sub(r"(^|\.)\d+(?=\.|$)", r"\1*", s.name), s.variant, s.implementation, s.causal,
               s.heads, s.kv_heads, s.head_dim, s.window, str(s.flops))
        if rows and rows[-1].key == key:
            rows[-1].count += 1
            rows[-1].label = _range_label(rows[-1].first, s.name)
            continue
        rows.append(SiteRow(s.name, 1, s, analysis.at(s.flops), s.name, key))
    return rows


def _range_label(first: str, last: str) -> str:
    a, b = first.split("."), last.split(".")
    if len(a) == len(b):
        diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
        if len(diff) == 1 and a[diff[0]].isdigit():
            i = diff[0]
            return ".".join(a[:i] + [f"{{{a[i]}..{b[i]}}}"] + a[i + 1:])
    return f"{first} .. {last}"


def _variant_text(s) -> str:
    parts = [s.variant]
    if s.causal:
        parts.append("causal")
    if s.window:
        parts.append(f"w={s.window}")
    text = " ".join(parts)
    return f"{text} ({s.implementation})"


def _heads_text(s) -> str:
    text = f"{s.heads}×{s.head_dim}"
    if s.kv_heads != s.heads:
        text += f" kv{s.kv_heads}"
    return text


def _expr_text(expr: sympy.Expr) -> str:
    return str(sympy.expand(expr)).replace("**", "^").replace("*", "·")


# ------------------------------------------------------------- renderers

def render(analysis: Analysis, fmt: str, console: Console | None = None) -> str | None:
    """Render to a string (json, yaml, markdown) or print a table to ``console``."""
    if fmt == "json":
        return json.dumps(analysis.to_dict(), indent=2)
    if fmt == "yaml":
        return yaml.safe_dump(analysis.to_dict(), sort_keys=False)
    if fmt == "markdown":
        return markdown(analysis)
    console = console or Console()
    print_table(analysis, console)
    return None


def _title(a: Analysis) -> str:
    impl = f", {a.attn_implementation}" if a.attn_implementation else ""
    return (f"{a.model}: N={human_tokens(a.seq_len)}, B={a.batch}, {a.dtype}, "
            f"device {a.device}{impl}")


def _summary_lines(a: Analysis) -> list[str]:
    total = a.at(a.flops)
    attn = a.at(a.attention_flops)
    lines = [f"total FLOPs: {human_flops(total)}  = {_expr_text(a.flops)}"]
    if total:
        lines.append(f"attention: {human_flops(attn)} ({attn / total:.1%} of the model's FLOPs), "
                     f"leading term {_expr_text(leading_term(a.flops, N))}")
    useful = a.at(a.useful_attention_flops)
    if attn and useful < attn:
        lines.append(f"attention that the masks let through: {human_flops(useful)} "
                     f"({useful / attn:.1%} of the attention computed)")
    mem = f"weights {human_bytes(a.weight_bytes)}"
    if a.peak_memory_bytes is not None:
        mem = f"peak memory {human_bytes(a.at(a.peak_memory_bytes))} ({mem})"
    largest = None
    if a.memory is not None:
        largest = next((e for e in a.memory.breakdown(a.seq_len, a.batch, top=1)
                        if e.name != "weights and buffers"), None)
    lines.append(mem)
    if a.memory is not None and largest is not None:
        lines.append(f"largest tensor at the peak: {largest}")
    if a.valid_for():
        lines.append(f"formulas valid for {a.valid_for()} (the model branches on the length)")
    if a.memory is not None:
        lines.extend(f"memory: {note}" for note in a.memory.notes)
    if not a.sites:
        lines.append("no attention found in this model")
    hidden = a.hidden_quadratics()
    if hidden:
        biggest = max(hidden, key=lambda q: a.at(q.bytes))
        total = sum(a.at(q.bytes) for q in hidden)
        shape = "×".join(str(x) for x in biggest.shape)
        lines.append(f"hidden quadratic: {len(hidden)} tensor(s) of N² size although the attention "
                     f"is sub-quadratic, {human_bytes(total)} in all; the largest is a "
                     f"{biggest.dtype} {biggest.op} of {shape} in {biggest.layer} "
                     f"({human_bytes(a.at(biggest.bytes))})")
    by_note: dict[str, list[str]] = {}
    for s in a.sites:
        for note in s.notes:
            by_note.setdefault(note, []).append(s.name)
    for note, names in by_note.items():
        where = names[0] if len(names) == 1 else f"{len(names)} sites ({names[0]}, ...)"
        lines.append(f"{where}: {note}")
    return lines


def print_table(a: Analysis, console: Console) -> None:
    table = Table(title=_title(a), box=box.SIMPLE_HEAD, title_justify="left",
                  show_footer=False, pad_edge=False, show_edge=False, collapse_padding=True)
    table.add_column("site", overflow="fold", max_width=40)
    table.add_column("×", justify="right")
    table.add_column("variant", overflow="fold", max_width=22)
    table.add_column("heads", justify="right")
    table.add_column("FLOPs formula", overflow="fold", max_width=24)
    table.add_column(f"at N={human_tokens(a.seq_len)}", justify="right")
    table.add_column("share", justify="right")
    total = a.at(a.flops) or 1
    for row in site_rows(a):
        s = row.site
        table.add_row(row.label, str(row.count), _variant_text(s), _heads_text(s), _expr_text(s.flops),
                      human_flops(row.flops_value * row.count),
                      f"{row.flops_value * row.count / total:.1%}")
    console.print(table)
    console.print()
    for line in _summary_lines(a):
        console.print(line, highlight=False, soft_wrap=False)


def markdown(a: Analysis) -> str:
    out = [f"**{_title(a)}**", "",
           "| site | variant | heads | FLOPs formula | at N | share |",
           "|---|---|---:|---|---:|---:|"]
    total = a.at(a.flops) or 1
    for row in site_rows(a):
        s = row.site
        label = row.label + (f" ×{row.count}" if row.count > 1 else "")
        out.append(f"| `{label}` | {_variant_text(s)} | {_heads_text(s)} | `{_expr_text(s.flops)}` "
                   f"| {human_flops(row.flops_value * row.count)} "
                   f"| {row.flops_value * row.count / total:.1%} |")
    out.append("")
    out.extend(f"- {line}" for line in _summary_lines(a))
    return "\n".join(out) + "\n"


def render_validation(result: dict, console: Console) -> None:
    """`attncost validate` as a table: correctness, scaling and memory per variant."""
    table = Table(title=f"attncost validate on {result.get('device', '?')}", box=box.SIMPLE_HEAD,
                  title_justify="left", pad_edge=False, collapse_padding=True)
    for col, justify in (("variant", "left"), ("max err", "right"),
                         ("N^k fit/spec", "right"), ("at N", "right"), ("time", "right"),
                         ("TFLOP/s", "right"), ("mem/spec", "right"), ("ok", "left")):
        table.add_column(col, justify=justify, no_wrap=True)
    for r in result.get("results", []):
        points = r.get("points") or []
        last = points[-1] if points else {}
        fit = r.get("fitted_exponent")
        exponent = f"{fit:.2f} / {r.get('formula_exponent')}" if fit is not None else \
            f"- / {r.get('formula_exponent')}"
        ratio = (last.get("peak_bytes") / last["predicted_bytes"]
                 if last.get("predicted_bytes") and last.get("peak_bytes") else None)
        table.add_row(
            r.get("variant", "?"),
            f"{r.get('max_abs_error', float('nan')):.1e}" + ("" if r.get("correct") else " WRONG"),
            exponent,
            human_tokens(last["seq_len"]) if last else "-",
            human_seconds(last["seconds"]) if last.get("seconds") else "-",
            f"{last['tflops']:.0f}" if last.get("tflops") else "-",
            f"{ratio:.3f}" if ratio else "-",
            "yes" if r.get("ok") else "no")
    console.print(table)
