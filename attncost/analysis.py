"""The analysis of one model: sites, totals and memory, as SymPy expressions.

This is the data every output is rendered from (table, JSON, YAML,
Markdown, plots).  ``analyze`` is the library's entry point; the CLI is a
thin layer over it.
"""
from __future__ import annotations

import functools
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping

import sympy
import torch

from .detect import AttentionSite, find_sites
from .errors import AttncostError, ModelError
from .expr import N, condition_text, conditions_text, degree, holds_at, length_conditions, \
    excluded_length, multiple_asked, on_multiples, padded_tidied, residues_allowed, value_at
from .loader import LoadedModel, load, with_quantization
from .loader.positions import beyond_limit_warning
from .memory import MemoryModel, peak_memory
from .memory.quantized import quantization
from .paths import layer_or_path
from .patterns import subquadratic
from .rules import DEVICES, flop_rules, node_flops
from .rules.ops import is_view, op_name
from .tracing import SymbolicTraceRaised, TracedModel, trace
from .tracing.unroll import UNROLL_LIMIT, UnrolledLoop, fixed_length
from .units import dtype_name


@dataclass
class QuadraticTensor:
    """An intermediate whose size grows as N² (a mask, a bias, a score matrix)."""

    node: str
    op: str
    layer: str
    shape: tuple
    dtype: str
    bytes: sympy.Expr
    in_site: bool  # part of an attention site's own computation


def quadratic_tensors(traced: TracedModel, sites: list[AttentionSite]) -> list[QuadraticTensor]:
    """Every allocated tensor whose bytes are of degree >= 2 in N."""
    site_nodes = {n for s in sites for n in s.nodes}
    out = []
    for node in traced.nodes:
        if node.op != "call_function" or is_view(node):
            continue
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            continue
        size = sum(traced.output_bytes(node), sympy.Integer(0))
        if degree(size, N) < 2:
            continue
        out.append(QuadraticTensor(
            node=node.name, op=op_name(node), layer=layer_or_path(traced.module_path(node)) or "<root>",
            shape=traced.shape(node), dtype=dtype_name(val.dtype), bytes=size,
            in_site=node.name in site_nodes))
    return out


@dataclass
class Analysis:
    """What the attention of one model costs, for every N the trace holds for."""

    model: str
    seq_len: int
    batch: int
    dtype: str
    device: str
    sites: list[AttentionSite]
    flops: sympy.Expr
    weight_bytes: int
    peak_memory_bytes: sympy.Expr
    n_range: tuple[int, int | None]
    memory: MemoryModel
    guards: list[str] = field(default_factory=list)
    source: str = "file"
    attn_implementation: str | None = None
    kv_cache: bool = False
    quadratic: list[QuadraticTensor] = field(default_factory=list)
    traced: TracedModel | None = field(default=None, repr=False)
    loaded: LoadedModel | None = field(default=None, repr=False)
    #: one-line warnings, e.g. a formula evaluated outside ``n_range``
    warnings: list[str] = field(default_factory=list)
    #: what loading the model decided (what N means for its inputs, defaults a config relies on)
    notes: list[str] = field(default_factory=list)
    #: "infer" (one forward without gradients) or "train" (one training step)
    mode: str = "infer"
    #: train mode: ``flops`` split into the forward's and the backward's
    forward_flops: sympy.Expr | None = None
    backward_flops: sympy.Expr | None = None
    #: the keyword arguments ``analyze`` was given, to analyse again at another N
    options: dict = field(default_factory=dict, repr=False)
    #: the busiest GPU of a --fsdp/--tp/--cp plan at N (a training.parallel.PerGpuMemory)
    parallel: object = None
    #: (N, B) -> the same model and options analysed there (``again_at``)
    elsewhere: dict = field(default_factory=dict, repr=False)
    #: what the trace's conditions on N ask, in words (``valid_for``)
    conditions_read: dict = field(default_factory=dict, repr=False)
    #: the batches the formulas hold for: a trace with B a plain number, that one
    batch_range: tuple[int, int | None] = (1, None)

    @property
    def attention_flops(self) -> sympy.Expr:
        return sympy.expand(sum((s.flops for s in self.sites), sympy.Integer(0)))

    @property
    def useful_attention_flops(self) -> sympy.Expr:
        return sympy.expand(sum((s.useful_flops for s in self.sites), sympy.Integer(0)))

    def at(self, expr: sympy.Expr, seq_len: int | None = None, batch: int | None = None) -> int:
        """Evaluate one of this analysis' expressions (default: the requested N, B).
        Where the trace does not hold (outside ``n_range``, or a condition on
        the length false: N not a multiple of the block it pads to), the
        analysis' own expressions (its FLOPs, peak, each site's costs) are
        answered by analysing the model again there; any other expression
        is what its formula says, warned about once and recorded in
        ``warnings``."""
        n = self.seq_len if seq_len is None else seq_len
        b = self.batch if batch is None else batch
        if not self.holds_at(n, b):
            there = self._own_value_elsewhere(expr, n, b)
            if there is not None:
                return there
            self._outside_range(n, b)
        return value_at(expr, n, b)

    def again_at(self, n: int, b: int | None = None) -> "Analysis":
        """The same model with the same options analysed at N=n (and B=b), once."""
        key = (n, self.batch if b is None else b)
        if key not in self.elsewhere:
            options = dict(self.options, progress=None)
            # from the file again where there is one: options such as LoRA
            # adapters change the loaded module, and must apply to a fresh one
            model = self.model if self.loaded is None or Path(self.model).exists() \
                else self.loaded
            self.elsewhere[key] = analyze(model, n, batch=key[1], **options)
        return self.elsewhere[key]

    def own_expressions(self) -> dict:
        """This analysis' own expressions by what they are: totals, and each
        site's costs by its name."""
        named = {"flops": self.flops, "peak_memory_bytes": self.peak_memory_bytes,
                 "attention_flops": self.attention_flops,
                 "useful_attention_flops": self.useful_attention_flops,
                 "forward_flops": self.forward_flops, "backward_flops": self.backward_flops}
        for s in self.sites:
            for name in ("flops", "useful_flops", "allocated_bytes", "backward_flops",
                         "flops_per_head"):
                named[(s.name, name)] = getattr(s, name)
        return {k: v for k, v in named.items() if v is not None}

    def _own_value_elsewhere(self, expr, n: int, b: int) -> int | None:
        """``expr``'s value at (n, b) where this trace does not hold, from an
        analysis made there, when ``expr`` is one of this analysis' own."""
        if not self.options:
            return None
        what = next((k for k, e in self.own_expressions().items() if e is expr), None)
        if what is None:
            what = next((k for k, e in self.own_expressions().items() if e == expr), None)
        if what is None:
            return None
        try:
            there = self.again_at(n, b)
        except AttncostError:
            return None
        twin = there.own_expressions().get(what)
        if twin is None or not there.holds_at(n, b):
            return None
        return value_at(twin, n, b)

    def holds_at(self, n: int, b: int | None = None) -> bool:
        """Whether the trace holds at N=n (and B=b): inside ``n_range`` and
        every condition the trace recorded on the length true there (a
        length padded to a multiple: ``Eq(Mod(N, 16), 0)``)."""
        lo, hi = self.n_range
        if n < lo or (hi is not None and n > hi):
            return False
        b = self.batch if b is None else b
        lowest, highest = self.batch_range
        if b < lowest or (highest is not None and b > highest):
            return False
        return not self.failing_guards(n, b)

    def failing_guards(self, n: int, b: int) -> list[str]:
        """The trace's conditions on N and B that are false at (n, b).  A
        batch of 1 is traced as B=2: a condition false at B=1 only (a size-1
        axis telling itself apart, with the same ops) asks nothing of B=1
        (one that fixes B holds the trace to its batch: ``batch_range``)."""
        out = []
        for guard in self.guards:
            try:
                if holds_at(guard, n, b) is False and \
                        not (b == 1 and holds_at(guard, n, 2) is True):
                    out.append(guard)
            except (TypeError, ValueError, sympy.SympifyError):
                continue
        return out

    def _outside_range(self, n: int, b: int) -> None:
        lo, hi = self.n_range
        failing = self.failing_guards(n, b)
        inside = lo <= n and (hi is None or n <= hi)
        where = (f"where the trace needs {condition_text(failing[0], max(lo, 1))}"
                 if inside and failing else
                 f"outside {lo:,}..{f'{hi:,}' if hi else 'inf'} where they hold")
        message = f"formulas evaluated at N={n:,}, {where} ({self.range_reason()})"
        if not any(w.startswith("formulas evaluated at N=") for w in self.warnings):
            self.warnings.append(message)
            warnings.warn(message, RuntimeWarning, stacklevel=3)

    def range_reason(self) -> str:
        """Why the formulas hold on ``n_range`` only, in words: a trace that
        fixed N as a number holds there alone; a fit from short traces holds
        where its notes say; otherwise the code branched on the length."""
        lo, hi = self.n_range
        if lo == hi:
            return "the model fixes the length as a number"
        if hasattr(self.memory, "lengths"):  # tracing.loops.FittedMemory
            return "fitted from short traces of a loop over the length; the notes say where"
        return "the model branches on the length"

    def hidden_quadratics(self) -> list[QuadraticTensor]:
        """N² tensors outside the attention computations themselves (masks,
        biases) in a model whose attention needs less than N² work."""
        return [q for q in self.quadratic if not q.in_site] if subquadratic(self.sites) else []

    def valid_for(self) -> str | None:
        """The range of N the formulas hold for, when a branch narrowed it,
        and the trace's other conditions on N (a length padded to a multiple)."""
        lo, hi = self.n_range
        if lo == hi:  # a trace at one length: its conditions hold there
            return f"N = {lo} only"
        conditions = self._length_conditions()
        if lo <= 2 and hi is None:
            text = None
        elif hi is None:
            text = f"N >= {lo}"
        else:
            text = f"{lo} <= N <= {hi}"
        # read on 256 lengths from the range's start, or around the traced
        # length where it is far from there (they may hold there alone)
        start = max(lo, 1, self.seq_len - 128)
        asked = conditions_text(conditions, start, truth=self._residues(conditions, start))
        if asked and (asked.startswith("N = ") and asked.endswith(" only") or asked.startswith(
                "N >= ") and (text is None or text.startswith("N >= "))):
            text = asked  # one length, or conditions that start where the range does
        elif asked and hi is not None and (m := re.match(r"N >= (\d+)", asked)) and \
                lo <= int(m.group(1)) <= hi:  # a range that starts later: said as one
            text = f"{m.group(1)} <= N <= {hi}" + asked[m.end():]
        elif asked and asked != text:  # a count of pieces fixed says the range itself
            text = "; ".join(([text] if text else []) + [asked])
        return text

    def _length_conditions(self) -> list[str]:
        """The trace's conditions on N other than its range (a residue, an equality)."""
        return length_conditions(self.guards)

    def _residues(self, conditions: list[str], start: int | None = None) -> list[bool] | None:
        """Where ``conditions`` hold from ``start`` (the range's start), read
        once (hundreds of conditions take seconds)."""
        start = max(self.n_range[0], 1) if start is None else start
        key = (tuple(conditions), start)
        if key not in self.conditions_read:
            self.conditions_read[key] = residues_allowed(conditions, start)
        return self.conditions_read[key]

    def multiple_of(self) -> int:
        """m when the trace holds only where N is a multiple of m, else 1."""
        conditions = self._length_conditions()
        if not conditions:
            return 1
        return multiple_asked(self._residues(conditions), max(self.n_range[0], 1))

    def to_dict(self) -> dict:
        """The JSON object of `attncost analyze` (docs/design.md)."""
        from .render.schema import analysis_dict

        return analysis_dict(self)


def _check_request(seq_len: int, batch: int, device: str) -> None:
    if seq_len <= 0:
        raise AttncostError(f"--seq-len must be a positive integer, not {seq_len}")
    if batch <= 0:
        raise AttncostError(f"--batch must be a positive integer, not {batch}")
    if device not in DEVICES:
        raise AttncostError(f"unknown device {device!r}: use one of {', '.join(DEVICES)}")


def analyze(model: str | Path | LoadedModel, seq_len: int, batch: int = 1,
            dtype: str | None = None, device: str = "cuda",
            attn_implementation: str | None = None, kv_cache: bool | None = None,
            progress: Callable[[str], None] | None = None,
            last_logits_only: bool = False, flop_rules_override: Mapping | None = None,
            allocation_rules: Mapping | None = None, weight_dtype: str | None = None,
            group_size: int | None = None, kv_cache_dtype: str | None = None,
            mode: str = "infer", optimizer: str = "adamw", mixed_precision: str | None = None,
            checkpointing: str = "none", trainable: str = "all",
            fsdp: int = 1, tp: int = 1, cp: int = 1) -> Analysis:
    """Trace ``model`` once and derive its attention cost as formulas in N and B.

    ``model`` is a path (a .py file, a transformers config.json or its
    folder) or an already loaded model.  Every expression of the result holds
    for all N in ``result.n_range``; ``result.at(expr, N, B)`` evaluates one.
    ``flop_rules_override`` ({op: rule}) and ``allocation_rules`` ({op: rule}
    for ``device``) replace registered rules for this analysis only.
    ``weight_dtype`` (int8, fp8_e4m3, int4, nf4), ``group_size`` and
    ``kv_cache_dtype`` (fp8, int8) count weights and KV cache quantized
    (memory/quantized.py says what each format holds).
    ``mode="train"`` models one training step (``optimizer``,
    ``mixed_precision``, ``checkpointing``, ``trainable``: see training/);
    ``fsdp``, ``tp``, ``cp`` split it over GPUs (memory is then per GPU).
    """
    options = {k: v for k, v in locals().items() if k not in ("model", "seq_len", "batch")}
    seq_len, batch = int(seq_len), int(batch)
    _check_request(seq_len, batch, device)
    plan = _parallel_plan(mode, fsdp, tp, cp)
    say = progress or (lambda msg: None)
    say("loading the model")
    loaded = _load(model, options)
    try:
        traced = trace(loaded, seq_len, batch, progress=progress)
    except UnrolledLoop as unrolled:
        if mode != "infer" or plan is not None:
            raise
        rules = flop_rules(flop_rules_override)
        here = functools.partial(_traced_at, loaded, seq_len, batch, options, rules, say)
        across = _across_a_branch_on(loaded, seq_len, batch, options, rules, say, here) \
            if unrolled.steps >= seq_len else None  # fewer: a loop over chunks
        if across is not None:
            _on_multiples(across)
            return across
        return _fitted_loop(loaded, seq_len, batch, device, options,
                            flop_rules(flop_rules_override), allocation_rules, progress,
                            unrolled.steps)
    except SymbolicTraceRaised as raised:
        if mode != "infer" or plan is not None or not _runs_at(loaded, seq_len):
            raise
        result = _fitted_loop(loaded, seq_len, batch, device, options,
                              flop_rules(flop_rules_override), allocation_rules, progress,
                              seq_len)
        why = str(raised).removeprefix("the model raised while being traced: ")
        why = why if len(why) <= 100 else why[:99] + "…"
        result.notes.insert(0, f"the model's code does not run with the length a symbol "
                               f"({why}): it was traced at fixed lengths")
        return result
    rules = flop_rules(flop_rules_override)
    result = _forward(loaded, traced, seq_len, batch, options, rules, say)
    fixed = fixed_length(traced.shape_env) is not None
    if mode == "infer" and plan is None and (fixed or traced.n_range == (seq_len, seq_len)):
        # held to this length: by a branch on it (a guard ``Eq(N, 64)``, or N
        # replaced by the number), checked a step away; by a loop, fitted
        pinned = result
        across = _across_a_branch_on(loaded, seq_len, batch, options, rules, say,
                                     lambda: pinned) \
            if traced.n_range == (seq_len, seq_len) else None
        if across is not None:
            result = across
        elif fixed:
            result = _fitted_instead(result, device, allocation_rules, progress)
    if mode == "train":
        from .training import TrainingOptions, with_training
        say("tracing forward and backward")
        result = with_training(result, TrainingOptions(optimizer, mixed_precision, checkpointing,
                                                       trainable), rules, allocation_rules, progress)
    if plan is not None:
        _split(result, plan)
    _on_multiples(result)
    return result


def _on_multiples(a: Analysis) -> None:
    """Where the trace holds for multiples of m only (a length padded to
    blocks), its formulas said for those lengths: N//8 as N/8, N//(N//8)
    as 8 (checked at several multiples; elsewhere ``at`` analyses again);
    and a length padded to blocks at every N said as ceiling(N/m)."""
    m = a.multiple_of()
    if m > 1:
        _rewrite(a, lambda e: on_multiples(e, m))
    _rewrite(a, padded_tidied)


def _rewrite(a: Analysis, rewritten: Callable[[sympy.Expr], sympy.Expr]) -> None:
    """Every formula of ``a`` (totals, and each site's) through ``rewritten``,
    each distinct formula once (the layers of a stack share theirs)."""
    rewritten = functools.lru_cache(maxsize=None)(rewritten)
    a.flops = rewritten(a.flops)
    a.peak_memory_bytes = rewritten(a.peak_memory_bytes)
    for name in ("forward_flops", "backward_flops"):
        if getattr(a, name) is not None:
            setattr(a, name, rewritten(getattr(a, name)))
    for s in a.sites:
        for name in ("flops", "useful_flops", "allocated_bytes", "backward_flops", "query_len",
                     "key_len"):
            if getattr(s, name, None) is not None:
                setattr(s, name, rewritten(getattr(s, name)))


def _forward(loaded: LoadedModel, traced: TracedModel, seq_len: int, batch: int, options: dict,
             rules, say) -> Analysis:
    """The forward's sites, FLOPs and memory from its trace."""
    lo, hi = traced.n_range
    if seq_len < lo or (hi is not None and seq_len > hi):
        raise ModelError(f"the model's own code constrains the length: N={seq_len} is outside "
                         f"{lo}..{hi or 'inf'}")
    say("finding attention sites")
    sites = find_sites(traced, loaded, seq_len, flop_rules=rules)
    say("deriving formulas")
    flops = sympy.expand(sum((node_flops(traced, node, rules) for node in traced.nodes),
                             sympy.Integer(0)))
    say("following tensor lifetimes for the peak memory")
    device = options["device"]
    memory = peak_memory(traced, loaded, device=device,
                         allocation_rules=options["allocation_rules"])
    for site in sites:
        site.allocated_bytes = sympy.expand(memory.site_allocated_bytes(site) * site.head_share)
    beyond = beyond_limit_warning(loaded.config, seq_len)
    return Analysis(
        model=str(loaded.path), seq_len=seq_len, batch=batch, dtype=dtype_name(loaded.dtype),
        device=device, sites=sites, flops=flops, weight_bytes=int(memory.weight_bytes),
        peak_memory_bytes=memory.peak_bytes, n_range=traced.n_range, memory=memory,
        guards=traced.guards, source=loaded.source, attn_implementation=loaded.attn_implementation,
        kv_cache=loaded.kv_cache, quadratic=quadratic_tensors(traced, sites),
        traced=traced, loaded=loaded, notes=list(getattr(loaded, "notes", [])), options=options,
        warnings=[beyond] if beyond else [], batch_range=traced.batch_range)


def _fitted_instead(traced: Analysis, device: str, allocation_rules, progress) -> Analysis:
    """A trace that fixed N as a number at a short length (a loop over the
    length unrolled there) holds at that N only; the fit from short traces,
    where one holds, holds for every N past its lengths, so it is preferred,
    and the trace stands where none does."""
    rules = flop_rules(traced.options["flop_rules_override"])
    try:
        return _fitted_loop(traced.loaded, traced.seq_len, traced.batch, device, traced.options,
                            rules, allocation_rules, progress, traced.seq_len,
                            here=lambda why: traced)
    except AttncostError:
        return traced


def _across_a_branch_on(loaded: LoadedModel, seq_len: int, batch: int, options: dict, rules,
                        say, here: Callable[[], Analysis | None]) -> Analysis | None:
    """A trace that fixed N at the requested length may have met a branch
    on it (CLIP's ``num_patches == num_positions``: N is the config's own
    grid of patches), not a loop: the model is traced a step away, and
    where that trace holds at every length but this one and its formulas
    give, here, the costs of the model traced here (``here()``), they hold
    here too and are the answer.  None where they do not."""
    step = max(seq_len, UNROLL_LIMIT) + 1  # where a loop over N stops the trace at once
    for other_n in (step, 2 * step):
        try:
            traced = trace(loaded, other_n, batch, unroll_limit=0)
        except UnrolledLoop:
            return None  # it fixes the length, or a count made from it, there too: a loop
        except ModelError:
            continue
        if fixed_length(traced.shape_env) is not None:
            return None
        if not _holds_but_at(traced, seq_len):
            return None  # another count of chunks, not a branch at one length
        # said at the length asked: the trace holds there but for the branch
        other = _forward(loaded, traced, seq_len, batch, options, rules, say)
        pinned = here()
        if pinned is None or not _same_costs_at(other, pinned):
            return None
        other.guards = [g for g in other.guards if excluded_length(g) != seq_len]
        other.notes.append(f"at N={seq_len:,} the model takes another branch (its code compares "
                           f"the length with {seq_len:,}), at the same cost")
        return other
    return None


def _holds_but_at(traced: TracedModel, n: int) -> bool:
    """Does the trace hold at N=n but for conditions that rule out n alone?"""
    lo, hi = traced.n_range
    if n < lo or (hi is not None and n > hi):
        return False
    failing = [g for g in traced.guards if holds_at(g, n, traced.batch_hint) is False]
    return all(excluded_length(g) == n for g in failing)


def _same_costs_at(other: Analysis, pinned: Analysis) -> bool:
    """The same sites, FLOPs and peak memory at ``pinned``'s length."""
    n, b = pinned.seq_len, pinned.batch
    if [(s.name, s.variant, s.causal) for s in other.sites] != \
            [(s.name, s.variant, s.causal) for s in pinned.sites]:
        return False
    pairs = [(other.flops, pinned.flops), (other.peak_memory_bytes, pinned.peak_memory_bytes)]
    pairs += [(x.flops, y.flops) for x, y in zip(other.sites, pinned.sites)]
    pairs += [(x.useful_flops, y.useful_flops) for x, y in zip(other.sites, pinned.sites)]
    try:
        return all(value_at(x, n, b) == value_at(y, n, b) for x, y in pairs)
    except (TypeError, ValueError, ZeroDivisionError):
        return False


def _runs_at(loaded: LoadedModel, seq_len: int) -> bool:
    """Does the model run traced at this length as a number?"""
    from .tracing.loops import TraceRaised, TraceTooLong, concrete_trace

    try:
        concrete_trace(loaded, seq_len, 1, max_calls=FIXED_LENGTH_CALLS)
    except (TraceRaised, TraceTooLong):
        return False
    return True


def _fitted_loop(loaded: LoadedModel, seq_len: int, batch: int, device: str, options: dict,
                 rules, allocation_rules, progress, steps: int, here=None) -> Analysis:
    """A model that loops over the sequence (``steps`` times at ``seq_len``),
    costed from traces at small lengths and fitted in N and B
    (tracing/loops.py); the notes say where.  Where no fit holds, ``here(why)``
    (default: a trace at ``seq_len`` alone, ``_traced_here``)."""
    from .tracing.loops import FitFailed, TraceRaised, concrete_trace, fitted_loop

    here = here or functools.partial(_traced_here, loaded, seq_len, batch, options, rules,
                                     progress)
    fit_args = (loaded, seq_len, device, rules, allocation_rules, progress)
    chunks = functools.lru_cache(maxsize=None)(lambda: _fitted_by_chunks(*fit_args, steps=steps))
    # fewer steps than tokens: a loop over chunks, whose length is about N/steps
    fitted = chunks() if steps < seq_len else None
    traced = None
    multiple = 1
    if fitted is None:
        try:
            fitted, multiple = _fitted_where_it_runs(loaded, seq_len, device, rules,
                                                     allocation_rules, progress)
        except TraceRaised as exc:  # it does not run at the short lengths a fit needs
            return here(exc)
        except FitFailed as exc:  # its costs step between them: a loop over short chunks?
            fitted = chunks()
            if fitted is None:
                return here(exc)
        else:
            fitted, traced = _fitted_past_one_chunk(fitted, loaded, seq_len, rules, chunks)
            if traced is None and fitted.lengths.chunk is None:
                fitted = _bounded_by_one_pass(fitted, loaded, seq_len, progress)
    if traced is not None:  # the fit does not hold here: this length alone, traced
        if traced.batch_range != (batch, batch):  # checked at B=1
            traced = concrete_trace(loaded, seq_len, batch, max_calls=FIXED_LENGTH_CALLS)
        result = _forward(loaded, traced, seq_len, batch, options, rules,
                          progress or (lambda msg: None))
        result.notes.append(f"the model fixes the length as a number: the cost fitted from "
                            f"short traces does not hold at N={seq_len:,}, so it was traced there "
                            f"and its formulas hold at that N only (and B={batch})")
        return result
    beyond = beyond_limit_warning(loaded.config, seq_len)
    notes = list(getattr(loaded, "notes", [])) + fitted.notes
    if multiple > 1:
        notes.append(f"the model runs only where N is a multiple of {multiple} (it raised at "
                     f"shorter lengths): it was fitted at such lengths, and its formulas hold "
                     f"there")
    return Analysis(
        model=str(loaded.path), seq_len=seq_len, batch=batch, dtype=dtype_name(loaded.dtype),
        device=device, sites=fitted.sites, flops=fitted.flops, weight_bytes=fitted.weight_bytes,
        peak_memory_bytes=fitted.peak_bytes, n_range=fitted.memory.n_range, memory=fitted.memory,
        source=loaded.source, attn_implementation=loaded.attn_implementation,
        kv_cache=loaded.kv_cache, loaded=loaded, options=options, notes=notes,
        guards=[f"Eq(Mod(N, {multiple}), 0)"] if multiple > 1 else [],
        warnings=[beyond] if beyond else [])


#: Largest bucket a model that runs at multiples of it only is fitted for.
MAX_MULTIPLE = 64


def _fitted_where_it_runs(loaded: LoadedModel, seq_len: int, device: str, rules,
                          allocation_rules, progress):
    """(the fit from short traces, 1); where the model raises at those
    lengths, the fit at multiples of the smallest m it runs at (a bucket
    it asserts the length divides into: Reformer's LSH), m dividing the
    length asked; the first error where none runs."""
    from .tracing.fit import multiples
    from .tracing.loops import NoLoop, TraceRaised, fitted_loop

    try:
        return fitted_loop(loaded, device, rules, allocation_rules, progress), 1
    except TraceRaised as first:
        divisors = [2 ** k for k in range(1, MAX_MULTIPLE.bit_length())
                    if seq_len % 2 ** k == 0]
        # where it ran at 8..24 but followed no fit there, multiples of 2 and
        # 4 would say the same: from 8 (chunks of a fixed length pad to them)
        for m in [m for m in divisors if m >= 8] if isinstance(first, NoLoop) else divisors:
            try:
                return fitted_loop(loaded, device, rules, allocation_rules, progress,
                                   lengths=multiples(m)), m
            except TraceRaised:  # raised there, or its costs follow no fit there
                continue
        raise first


def _fitted_past_one_chunk(fitted, loaded: LoadedModel, seq_len: int, rules, by_chunks):
    """(the fit, None) where the fit through short lengths holds at
    ``seq_len``; where it does not because the model loops over chunks of a
    fixed length (the short lengths all inside one), the fit in N and the
    chunk count instead (``by_chunks()``); else (the fit, a trace at
    ``seq_len``)."""
    from .tracing.loops import FitDoesNotHold, check_at

    try:
        traced = check_at(fitted, loaded, seq_len, rules)
    except FitDoesNotHold as exc:
        traced, refused = None, exc
    else:
        if traced is None:
            return fitted, None
        refused = None
    chunked = by_chunks()
    if chunked is not None:
        return chunked, None
    if refused is not None:
        raise refused
    return fitted, traced


#: Longest stretch of the sequence (a chunk) a fit from short traces is
#: checked for: past it, the ops of a trace are not compared.
LONGEST_CHUNK = 4096


def _bounded_by_one_pass(fitted, loaded: LoadedModel, seq_len: int, progress):
    """A fit from short traces bounded where the model starts to run other
    ops: a loop over chunks longer than ``seq_len`` runs once at every
    length up to its chunk, so that fit says nothing past it."""
    from dataclasses import replace

    from .tracing.loops import same_ops_up_to

    if seq_len >= LONGEST_CHUNK:
        return fitted
    last = same_ops_up_to(loaded, seq_len, LONGEST_CHUNK, progress)
    if last is None:
        return fitted
    memory = replace(fitted.memory, n_range=(fitted.memory.n_range[0], last))
    note = (f"the model runs the same ops at every N up to {last:,} and others past it (one "
            f"pass of a loop over longer stretches, such as chunks of {last:,} tokens): these "
            f"formulas hold up to N={last:,}; a longer --seq-len is analysed past it")
    return replace(fitted, memory=memory, notes=fitted.notes + [note])


def _fitted_by_chunks(loaded: LoadedModel, seq_len: int, device: str, rules, allocation_rules,
                      progress, steps: int | None = None):
    """The costs of a model that loops over chunks of a fixed length, fitted
    in N and their count (tracing/fit.py), and checked at ``seq_len`` where
    a trace there is short enough; None for a model that does not, or whose
    costs that fit does not hold."""
    from .tracing.fit import FitFailed, chunked
    from .tracing.loops import FitDoesNotHold, TraceRaised, check_at, chunk_length, fitted_loop

    chunk = chunk_length(loaded, seq_len, progress, steps)
    if chunk is None:
        return None
    try:
        fitted = fitted_loop(loaded, device, rules, allocation_rules, progress,
                             lengths=chunked(chunk))
        return fitted if check_at(fitted, loaded, seq_len, rules) is None else None
    except (TraceRaised, FitFailed, FitDoesNotHold):
        return None


#: Most torch calls a trace at the requested length may make where a model
#: that fixes its length as a number cannot be fitted from short traces.
FIXED_LENGTH_CALLS = 200_000


def _traced_here(loaded: LoadedModel, seq_len: int, batch: int, options: dict, rules,
                 progress, why: Exception) -> Analysis:
    """A model that fixes its length as a number and does not run at the
    short lengths a fit is made from (a bucket size, a count of levels),
    runs as many ops at every length but with costs no polynomial fits (a
    tensor made from range(N)), or loops over chunks whose costs step
    between those lengths: traced at the requested length alone; its
    formulas hold at that N only."""
    result = _traced_at(loaded, seq_len, batch, options, rules, progress or (lambda msg: None))
    if result is None:
        raise ModelError(f"the model's cost cannot be fitted in N from short traces ({why}), "
                         f"and a trace at N={seq_len:,} is too long (a loop over the sequence); "
                         "try a shorter --seq-len")
    result.notes.append(f"the model fixes the length as a number and its cost cannot be fitted "
                        f"in N from short traces ({why}): it was traced at N={seq_len:,} and its "
                        f"formulas hold at that N only (and B={batch})")
    return result


def _traced_at(loaded: LoadedModel, seq_len: int, batch: int, options: dict, rules,
               say) -> Analysis | None:
    """The model traced with N = seq_len a number; None where that trace is
    too long (a loop over the sequence)."""
    from .tracing import say_fixed_values
    from .tracing.loops import TraceTooLong, concrete_trace

    say(f"tracing at N={seq_len:,} alone")
    try:
        traced = concrete_trace(loaded, seq_len, batch, max_calls=FIXED_LENGTH_CALLS)
    except TraceTooLong:
        return None
    say_fixed_values(traced, loaded)
    return _forward(loaded, traced, seq_len, batch, options, rules, say)


def _load(model: str | Path | LoadedModel, options: dict) -> LoadedModel:
    """The model as ``analyze``'s options ask: dtype, implementation, cache,
    logits, quantization; train mode's defaults (float32 weights, no cache)."""
    o = dict(options)
    if o["mode"] != "infer":
        from .training import training_load_options
        o["dtype"], o["kv_cache"] = training_load_options(model, o["mode"], o["dtype"],
                                                          o["kv_cache"], o["mixed_precision"])
    if isinstance(model, LoadedModel):
        loaded = with_quantization(model, quantization(o["weight_dtype"], o["group_size"],
                                                       o["kv_cache_dtype"]))
    else:
        loaded = load(model, **{k: o[k] for k in (
            "dtype", "attn_implementation", "kv_cache", "last_logits_only", "weight_dtype",
            "group_size", "kv_cache_dtype")})
    if loaded.kernel_device != o["device"]:
        loaded = replace(loaded, kernel_device=o["device"])
    return loaded


def _parallel_plan(mode: str, fsdp: int, tp: int, cp: int):
    """The plan of --fsdp/--tp/--cp, or None for one GPU."""
    if (fsdp, tp, cp) == (1, 1, 1):
        return None
    from .training.parallel import Plan

    plan = Plan(fsdp=fsdp, tp=tp, cp=cp)
    if mode != "train":
        raise AttncostError("--fsdp, --tp and --cp split a training step: add --mode train")
    return plan


def _split(analysis: Analysis, plan) -> None:
    """Memory figures of ``analysis`` per GPU under ``plan``."""
    from .training.sharded import sharded_memory

    memory = sharded_memory(analysis.memory, plan, analysis.loaded, analysis.seq_len,
                            analysis.batch)
    analysis.parallel = memory.per_gpu(analysis.seq_len, analysis.batch)
    analysis.memory = memory
    analysis.n_range = memory.n_range
    if memory.peak_bytes is None:
        raise AttncostError("the per-GPU peak under this plan has no formula that holds at every "
                            "N (run without --fsdp/--tp/--cp for the one-GPU formula)")
    analysis.peak_memory_bytes = memory.peak_bytes
    analysis.notes += memory.notes
