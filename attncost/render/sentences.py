"""Every sentence attncost prints, built from the analysis' data.

Tables, Markdown and JSON notes all take their words from here, so one
fact is said one way everywhere.
"""
from __future__ import annotations

import sympy

from ..expr import B, N, degree, leading_term, shape_text, value_at
from ..units import human_bytes, human_flops, human_rate, human_seconds, human_tokens
from .console import clean

#: A share of the peak below this is not worth a sentence ("0% of peak").
MIN_SHARE = 0.01

# ------------------------------------------------------------- sites


def expr_text(expr: sympy.Expr) -> str:
    """8192*B*N**2 -> 8192·B·N^2."""
    return str(sympy.expand(expr)).replace("**", "^").replace("*", "·")


def site_kind(site) -> str:
    """'dense causal (sdpa)', 'local w=128 (unfold)', 'sparse content-based (gather)'."""
    parts = [site.variant]
    if site.content_based:
        parts.append("content-based")
    if site.causal:
        parts.append("causal")
    if site.window:
        parts.append(f"w={site.window}")
    return f"{' '.join(parts)} ({site.implementation})"


def heads_text(site) -> str:
    """'32×64 kv4': heads × head dim, and the KV heads when fewer (GQA)."""
    text = f"{site.heads}×{site.head_dim}"
    if site.kv_heads != site.heads:
        text += f" kv{site.kv_heads}"
    return text


def waste_sentence(site) -> str | None:
    """Plain words when the code computes far more than its pattern needs."""
    factor = site.waste_factor
    if factor is None:
        return None
    if site.implementation in ("unfold", "blocked", "gather", "chunked", "block-sparse") or \
            site.content_based:
        # scores in windows or blocks, or only between the rows picked
        return (f"computes {factor:.1f}× the (query, key) pairs its pattern lets through: the "
                "masked scores inside each window or block are computed too")
    if site.variant == "sparse":
        return (f"{site.implementation} sparse attention computes all N×N scores: {factor:.1f}× "
                "what its pattern needs; a block-sparse kernel would skip them")
    if site.variant == "local":
        return (f"the sliding window is applied as a mask over all N×N scores: {factor:.1f}× what "
                "the window needs; a sliding-window kernel (FlexAttention, flash-attn "
                "window_size) would skip them")
    return f"computes {factor:.1f}× the attention its mask lets through"


def site_notes(site) -> list[str]:
    """What could not be read about a site, then what it wastes."""
    waste = waste_sentence(site)
    return [clean(n) for n in site.notes] + ([waste] if waste else [])


_ROUNDING = (sympy.floor, sympy.ceiling, sympy.Mod)


def _smooth(expr: sympy.Expr) -> sympy.Expr:
    """floor(x) and ceiling(x) as x, Mod(x, m) as 0: what differs from the
    formula by a bounded amount per term, so the leading term is the same."""
    expr = expr.replace(sympy.floor, lambda x: x).replace(sympy.ceiling, lambda x: x)
    return sympy.expand(expr.replace(sympy.Mod, lambda *args: sympy.Integer(0)))


def leading_text(expr: sympy.Expr) -> str:
    """The leading term in N, readable: '8192·B·N^2'.  For a formula with
    floor or Mod (N rounded to windows), the term it grows like at large N,
    marked '≈' (the JSON keeps the exact form)."""
    lead = leading_term(expr, N)
    if not lead.has(*_ROUNDING):
        return expr_text(lead)
    approx = leading_term(_smooth(expr), N)
    n = 1 << 30
    exact = value_at(expr, n, 1)
    guess = value_at(approx, n, 1) if approx.free_symbols <= {N, B} else 0
    if guess and not approx.has(*_ROUNDING) and abs(exact - guess) <= 0.01 * abs(exact):
        return f"≈ {expr_text(approx)}"
    return f"≈ N^{degree(expr, N)} (measured growth)"


# ---------------------------------------------------------- analysis


def analysis_title(a) -> str:
    impl = f", {a.attn_implementation}" if a.attn_implementation else ""
    return (f"{a.model}: N={human_tokens(a.seq_len)}, B={a.batch}, {a.dtype}, "
            f"device {a.device}{impl}")


def breakdown_sentence(e) -> str:
    """'fp32 softmax of B×4×N×N in model.layers.0: 64% of peak'."""
    where = f" in {e.module_path}" if e.module_path else ""
    of = f" of {e.shape}" if e.shape else ""
    dtype = f"{e.dtype} " if e.dtype else ""
    times = f" (×{e.count})" if e.count > 1 else ""
    return f"{dtype}{e.name}{of}{where}{times}: {e.share:.0%} of peak"


def forward_flops(a):
    """What attention's share is of: the forward's FLOPs (a training step's
    sites are those of its forward)."""
    return a.forward_flops if getattr(a, "mode", "infer") == "train" else a.flops


def _flop_lines(a) -> list[str]:
    total = a.at(a.flops)
    attn = a.at(a.attention_flops)
    lines = [f"total FLOPs: {human_flops(total)}  = {expr_text(a.flops)}"]
    whole = "of the model's FLOPs"
    if getattr(a, "mode", "infer") == "train":
        forward, backward = a.at(a.forward_flops), a.at(a.backward_flops)
        lines.append(f"a training step: forward {human_flops(forward)} + backward "
                     f"{human_flops(backward)}")
        total, whole = forward, "of the forward's FLOPs"
    if total:
        lines.append(f"attention: {human_flops(attn)} ({attn / total:.1%} {whole}), "
                     f"leading term {leading_text(a.attention_flops)}")
    useful = a.at(a.useful_attention_flops)
    if attn and useful < attn:
        masked = any(s.mask not in (None, "full") for s in a.sites)
        what = "that the masks let through" if masked else "its variants' formulas need"
        lines.append(f"attention {what}: {human_flops(useful)} "
                     f"({useful / attn:.1%} of the attention computed)")
    return lines


def _memory_lines(a) -> list[str]:
    lines = [f"peak memory {human_bytes(a.at(a.peak_memory_bytes))} "
             f"(weights {human_bytes(a.weight_bytes)})"]
    split = getattr(a, "parallel", None)
    if split is not None:
        p = split.plan
        lines = [f"peak memory per GPU {human_bytes(split.total)} on the busiest of "
                 f"{p.world_size} (fsdp {p.fsdp} × tp {p.tp} × cp {p.cp}); parameters "
                 f"{human_bytes(split.parameters)} of {human_bytes(a.weight_bytes)}",
                 f"sent per GPU per step: {human_bytes(split.comm_bytes_per_step)}"]
    largest = next((e for e in a.memory.breakdown(a.seq_len, a.batch, top=1)
                    if e.name != "weights and buffers"), None)
    if largest is not None and largest.share >= MIN_SHARE:
        lines.append(f"largest tensor at the peak: {breakdown_sentence(largest)}")
    if a.valid_for():
        lines.append(f"formulas valid for {a.valid_for()} ({a.range_reason()})")
    lines.extend(f"memory: {clean(note)}" for note in a.memory.notes)
    return lines


def _hidden_quadratic_line(a) -> list[str]:
    hidden = a.hidden_quadratics()
    if not hidden:
        return []
    biggest = max(hidden, key=lambda q: a.at(q.bytes))
    shape = shape_text(biggest.shape)
    # Not their sum: they are seldom alive at the same time.
    return [f"hidden quadratic: {len(hidden)} tensor(s) of N² size although the attention "
            f"is sub-quadratic; the largest is a {biggest.dtype} {biggest.op} of {shape} in "
            f"{biggest.layer} ({human_bytes(a.at(biggest.bytes))})"]


def analysis_lines(a) -> list[str]:
    """The summary under the sites table."""
    lines = _flop_lines(a) + _memory_lines(a)
    lines += [f"note: {note}" for note in getattr(a, "notes", [])]
    if not a.sites:
        lines.append("no attention found in this model")
    lines += _hidden_quadratic_line(a)
    by_note: dict[str, list[str]] = {}
    for s in a.sites:
        for note in site_notes(s):
            by_note.setdefault(note, []).append(s.name)
    for note, names in by_note.items():
        where = names[0] if len(names) == 1 else f"{len(names)} sites ({names[0]}, ...)"
        lines.append(f"{where}: {note}")
    return lines

# -------------------------------------------------------------- fits


def fits_lines(answer) -> list[str]:
    """`attncost fits` in words: the verdict, the reach, what is at the peak,
    what might fit, how long prefill and decode take on the GPU."""
    lines = fits_verdict(answer) + ["at the peak:"]
    lines += [f"  {breakdown_sentence(e)}" for e in peak_entries(answer.breakdown)]
    what_if = what_if_lines(answer.what_if)
    return lines + (["what if:"] + [f"  {w}" for w in what_if] if what_if else []) \
        + time_lines(answer.time)


def fits_verdict(answer) -> list[str]:
    """Does it fit, with what headroom; the largest N that does."""
    result, spec = answer.result, answer.gpu
    held = "its CUDA context" if spec and spec.cuda_context_bytes is not None else "the reserve"
    where = f"{spec.name} ({human_bytes(spec.memory_bytes)} less {held})" if spec else "the budget"
    verdict = "fits" if result.fits else "does not fit"
    lines = [f"N={human_tokens(result.seq_len)}, B={result.batch} {verdict} in {where}: "
             f"peak {human_bytes(result.peak_memory_bytes)} of {human_bytes(result.budget_bytes)}, "
             f"headroom {'-' if result.headroom_bytes < 0 else ''}"
             f"{human_bytes(abs(result.headroom_bytes))}"]
    if result.max_seq_len is None:
        lines.append(f"no length fits at B={result.batch}: not even N={answer.lowest_seq_len}")
    else:
        bound = "at least " if getattr(result, "max_seq_len_lower_bound", False) else ""
        lines.append(f"largest N that fits at B={result.batch}: {bound}{result.max_seq_len:,}")
    batch_free = any(w.startswith("--max-batch:") for w in getattr(answer, "warnings", []))
    if getattr(answer, "asked_max_batch", False) and not batch_free:
        at = f"N={human_tokens(result.seq_len)}"
        lines.append(f"largest batch that fits at {at}: {result.max_batch:,}" if result.max_batch
                     else f"no batch fits at {at}")
    return lines


def peak_entries(breakdown) -> list:
    """What is worth naming at the peak: entries of 1% of it or more."""
    return [e for e in breakdown if e.share >= MIN_SHARE]


def what_if_lines(alternatives) -> list[str]:
    """One line per change that would help."""
    lines = []
    for w in alternatives:
        reach = f"up to {w.result.max_seq_len:,} tokens fit" if w.result.max_seq_len else "nothing fits"
        verdict = "fits" if w.result.fits else "does not fit"
        lines.append(f"{w.change}: peak {human_bytes(w.result.peak_memory_bytes)}, {verdict}; {reach}")
    return lines


def time_lines(t) -> list[str]:
    """Prefill and decode time on a GPU (a latency.TimeEstimate), then its notes."""
    if t is None:
        return []
    how = "measured rates" if t.calibration == "measured" else \
        "uncalibrated: datasheet peaks, a lower bound"
    attention = sum(s.seconds for s in t.sites)
    share = f", attention {human_seconds(attention)} of it" if t.sites else ""
    return [f"time on {t.gpu} ({how}): prefill {human_seconds(t.prefill_seconds)} at "
            f"N={human_tokens(t.seq_len)}, B={t.batch} "
            f"({human_rate(t.prefill_tokens_per_second, 'tokens/s')}){share}; decode "
            f"{human_seconds(t.decode_seconds_per_token)} per token at context "
            f"{human_tokens(t.seq_len)} ({human_rate(t.decode_tokens_per_second, 'tokens/s')})"] \
        + [f"time: {note}" for note in t.notes]

# ----------------------------------------------------------- compare

#: What each counter is called in a table.
COUNTER_NAMES = {"attncost": "attncost", "fvcore": "fvcore ×2", "flopcounter": "FlopCounterMode"}
#: Readable names of ops a counter may count as 0.
OP_NAMES = {
    "scaled_dot_product_attention": "fused SDPA",
    "_scaled_dot_product_flash_attention_for_cpu": "fused SDPA",
    "_scaled_dot_product_attention_math": "SDPA (math)",
    "_native_multi_head_attention": "nn.MultiheadAttention fast path",
    "_transformer_encoder_layer_fwd": "nn.TransformerEncoderLayer fast path",
}


def attention_summary(analysis) -> list[str]:
    """'dense causal (sdpa) ×22': sites that differ only by layer, once."""
    counts: dict[str, int] = {}
    for s in analysis.sites:
        counts[site_kind(s)] = counts.get(site_kind(s), 0) + 1
    return [f"{kind} ×{n}" if n > 1 else kind for kind, n in counts.items()]


def comparison_title(c) -> str:
    return (f"{c.model}: N={human_tokens(c.seq_len)}, B={c.batch}, device {c.device}"
            + (f", {c.gpu} ({human_bytes(c.budget_bytes)} for tensors)" if c.gpu else ""))


def comparison_site_lines(c) -> list[str]:
    """The attention sites of each choice (once, when all choices have the same)."""
    summaries = {ch.label: "; ".join(attention_summary(ch.analysis)) or "no attention found"
                 for ch in c.choices}
    if len(set(summaries.values())) == 1:
        return [f"attention sites: {next(iter(summaries.values()))}"]
    return [f"attention sites of {label}: {text}" for label, text in summaries.items()]


def missed_text(m) -> str:
    """'fused SDPA ×2 = 4.19 GFLOP'."""
    calls = f" ×{m.calls}" if m.calls > 1 else ""
    worth = f" = {human_flops(m.flops)}" if m.flops else ""
    return f"{OP_NAMES.get(m.op, m.op)}{calls}{worth}"


def baseline_notes(b) -> list[str]:
    """What the counters count differently, in words."""
    notes = []
    if b.fvcore_extra:
        notes.append("fvcore also counts work that is not matrix work (attncost and "
                     "FlopCounterMode do not): "
                     + ", ".join(f"{op} {human_flops(v)}" for op, v in b.fvcore_extra.items()))
    if "fvcore" in b.counters:
        notes.append("fvcore counts one FLOP per multiply-add; shown ×2")
    if any(row.missed for row in b.layers):
        notes.append("attncost counts a fused attention call 4·B·H·N_q·N_k·d, as FlopCounterMode "
                     "does on a GPU; on this CPU the counters run kernels they have no rule for")
    return notes

# ------------------------------------------------------------- sweep


def sweep_notes(data) -> list[str]:
    """Where a curve needed more than one trace, or none held."""
    notes = []
    for c in data.curves:
        if len(c.pieces) > 1:
            notes.append(f"{c.label}: the model branches on N; traced {len(c.pieces)} times, at "
                         + ", ".join(human_tokens(p.seq_len) for p in c.pieces))
        if c.clipped:
            notes.append(f"{c.label}: no trace holds for N in {human_tokens(c.clipped[0])}.."
                         f"{human_tokens(c.clipped[-1])}; those points are left out")
    return notes


def sweep_lines(data, path) -> list[str]:
    """What `attncost plot` says after writing the image."""
    lo, hi = data.seq_range
    lines = [f"wrote {path}: {len(data.curves)} curve(s), N = {human_tokens(lo)}..{human_tokens(hi)}"]
    for gpu in data.gpus:
        for label, n in gpu.max_seq_len.items():
            fits = f"up to N = {human_tokens(n)}" if n else "not even the shortest length"
            which = f" {label}" if len(data.curves) > 1 else ""
            lines.append(f"{gpu.name}:{which} fits {fits}")
    return lines + sweep_notes(data)
