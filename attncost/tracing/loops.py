"""A model that loops over the sequence, costed from traces at small lengths.

A Python loop over the positions (Mamba's slow path, RWKV-style code,
performer's causal prefix sums, fla's recurrent reference) fixes N while
tracing and records every step, so no one trace holds for every N
(tracing/unroll.py stops it).  But the loop runs the same body once per
token, so its cost is a polynomial in N: each trace at a small length,
with N and B plain numbers (cheap: no symbolic shapes), gives its exact
FLOPs, weights, peak memory and sites; a polynomial in N (and linear in B)
is fitted through them and must reproduce traces at lengths and batches
held out of the fit exactly, else the model is refused.  The notes say
where it was measured.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

import sympy
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.experimental.symbolic_shapes import ShapeEnv
from torch.utils._pytree import tree_flatten

from ..errors import ModelError, first_line
from ..expr import B, N, value_at
from ..loader import LoadedModel
from .fake import call_args, fake_parameters, module_state_kept
from .graph import TracedModel
from .fast_paths import fast_paths
from .patches import flex_uncompiled
from .unroll import quiet_shape_log

#: Lengths and batches the polynomials are fitted through.
FIT_LENGTHS = (8, 12, 16)
FIT_BATCHES = (1, 2)
#: (length, batch) traces held out of the fit, which it must reproduce exactly.
HELD_OUT = ((20, 1), (24, 3))
#: Where a loop's peak is another moment at the short lengths (the rest of
#: the model's peak overtaken by the loop's past them), it is fitted again
#: from these longer lengths, held out at LATE_HELD_OUT.
LATE_LENGTHS = (24, 32, 40)
LATE_HELD_OUT = ((48, 1), (56, 3))
#: Site fields fitted per sequence (times B), and fields fitted in N alone; the
#: others are read at the longest fitted length.  Sites are read at B=1: with
#: the batch a number too, a recogniser could not tell it from the heads.
SITE_PER_SEQUENCE = ("flops", "useful_flops", "allocated_bytes")
SITE_COUNTS = ("heads", "kv_heads", "query_len", "key_len")


class FitFailed(ModelError):
    """The traces at small lengths do not follow one polynomial in N and B;
    the message says why, as a clause ("its FLOPs ... follow no polynomial")."""


@dataclass
class Measured:
    """What one trace at a fixed length and batch says, as plain numbers."""

    seq_len: int
    batch: int
    numbers: dict[str, int]
    sites: list = field(default_factory=list)


class _OpBudget(torch.overrides.TorchFunctionMode):
    """Stops a trace after ``limit`` torch calls: a loop over a long sequence
    would record one step after another for minutes."""

    def __init__(self, limit: int | None):
        super().__init__()
        self.limit, self.calls = limit, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        if self.limit is not None and self.calls > self.limit:
            raise TraceTooLong(self.limit)
        return func(*args, **(kwargs or {}))


class TraceRaised(ModelError):
    """The model's own code raised in a trace at a fixed length."""


class NoLoop(TraceRaised):
    """The model takes N as a number but runs as many ops at every length
    (no loop over the sequence), and its costs at short lengths follow no
    polynomial: it is to be traced where asked."""


class TraceTooLong(ModelError):
    """A trace at a fixed length ran past its budget of torch calls."""

    def __init__(self, limit: int):
        super().__init__(f"a trace at this length makes more than {limit:,} torch calls")


def concrete_trace(loaded: LoadedModel, seq_len: int, batch: int,
                   max_calls: int | None = None) -> TracedModel:
    """The forward traced with every size a number (N = seq_len, B = batch);
    ``max_calls`` stops it (TraceTooLong) past that many torch calls."""
    from . import INFERENCE, _record_module_paths

    model = loaded.module
    mode = FakeTensorMode(allow_non_fake_inputs=True)  # plain tensor attributes: constants
    with FakeTensorMode(allow_non_fake_inputs=True):
        concrete = loaded.example_inputs(seq_len, batch)
    flat, spec = tree_flatten(concrete)
    with mode:
        flat = [torch.empty(t.shape, dtype=t.dtype, device=loaded.trace_device)
                if isinstance(t, torch.Tensor) else t for t in flat]
    params, kinds = fake_parameters(model, mode, loaded.trace_device)
    args, kwargs = call_args(spec.unflatten(flat))
    try:
        with torch.no_grad(), _record_module_paths(model), flex_uncompiled(), \
                module_state_kept(model), loaded.trace_context(), fast_paths(loaded.kernel_device), \
                warnings.catch_warnings(), quiet_shape_log(), _OpBudget(max_calls):
            warnings.simplefilter("ignore")
            gm = make_fx(INFERENCE.build(model, params), tracing_mode="fake",
                         _allow_non_fake_inputs=True)(params, args, kwargs)
    except ModelError:
        raise
    except Exception as exc:
        raise TraceRaised(f"the model raised while being traced at N={seq_len}: "
                         f"{type(exc).__name__}: {first_line(exc)}") from exc
    names = list(params)
    placeholder_kinds = {}
    for i, node in enumerate(n for n in gm.graph.nodes if n.op == "placeholder"):
        placeholder_kinds[node.name] = kinds[names[i]] if i < len(names) else "input"
        if i < len(names):
            node.meta["attncost_param"] = names[i]
    return TracedModel(gm, ShapeEnv(), {}, placeholder_kinds, n_range=(seq_len, seq_len),
                       seq_len_hint=seq_len, batch_hint=batch)


def measure(loaded: LoadedModel, seq_len: int, batch: int, device: str, rules,
            allocation_rules=None) -> Measured:
    """FLOPs, bytes and sites of one trace at a fixed length and batch."""
    from ..detect import find_sites
    from ..memory import peak_memory
    from ..rules import node_flops

    traced = concrete_trace(loaded, seq_len, batch)
    # Sites are read at B=1 only (fitted_sites).
    sites = find_sites(traced, loaded, seq_len, flop_rules=rules) if batch == 1 else []
    memory = peak_memory(traced, loaded, device=device, allocation_rules=allocation_rules)
    for site in sites:
        site.allocated_bytes = memory.site_allocated_bytes(site) * site.head_share
    flops = sum((node_flops(traced, node, rules) for node in traced.nodes), sympy.Integer(0))
    numbers = {"flops": flops, "peak": memory.at(seq_len, batch),
               "input": memory.input_bytes, "weights": memory.weight_bytes,
               "workspace": memory.workspace_bytes, "nodes": len(traced.graph_module.graph.nodes)}
    numbers.update(_scratch_apart(traced, loaded, device, allocation_rules, seq_len, batch))
    return Measured(seq_len, batch, {k: _number(v, seq_len, batch) for k, v in numbers.items()},
                    sites)


#: Added to a kernel's scratch to find the busiest moment while it runs.
_BEYOND = 1 << 50


def _scratch_apart(traced, loaded, device: str, rules, seq_len: int, batch: int) -> dict:
    """On a CPU, the peak without the flash kernel's scratch and the peak
    while a call holds it: its scratch does not grow with the batch while the
    tensors do, so the peak follows no one polynomial in N and B, but each
    of the two does (fitted apart, the peak is their Max)."""
    from ..memory import peak_memory
    from ..rules.cpu import FLASH_FOR_CPU, flash_scratch_rule

    if device != "cpu" or not any(getattr(n.target, "overloadpacket", None) is FLASH_FOR_CPU
                                  for n in traced.nodes):
        return {}
    apart = {}
    for key, extra in (("peak_tensors", None), ("peak_scratch", _BEYOND)):
        memory = peak_memory(traced, loaded, device=device,
                             allocation_rules={**(rules or {}),
                                               FLASH_FOR_CPU: flash_scratch_rule(extra)})
        apart[key] = memory.at(seq_len, batch) - (extra or 0)
    return apart


def _number(value, seq_len: int, batch: int) -> int:
    return value_at(sympy.sympify(value), seq_len, batch)


def fit(points: dict[tuple[int, int], int], held: dict[tuple[int, int], int],
        batches: tuple[int, ...] = FIT_BATCHES,
        lengths: tuple[int, ...] = FIT_LENGTHS) -> sympy.Expr | None:
    """The polynomial in N (degree below the number of fitted ``lengths``),
    and linear in B when two ``batches`` are fitted, through ``points``
    {(n, b): value}, or None when it misses a held-out value."""
    per_batch = {b: interpolate([(n, points[n, b]) for n in lengths]) for b in batches}
    expr = per_batch[batches[0]]
    if len(batches) == 2:
        b0, b1 = batches
        expr = sympy.expand(expr + (per_batch[b1] - expr) * (B - b0) / (b1 - b0))
    if any(value_at(expr, n, b) != v for (n, b), v in held.items()):
        return None
    return expr


def interpolate(points: list[tuple[int, int]]) -> sympy.Expr:
    """The polynomial in N through (n, value) points (a constant where they agree)."""
    if len({v for _, v in points}) == 1:
        return sympy.Integer(points[0][1])
    return sympy.expand(sympy.interpolate(points, N))


def _split(measured: Iterable[Measured],
           held_out=HELD_OUT) -> tuple[list[Measured], list[Measured]]:
    fitted, held = [], []
    for m in measured:
        (held if (m.seq_len, m.batch) in held_out else fitted).append(m)
    return fitted, held


def fit_number(measured: list[Measured], read: Callable[[Measured], int], what: str,
               batches: tuple[int, ...] = FIT_BATCHES,
               lengths: tuple[int, ...] = FIT_LENGTHS, held_out=HELD_OUT) -> sympy.Expr:
    """One number read off the traces at ``batches``, fitted through
    ``lengths`` and checked at ``held_out``; FitFailed names ``what``."""
    fitted, held = _split(measured, held_out)
    fitted = [m for m in fitted if m.batch in batches]
    if len(batches) == 1:  # a number per sequence: held out at that batch only
        held = [m for m in held if m.batch in batches]
    expr = fit({(m.seq_len, m.batch): read(m) for m in fitted},
               {(m.seq_len, m.batch): read(m) for m in held}, batches, lengths)
    if expr is None:
        raise FitFailed(f"no polynomial in N fits its {what} at N={_lengths_text()} and "
                        f"holds at {_held_text()}")
    return expr


def _lengths_text() -> str:
    return f"{FIT_LENGTHS[0]}..{FIT_LENGTHS[-1]}"


def _held_text() -> str:
    return ", ".join(f"N={n} (B={b})" for n, b in HELD_OUT)


def measured_note() -> str:
    """Where the fitted formulas were measured."""
    return (f"the model loops over the sequence: its formulas are fitted from traces at "
            f"N={_lengths_text()} (B={', '.join(map(str, FIT_BATCHES))}) and are exact at "
            f"{_held_text()}, lengths held out of the fit")


def fitted_sites(measured: list[Measured]) -> list:
    """The sites found at every length (at B=1), their numbers fitted."""
    single = [m for m in measured if m.batch == 1]
    common = set.intersection(*({s.name for s in m.sites} for m in single))
    fitted, _ = _split(single)
    last = max(fitted, key=lambda m: m.seq_len)
    out = []
    for site in last.sites:
        if site.name not in common:
            continue
        values = {f: _site_number(single, site.name, f) * B for f in SITE_PER_SEQUENCE}
        values.update({f: _site_number(single, site.name, f) for f in SITE_COUNTS})
        values["heads"], values["kv_heads"] = (_count_of(values[f]) for f in ("heads", "kv_heads"))
        out.append(replace(site, nodes=[], **values))
    return out


def _site_number(single: list[Measured], name: str, f: str) -> sympy.Expr:
    def read(m: Measured) -> int:
        site = next(s for s in m.sites if s.name == name)
        return _number(getattr(site, f) or 0, m.seq_len, 1)
    return fit_number(single, read, f"{name}'s {f.replace('_', ' ')}", batches=(1,))


def _count_of(expr: sympy.Expr) -> int:
    """Heads read off a trace where N and B are numbers include them as
    factors (B·H·N rows): the count is the fitted monomial's coefficient."""
    terms = sympy.Poly(expr, N, B).terms()
    return int(terms[0][1]) if len(terms) == 1 else int(value_at(expr, 1, 1))


def measure_all(loaded: LoadedModel, device: str, rules, allocation_rules=None,
                progress: Callable[[str], None] | None = None, shapes=None) -> list[Measured]:
    """Every trace the fit needs (or the (length, batch) ``shapes`` given),
    fitted lengths first."""
    shapes = shapes or [(n, b) for b in FIT_BATCHES for n in FIT_LENGTHS] + list(HELD_OUT)
    out = []
    for n, b in shapes:
        if progress:
            progress(f"tracing the loop over the sequence at N={n}, B={b}")
        out.append(measure(loaded, n, b, device, rules, allocation_rules))
    return out


@dataclass
class FittedLoop:
    """A looping model's costs, fitted in N and B from small traces."""

    flops: sympy.Expr
    weight_bytes: int
    peak_bytes: sympy.Expr
    sites: list
    memory: "FittedMemory"
    notes: list[str]
    #: ops a trace records, fitted in N (how long a trace at a length would be)
    graph_nodes: sympy.Expr = sympy.Integer(0)


#: Longest graph a trace at the requested length may record to check the fit there.
CHECK_NODES = 20_000
#: Torch calls that check may make per op the fit expects (at least CHECK_FLOOR
#: ops): more means the model does more work there than the fit says.
CHECK_CALLS_PER_NODE = 3
CHECK_FLOOR = 2_000


def check_at(fitted: FittedLoop, loaded: LoadedModel, seq_len: int, rules) -> TracedModel | None:
    """A trace at the requested length, when the fit is not what it counts
    there: the lengths fitted are short, and a model may change its work
    past them (a chunk length, a bucket count); None when the fit holds
    there, or the trace would be too long to check (a loop of seq_len steps)."""
    from ..rules import node_flops

    expected = value_at(fitted.graph_nodes, seq_len)
    if seq_len <= max(n for n, _ in HELD_OUT) or expected > CHECK_NODES:
        return None
    budget = CHECK_CALLS_PER_NODE * max(expected, CHECK_FLOOR)
    try:
        traced = concrete_trace(loaded, seq_len, 1, max_calls=budget)
    except TraceTooLong:  # far more work than the fit says: it does not hold there
        raise ModelError(
            f"the model's work past the short lengths its cost was fitted at "
            f"(N={_lengths_text()}) is not what the fit says: a trace at N={seq_len:,} "
            f"makes more than {budget:,} torch calls where the fit expects about "
            f"{expected:,} ops (chunks or buckets whose count grows with the length); try a "
            "shorter --seq-len") from None
    flops = sum((node_flops(traced, node, rules) for node in traced.nodes), sympy.Integer(0))
    return None if int(flops) == value_at(fitted.flops, seq_len, 1) else traced


def _fitted_peak(measured: list[Measured], measure_at) -> tuple[sympy.Expr, int]:
    """The peak fitted in N and B, and the shortest length it holds from.
    Where a CPU kernel's scratch makes it the Max of two moments, each is
    fitted apart (``_scratch_apart``); where the peak is another moment at
    the short lengths (the loop's peak overtakes the rest of the model's
    past them), it is fitted from traces at LATE_LENGTHS, which
    ``measure_at(shapes)`` makes."""
    read = lambda m: m.numbers["peak"]  # noqa: E731
    try:
        return fit_number(measured, read, "peak memory"), 1
    except FitFailed as exc:
        failed = exc
    if "peak_tensors" in measured[0].numbers:
        return sympy.Max(*(fit_number(measured, lambda m, k=k: m.numbers[k], "peak memory")
                           for k in ("peak_tensors", "peak_scratch"))), 1
    late = measure_at([(n, b) for b in FIT_BATCHES for n in LATE_LENGTHS] + list(LATE_HELD_OUT))
    try:
        return fit_number(late, read, "peak memory", lengths=LATE_LENGTHS,
                          held_out=LATE_HELD_OUT), LATE_LENGTHS[0]
    except FitFailed:
        raise failed from None


def fitted_loop(loaded: LoadedModel, device: str, rules, allocation_rules=None,
                progress: Callable[[str], None] | None = None) -> FittedLoop:
    """Trace ``loaded`` at small lengths and fit every cost in N and B."""
    measured = measure_all(loaded, device, rules, allocation_rules, progress)
    weights = {m.numbers["weights"] for m in measured}
    if len(weights) != 1:
        raise FitFailed("its weights differ between the short lengths it was traced at")
    try:
        flops = fit_number(measured, lambda m: m.numbers["flops"], "FLOPs")
        peak, shortest = _fitted_peak(measured, lambda shapes: measure_all(
            loaded, device, rules, allocation_rules, progress, shapes))
    except FitFailed as exc:
        if all(len({m.numbers["nodes"] for m in measured if m.batch == b}) == 1
               for b in {m.batch for m in measured}):
            # as many ops at every length: N fixed as a number, but no loop over it
            raise NoLoop(f"its costs at N={FIT_LENGTHS[0]}..{HELD_OUT[-1][0]} follow no "
                         "polynomial in N") from exc
        raise
    inputs = fit_number(measured, lambda m: m.numbers["input"], "input bytes")
    workspace = measured[0].numbers["workspace"]
    notes = [measured_note()]
    if shortest > 1:
        notes.append(f"its peak memory is fitted from traces at N={LATE_LENGTHS[0]}.."
                     f"{LATE_LENGTHS[-1]} (exact at "
                     + ", ".join(f"N={n} (B={b})" for n, b in LATE_HELD_OUT)
                     + f"): at shorter lengths the peak is another moment")
    memory = FittedMemory(device=device, weight_bytes=weights.pop(), input_bytes=inputs,
                          peak_bytes=peak, workspace_bytes=workspace, n_range=(shortest, None))
    nodes = interpolate([(m.seq_len, m.numbers["nodes"]) for m in measured
                          if m.batch == 1][:len(FIT_LENGTHS)])
    return FittedLoop(flops, memory.weight_bytes, peak, fitted_sites(measured), memory, notes,
                      graph_nodes=nodes)


@dataclass
class FittedMemory:
    """Peak memory fitted in N and B (the MemoryModel interface, without
    what needs one graph at the requested N: the peak's tensors)."""

    device: str
    weight_bytes: int
    input_bytes: sympy.Expr
    peak_bytes: sympy.Expr
    workspace_bytes: int = 0
    liveness: str = "eager replay, fitted from traces at small lengths"
    n_range: tuple[int, int | None] = (1, None)
    notes: list[str] = field(default_factory=list)

    def at(self, n: int, b: int = 1) -> int:
        return value_at(self.peak_bytes, n, b)

    def intermediate_at(self, n: int, b: int = 1) -> int:
        return (self.at(n, b) - self.weight_bytes - self.workspace_bytes
                - value_at(self.input_bytes, n, b))

    def layer_peaks_at(self, n: int, b: int = 1) -> dict[str, int]:
        return {}

    def peak_time(self, n: int, b: int = 1) -> int | None:
        return None

    def breakdown(self, n: int, b: int = 1, top: int = 8) -> list:
        """Weights, inputs and the intermediates as one entry."""
        from ..memory.model import BreakdownEntry

        total = self.at(n, b)
        parts = [("intermediate tensors", self.intermediate_at(n, b)),
                 ("weights and buffers", self.weight_bytes),
                 ("inputs", value_at(self.input_bytes, n, b))]
        return [BreakdownEntry(name, "", "", "", "", x, x / total if total else 0.0)
                for name, x in parts]

    def site_allocated_bytes(self, site) -> sympy.Expr:
        return site.allocated_bytes if site.allocated_bytes is not None else sympy.Integer(0)
