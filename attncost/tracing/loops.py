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

import functools
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
from ..patterns.classify import lengths_fitted
from .fake import call_args, fake_parameters, module_state_kept
from .graph import TracedModel
from .fast_paths import fast_paths
from .patches import flex_uncompiled
from .fit import (FIT_BATCHES, LATE, MIN_CHUNK, POSITIONS, FitFailed, FitLengths, chunked,
                  count_of, first_chunks, fit, fit_number, past_reach)
from .python_numbers import sizes_hashable
from .unroll import quiet_shape_log

#: Lengths and batches the polynomials are fitted through, and the (length,
#: batch) traces held out of the fit, which it must reproduce exactly.
FIT_LENGTHS = POSITIONS.fitted
HELD_OUT = POSITIONS.held_out
#: Chunks a loop over chunks' peak is fitted from where it is another moment
#: at three to five.
LATE_CHUNKS = 6
#: Site fields fitted per sequence (times B), and fields fitted in N alone; the
#: others are read at the longest fitted length.  Sites are read at B=1: with
#: the batch a number too, a recogniser could not tell it from the heads.
SITE_PER_SEQUENCE = ("flops", "useful_flops", "allocated_bytes")
SITE_COUNTS = ("heads", "kv_heads", "query_len", "key_len")


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
    ``max_calls`` stops it (TraceTooLong) past that many torch calls.  A
    branch on a value read from the inputs' data is decided as the example
    inputs decide it (tracing.data_values), and a size read from data that
    no branch decides is fixed so, as in a symbolic trace."""
    from .data_values import DataValues, data_dependent

    data = DataValues(one_length=True)
    while True:
        try:
            gm, kinds, names = _concrete_once(loaded, seq_len, batch, max_calls, data)
        except TraceRaised as exc:
            if data_dependent(exc) is None or \
                    not data.resolve(exc, loaded, seq_len, batch, data.n_params):
                raise
            continue
        data.fix_sizes(gm, loaded, seq_len, batch)
        gm.meta["attncost_fixed"] = list(data.fixed)
        break
    placeholder_kinds = {}
    for i, node in enumerate(n for n in gm.graph.nodes if n.op == "placeholder"):
        placeholder_kinds[node.name] = kinds[names[i]] if i < len(names) else "input"
        if i < len(names):
            node.meta["attncost_param"] = names[i]
    # sizes read from data are the values fixed for them (``u0`` -> 64)
    values = {f.symbol: sympy.Integer(f.value) for f in data.fixed if f.value is not None}
    return TracedModel(gm, ShapeEnv(), values, placeholder_kinds, n_range=(seq_len, seq_len),
                       batch_range=(batch, batch), seq_len_hint=seq_len, batch_hint=batch)


def _concrete_once(loaded: LoadedModel, seq_len: int, batch: int, max_calls: int | None, data):
    """One make_fx at fixed sizes, with the data values fixed so far:
    (graph, parameter kinds, parameter names)."""
    from . import INFERENCE, _record_module_paths
    from .data_values import DataShapeEnv

    model = loaded.module
    shape_env = DataShapeEnv()
    data.resolving(shape_env, loaded, seq_len, batch)
    # plain tensor attributes: constants
    mode = FakeTensorMode(allow_non_fake_inputs=True, shape_env=shape_env, static_shapes=True)
    with FakeTensorMode(allow_non_fake_inputs=True):
        concrete = loaded.example_inputs(seq_len, batch)
    flat, spec = tree_flatten(concrete)
    with mode:
        flat = [torch.empty(t.shape, dtype=t.dtype, device=loaded.trace_device)
                if isinstance(t, torch.Tensor) else t for t in flat]
    params, kinds = fake_parameters(model, mode, loaded.trace_device)
    data.n_params = len(params)
    args, kwargs = call_args(spec.unflatten(flat))
    budget = _OpBudget(max_calls)
    try:
        with torch.no_grad(), _record_module_paths(model), flex_uncompiled(), \
                module_state_kept(model), loaded.trace_context(), fast_paths(loaded.kernel_device), \
                warnings.catch_warnings(), quiet_shape_log(), budget, sizes_hashable(), \
                data.watching():
            warnings.simplefilter("ignore")
            gm = make_fx(INFERENCE.build(model, params), tracing_mode="fake",
                         _allow_non_fake_inputs=True)(params, args, kwargs)
        gm.meta["attncost_calls"] = budget.calls
    except ModelError:
        raise
    except Exception as exc:
        raise TraceRaised(f"the model raised while being traced at N={seq_len}: "
                         f"{type(exc).__name__}: {first_line(exc)}") from exc
    return gm, kinds, list(params)


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
               "workspace": memory.workspace_bytes, "nodes": len(traced.graph_module.graph.nodes),
               "calls": traced.graph_module.meta.get("attncost_calls", 0)}
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


def measured_note(lengths: FitLengths = POSITIONS, looped: bool = True) -> str:
    """Where the fitted formulas were measured; ``looped`` False where every
    length recorded as many ops (the length written into the code as a
    number, an interpolation's size, not a loop over it)."""
    if not looped and not lengths.past and lengths.chunk is None:
        return (f"the model writes the length into its code as a number (the same ops at "
                f"every length): its formulas are fitted from traces at N={lengths.text()} "
                f"(B={', '.join(map(str, FIT_BATCHES))}) and are exact at "
                f"{lengths.held_text()}, lengths held out of the fit")
    if lengths.past:  # a window built by a loop over the length, not chunks of it
        what = (f"the sequence, and its attention reaches {lengths.past} positions (a window "
                f"built at each length): up to N={lengths.past} it sees every pair, so its "
                f"formulas hold from N={lengths.past + 1}" +
                (f", in N and ceiling(N/{lengths.chunk})" if lengths.chunk else "") + ", and")
    elif lengths.chunk is None:
        what = "the sequence: its formulas"
    else:
        what = (f"chunks of {lengths.chunk} tokens: its formulas are in N and "
                f"ceiling(N/{lengths.chunk}), and they")
    return (f"the model loops over {what} are fitted from traces at "
            f"N={lengths.text()} (B={', '.join(map(str, FIT_BATCHES))}) and are exact at "
            f"{lengths.held_text()}, lengths held out of the fit")


def fitted_sites(measured: list[Measured], lengths: FitLengths = POSITIONS) -> list:
    """The sites found at every length (at B=1), their numbers fitted (and
    their class, where it follows from the lengths fitted); each
    named as the longest trace reads it, one of whole chunks where the loop
    steps over chunks (a short last chunk, sliced otherwise, hides the loop's
    repetition: MiniMax's lightning attention)."""
    single = [m for m in measured if m.batch == 1]
    common = set.intersection(*({s.name for s in m.sites} for m in single))
    named_at = lengths.aligned.fitted if lengths.aligned else lengths.fitted
    last = max((m for m in single if m.seq_len in named_at), key=lambda m: m.seq_len)
    out = []
    for site in last.sites:
        if site.name not in common:
            continue
        values = {f: _site_number(single, site.name, f, lengths) * B for f in SITE_PER_SEQUENCE}
        values.update({f: _site_number(single, site.name, f, lengths) for f in SITE_COUNTS})
        values["heads"], values["kv_heads"] = (count_of(values[f]) for f in ("heads", "kv_heads"))
        out.append(replace(site, nodes=[], **values))
        lengths_fitted(out[-1])
    return out


def _site_number(single: list[Measured], name: str, f: str, lengths: FitLengths) -> sympy.Expr:
    def read(m: Measured) -> int:
        site = next(s for s in m.sites if s.name == name)
        return _number(getattr(site, f) or 0, m.seq_len, 1)
    return fit_number(single, read, f"{name}'s {f.replace('_', ' ')}", batches=(1,),
                      lengths=lengths)


def measure_all(loaded: LoadedModel, device: str, rules, allocation_rules=None,
                progress: Callable[[str], None] | None = None,
                shapes: list[tuple[int, int]] | None = None) -> list[Measured]:
    """Every trace a fit through POSITIONS needs (or the (length, batch)
    ``shapes`` given), fitted lengths first."""
    out = []
    for n, b in shapes or POSITIONS.shapes():
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
    lengths: FitLengths = POSITIONS
    #: the most torch calls the model's Python made per op recorded, at the
    #: lengths fitted (attribute reads, shape queries: many per op in some code)
    calls_per_node: float = 1.0


#: Longest graph a trace at the requested length may record to check the fit there.
CHECK_NODES = 20_000
#: Torch calls that check may make: CHECK_CALLS_PER_NODE times the calls the
#: fit expects (its ops, at the calls per op of the lengths fitted), and
#: CHECK_FLOOR more; past that the model does more work there than the fit says.
CHECK_CALLS_PER_NODE = 3
CHECK_FLOOR = 2_000


def check_at(fitted: FittedLoop, loaded: LoadedModel, seq_len: int, rules) -> TracedModel | None:
    """A trace at the requested length, when the fit is not what it counts
    there: the lengths fitted are short, and a model may change its work
    past them (a chunk length, a bucket count); None when the fit holds
    there, or the trace would be too long to check (a loop of seq_len steps)."""
    from ..rules import node_flops

    expected = value_at(fitted.graph_nodes, seq_len)
    longest = max(n for n, _ in fitted.lengths.held_out)
    if seq_len <= longest or expected > CHECK_NODES:
        return None
    budget = int(CHECK_CALLS_PER_NODE * expected * fitted.calls_per_node) + CHECK_FLOOR
    try:
        traced = concrete_trace(loaded, seq_len, 1, max_calls=budget)
    except TraceTooLong:  # far more work than the fit says: it does not hold there
        raise FitDoesNotHold(
            f"the model's work past the lengths its cost was fitted at "
            f"(N={fitted.lengths.text()}) is not what the fit says: a trace at N={seq_len:,} "
            f"makes more than {budget:,} torch calls where the fit expects about "
            f"{expected:,} ops (chunks or buckets whose count grows with the length); try a "
            "shorter --seq-len") from None
    flops = sum((node_flops(traced, node, rules) for node in traced.nodes), sympy.Integer(0))
    return None if int(flops) == value_at(fitted.flops, seq_len, 1) else traced


class FitDoesNotHold(ModelError):
    """A trace at the requested length makes far more calls than the fit expects."""


def _node_counter(loaded: LoadedModel):
    """The number of nodes of a concrete trace at (length, B=1), cached."""
    @functools.lru_cache(maxsize=None)
    def nodes(n: int) -> int:
        return len(concrete_trace(loaded, n, 1, max_calls=STEP_CALLS).graph_module.graph.nodes)
    return nodes


def _other(count: int, base: int) -> bool:
    return count != base


def _more(count: int, base: int) -> bool:
    return count > base


def _first_longer(nodes: Callable[[int], int], up_to: int,
                  differs: Callable[[int, int], bool] = _other) -> tuple[int, int] | None:
    """(lo, hi): the first doubling of the shortest fitted length, up to
    ``up_to``, whose trace records other ops (``differs`` from its count:
    other, or more) (hi), and the one before (lo); None where every trace up
    to ``up_to`` records the same ops."""
    base = nodes(POSITIONS.fitted[0])
    lo, hi = POSITIONS.fitted[0], 2 * POSITIONS.fitted[0]
    while not differs(nodes(min(hi, up_to)), base):
        if hi >= up_to:
            return None
        lo, hi = hi, 2 * hi
    return lo, min(hi, up_to)


def _bisect_step(nodes: Callable[[int], int], lo: int, hi: int,
                 differs: Callable[[int, int], bool] = _other) -> int:
    """The longest length in [lo, hi) whose ops do not differ from the
    shortest fitted length's: ``lo`` itself first, where chunks of a power
    of two end."""
    base = nodes(POSITIONS.fitted[0])
    if hi - lo > 1 and differs(nodes(lo + 1), base):
        return lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if differs(nodes(mid), base) else (mid, hi)
    return lo


def chunk_length(loaded: LoadedModel, seq_len: int,
                 progress: Callable[[str], None] | None = None,
                 steps: int | None = None) -> int | None:
    """The length of the chunks a loop steps over: a trace records the
    same ops at every length inside one chunk, and others one token past
    it, and others again one chunk later.  Where the loop ran ``steps`` times at
    ``seq_len``, ceil(seq_len/steps) is tried first; else the first length
    with more ops than at the shortest fitted one is found by doubling then
    halving (up to ``seq_len``).  None where the ops do not step so (a loop
    over the tokens, or no loop)."""
    nodes = _node_counter(loaded)
    base = POSITIONS.fitted[0]

    def steps_at(chunk: int) -> bool:
        # a length that fills its last chunk may skip the padding the others
        # add (fewer ops): the chunk's ops are read one token short of it
        if chunk < MIN_CHUNK:
            return False
        inside = nodes(chunk) if nodes(chunk) == nodes(base) else nodes(chunk - 1)
        return inside == nodes(base) and nodes(chunk) <= nodes(base) \
            and nodes(base) < nodes(chunk + 1) < nodes(2 * chunk + 1)

    if progress:
        progress("finding the length the model's loop steps by")
    try:  # the loop's count at seq_len says the chunk, where it is one
        if steps and steps_at(-(-seq_len // steps)):
            return -(-seq_len // steps)
    except (TraceTooLong, TraceRaised):
        pass
    try:
        doubled = _first_longer(nodes, seq_len, _more)
        if doubled is None:
            return None
        lo = _bisect_step(nodes, *doubled, _more)
        return lo if steps_at(lo) else None
    except (TraceTooLong, TraceRaised):
        return None


def same_ops_up_to(loaded: LoadedModel, seq_len: int, up_to: int,
                   progress: Callable[[str], None] | None = None) -> int | None:
    """Where every trace up to ``seq_len`` records the same ops as at the
    shortest fitted length (one chunk of a loop over chunks longer than
    ``seq_len``), the longest length that still does, found up to ``up_to``
    (a fit through those short lengths holds no further); None where the
    ops step before ``seq_len``, or never up to ``up_to``."""
    nodes = _node_counter(loaded)
    if progress:
        progress("finding how far the model runs the same ops")
    try:
        doubled = _first_longer(nodes, up_to)
        if doubled is None or doubled[1] <= seq_len:
            return None
        if nodes(seq_len) != nodes(POSITIONS.fitted[0]):
            return None
        return _bisect_step(nodes, max(doubled[0], seq_len), doubled[1])
    except (TraceTooLong, TraceRaised):
        return None


#: Most torch calls a trace made to find a loop's chunk length may make.
STEP_CALLS = 200_000


def _fitted_peak(measured: list[Measured], measure_at,
                 lengths: FitLengths) -> tuple[sympy.Expr, FitLengths]:
    """The peak fitted in N and B, and the lengths it was fitted through.
    Where the peak is another moment at ``lengths`` (the loop's peak
    overtakes the rest of the model's past them, a kernel's scratch steps
    at its blocks), it is fitted from traces at ``_later(lengths)``, which
    ``measure_at(shapes)`` makes."""
    try:
        return _peak_through(measured, lengths), lengths
    except FitFailed as exc:
        failed = exc
    late = _later(lengths)
    if late is None:
        raise failed
    try:
        return _peak_through(measure_at(late.shapes()), late), late
    except FitFailed:
        raise failed from None


def _peak_through(measured: list[Measured], lengths: FitLengths) -> sympy.Expr:
    """The peak fitted through ``lengths``; where a CPU kernel's scratch
    makes it the Max of two moments, each fitted apart (``_scratch_apart``)."""
    try:
        return fit_number(measured, lambda m: m.numbers["peak"], "peak memory", lengths=lengths)
    except FitFailed:
        if "peak_tensors" not in measured[0].numbers:
            raise
    return sympy.Max(*(fit_number(measured, lambda m, k=k: m.numbers[k], "peak memory",
                                  lengths=lengths)
                       for k in ("peak_tensors", "peak_scratch")))


def _later(lengths: FitLengths) -> FitLengths | None:
    """Where a peak that is another moment at ``lengths`` is fitted again:
    LATE after POSITIONS, six chunks on for a loop over chunks, past twice
    the reach after a fit past a pattern's reach (a kernel's blocks, as
    long as the window, may step the peak there); None after LATE."""
    if lengths.chunk:
        return chunked(lengths.chunk, LATE_CHUNKS)
    if lengths.past:
        return past_reach(2 * lengths.past)
    return LATE if lengths is POSITIONS else None


def fitted_loop(loaded: LoadedModel, device: str, rules, allocation_rules=None,
                progress: Callable[[str], None] | None = None,
                lengths: FitLengths = POSITIONS) -> FittedLoop:
    """Trace ``loaded`` at ``lengths`` and fit every cost in N and B."""
    def measure_at(shapes):
        return measure_all(loaded, device, rules, allocation_rules, progress, shapes)

    shapes = lengths.shapes()
    measured = measure_at([s for s in shapes if s[1] == 1])
    reach = _reach(measured)
    if reach is not None and reach >= min(lengths.fitted) and \
            (lengths.chunk is None or lengths.past):
        return _fitted_past(reach, lambda past: fitted_loop(
            loaded, device, rules, allocation_rules, progress, lengths=past))
    if lengths.chunk:  # a quick refusal where the FLOPs at B=1 already follow no fit
        fit_number(measured, lambda m: m.numbers["flops"], "FLOPs", batches=(1,),
                   lengths=lengths)
    measured += measure_at([s for s in shapes if s[1] != 1])
    weights = {m.numbers["weights"] for m in measured}
    if len(weights) != 1:
        raise FitFailed("its weights differ between the lengths it was traced at")
    try:
        flops = fit_number(measured, lambda m: m.numbers["flops"], "FLOPs", lengths=lengths)
        peak, peak_lengths = _fitted_peak(measured, measure_at, lengths)
    except FitFailed as exc:
        if all(len({m.numbers["nodes"] for m in measured if m.batch == b}) == 1
               for b in {m.batch for m in measured}):
            # as many ops at every length: N fixed as a number, but no loop over it
            raise NoLoop(f"its costs at N={lengths.fitted[0]}..{lengths.held_out[-1][0]} "
                         "follow no polynomial in N") from exc
        raise
    inputs = fit_number(measured, lambda m: m.numbers["input"], "input bytes", lengths=lengths)
    looped = len({m.numbers["nodes"] for m in measured if m.batch == 1}) > 1
    notes = [measured_note(lengths, looped)]
    if peak_lengths is not lengths:
        notes.append(f"its peak memory is fitted from traces at N={peak_lengths.text()} (exact "
                     f"at {peak_lengths.held_text()}): at shorter lengths the peak is another "
                     "moment")
    shortest = _shortest(peak_lengths)
    memory = FittedMemory(device=device, weight_bytes=weights.pop(), input_bytes=inputs,
                          peak_bytes=peak, workspace_bytes=measured[0].numbers["workspace"],
                          n_range=(shortest, None), lengths=lengths)
    nodes = lengths.through([(m.seq_len, m.numbers["nodes"]) for m in measured
                             if m.batch == 1 and m.seq_len in lengths.fitted])
    per_node = max((m.numbers["calls"] / m.numbers["nodes"] for m in measured
                    if m.numbers["nodes"]), default=1.0)
    return FittedLoop(flops, memory.weight_bytes, peak, fitted_sites(measured, lengths), memory,
                      notes, graph_nodes=nodes, lengths=lengths, calls_per_node=max(per_node, 1.0))


def _reach(measured: list[Measured]) -> int | None:
    """The longest window any trace's sites read: how far back the
    attention reaches, past which its pattern no longer grows with N."""
    return max((s.window for m in measured for s in m.sites if s.window), default=None)


def _fitted_past(reach: int, fit_at: Callable[[FitLengths], "FittedLoop"]) -> "FittedLoop":
    """A fit made from lengths past ``reach`` (some traces were inside it,
    where a window lets every pair through: another polynomial), as a
    polynomial, or else in N and the count of blocks of ``reach`` (a
    pattern in blocks steps with it); the first failure is the one said."""
    try:
        return fit_at(past_reach(reach))
    except FitFailed as exc:
        try:
            return fit_at(chunked(reach, 2, past=reach))
        except FitFailed:
            raise exc from None


def _shortest(lengths: FitLengths) -> int:
    """The shortest length a fit through ``lengths`` is said to hold at."""
    if lengths.past:  # one token past the pattern's reach
        return lengths.past + 1
    if lengths.chunk:  # from one token past the whole chunks before the first fitted
        return (first_chunks(lengths) - 1) * lengths.chunk + 1
    return 1 if lengths is POSITIONS else lengths.fitted[0]


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
    #: where it was fitted (a loop over chunks: their length)
    lengths: FitLengths = POSITIONS

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
