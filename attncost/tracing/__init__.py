"""Trace a model into an aten-level torch.fx graph with N and B symbolic.

One trace answers every sequence length: the graph is captured by
``make_fx(tracing_mode="symbolic")`` over fake tensors, so no weight or
activation is ever allocated, and every node carries its shape as SymPy
expressions in ``N`` (sequence length) and ``B`` (batch).  The trace uses the
requested N as its hint, so a Python branch on the length takes the branch
the requested N would take; the guards it adds are reported as the range of N
the formulas hold for.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator

import sympy
import torch
import torch.fx.traceback as fx_traceback
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.experimental.symbolic_shapes import free_unbacked_symbols
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.func import functional_call

from ..errors import ModelError, first_line
from ..expr import B, N, pins_batch
from ..loader import LoadedModel
from .fake import call_args, fake_parameters, module_state_kept
from .graph import TracedModel, tensor_outputs, tensors_of
from .inputs import probe_dims, symbolic_inputs
from .data_values import DataShapeEnv, DataValues, data_dependent
from .einx_sizes import einx_symbolic
from .fast_paths import fast_paths
from .patches import flex_uncompiled
from .python_numbers import numbers_kept_symbolic, sizes_hashable
from .scalars import sizes_through_tensors
from .repeat import find_repeated, replay_layers, truncated
from .routed import even_split_sizes, split_note
from .unroll import UNROLL_LIMIT, LengthSpecialized, quiet_shape_log, unrolled_error

__all__ = ["INFERENCE", "Program", "TracedModel", "say_fixed_values", "tensor_outputs", "tensors_of",
           "trace"]


def _forward_function(model: torch.nn.Module, params: dict) -> Callable:
    """One forward; its outputs as a flat list of tensors: they are what the
    forward returns, and so what stays alive after it (logits, a KV cache)."""
    def forward(params, args, kwargs):
        return tensors_of(functional_call(model, params, args, kwargs))
    return forward


@dataclass(frozen=True)
class Program:
    """What is traced over the fake parameters and symbolic inputs.

    ``build(model, params)`` returns the function of (params, args, kwargs)
    that make_fx traces; ``grad`` traces with autograd on (the parameters
    that ``trainable(name)`` accepts require grad); ``context()`` is entered
    around the trace (autocast, a checkpointing patch)."""

    build: Callable[[torch.nn.Module, dict], Callable]
    grad: bool = False
    trainable: Callable[[str], bool] = lambda name: False
    context: Callable[[], ContextManager[Any]] = contextlib.nullcontext


#: One forward without gradients, as `attncost analyze` models it.
INFERENCE = Program(_forward_function)


@contextlib.contextmanager
def _record_module_paths(model: torch.nn.Module) -> Iterator[None]:
    """Stamp each traced node with the stack of modules that were running."""
    paths = {}
    for name, mod in model.named_modules(remove_duplicate=False):
        paths.setdefault(id(mod), name)
    stack: list[tuple[str, str]] = []

    def pre(mod, args):
        path = paths.get(id(mod))
        if path is not None:
            stack.append((path, type(mod).__qualname__))
            fx_traceback.current_meta["nn_module_stack"] = {p: (p, t) for p, t in stack}

    def post(mod, args, out):
        path = paths.get(id(mod))
        if path is not None and stack and stack[-1][0] == path:
            stack.pop()
            if stack:
                fx_traceback.current_meta["nn_module_stack"] = {p: (p, t) for p, t in stack}
            else:
                fx_traceback.current_meta.pop("nn_module_stack", None)

    h1 = torch.nn.modules.module.register_module_forward_pre_hook(pre)
    h2 = torch.nn.modules.module.register_module_forward_hook(post, always_call=True)
    try:
        with fx_traceback.preserve_node_meta():
            yield
    finally:
        h1.remove()
        h2.remove()


def trace(loaded: LoadedModel, seq_len: int, batch: int = 1,
          progress: Callable[[str], None] | None = None, reuse_layers: bool = True,
          program: Program = INFERENCE, batch_as_asked: bool = False,
          unroll_limit: int = UNROLL_LIMIT) -> TracedModel:
    """Trace ``loaded`` once; the graph holds for every N in ``n_range``.

    With ``reuse_layers``, a stack of repeated layers is traced two periods
    deep and the rest replayed (see tracing.repeat); the graph is the same.
    A model that unrolls a loop over N above tracing.unroll.UNROLL_LIMIT is
    an error that says so (see tracing.unroll).  ``program`` is what is
    traced (default: one forward without gradients); a program with
    gradients is traced in full (the replay copies forward layers only).
    ``unroll_limit`` 0: any length or count fixed as a number stops it.
    """
    dims = probe_dims(loaded, batch)
    if dims.batch_in_structure:
        batch_as_asked = True
    else:
        _check_batch(dims, batch)
    # A batch of 1 would be specialized to the constant 1; trace with 2 and
    # keep B symbolic (nothing is allocated, so the size is free).
    batch_hint = batch if batch >= 2 or batch_as_asked else 2
    seq_hint = seq_len if seq_len >= 2 else 2
    block = find_repeated(loaded.module, loaded.config) \
        if reuse_layers and not program.grad else None
    if progress:
        progress("tracing the model with symbolic N")
    try:
        made = _trace_truncated(loaded, dims, seq_hint, batch_hint, block, unroll_limit) \
            if block else None
        if made is None:
            made = _make_graph(loaded, dims, seq_hint, batch_hint, unroll_limit, program)
    except LengthSpecialized as exc:
        raise unrolled_error(exc.value,
                             lambda n: _node_count(loaded, dims, n, batch_hint, program),
                             exc.steps) from None
    gm, shape_env, replacements, kinds = made
    traced = TracedModel(gm, shape_env, replacements, kinds,
                         seq_len_hint=seq_hint, batch_hint=batch_hint)
    _routed_sizes(traced, loaded)
    _lengths_read_from_data(traced)
    traced.guards, traced.n_range = _guards(traced)
    if batch_as_asked or any(pins_batch(g) for g in traced.guards):
        # the model fixes the batch it was traced at (a tensor made of the
        # batch size): its formulas hold there only, so trace the batch asked
        if batch_hint != batch:
            return trace(loaded, seq_len, batch, progress, reuse_layers, program,
                         batch_as_asked=True, unroll_limit=unroll_limit)
        traced.batch_range = (batch, batch)
    say_fixed_values(traced, loaded)
    return traced


def _routed_sizes(traced: TracedModel, loaded: LoadedModel) -> None:
    """Sizes read from values that split a tensor, as equal shares of it
    (tracing/routed.py); the notes say so."""
    shares = even_split_sizes(TracedModel(traced.graph_module, traced.shape_env,
                                          traced.replacements, traced.placeholder_kinds))
    if not shares:
        return
    traced.replacements = {**traced.replacements, **shares}
    notes = getattr(loaded, "notes", None)
    if isinstance(notes, list) and split_note(len(shares)) not in notes:
        notes.append(split_note(len(shares)))


def say_fixed_values(traced: TracedModel, loaded: LoadedModel) -> None:
    """Values read from data and fixed while tracing go into the loader's
    notes (the report's); one that changes with N holds the range to the
    traced N, unless it is N itself at every length read."""
    fixed = traced.graph_module.meta.get("attncost_fixed") or []
    if any(f.varies for f in fixed):
        traced.n_range = (traced.seq_len_hint, traced.seq_len_hint)
    notes = getattr(loaded, "notes", None)
    if isinstance(notes, list):
        notes.extend(n for n in DataValues(fixed=fixed).notes() if n not in notes)


def _lengths_read_from_data(traced: TracedModel) -> None:
    """A value read from data that is N at every length read (the count of
    tokens that are not padding) is N: its symbol is replaced by N, and the
    branches decided on it (runtime assertions) become conditions on N.
    Any other value fixed is the number the example inputs gave."""
    fixed = traced.graph_module.meta.get("attncost_fixed") or []
    lengths = {f.symbol: N if f.is_length else sympy.Integer(f.value)
               for f in fixed if f.is_length or f.value is not None}
    if lengths:
        traced.replacements = {**traced.replacements, **lengths}


def _trace_truncated(loaded: LoadedModel, dims, seq_hint: int, batch_hint: int, block,
                     unroll_limit: int = UNROLL_LIMIT):
    """The graph traced two periods deep and replayed, or None where the
    model does not allow it (code that counts its layers itself raises on
    the shorter list; traced periods that differ)."""
    try:
        with truncated(block):
            made = _make_graph(loaded, dims, seq_hint, batch_hint, unroll_limit)
    except LengthSpecialized:
        raise
    except ModelError:
        return None
    return made if replay_layers(made[0], block, made[3]) else None


def _check_batch(dims, batch: int) -> None:
    """A batch above 1 needs inputs whose size follows it."""
    if batch <= 1:
        return
    follows = any(d is not None and B in d.free_symbols for ds in dims if ds for d in ds)
    if not follows:
        raise ModelError(f"--batch {batch}: the model's inputs have the same size at every batch "
                         "(example_inputs builds no batch dim); make example_inputs(seq_len, "
                         "batch=1) use its batch, or analyse with --batch 1")


def _node_count(loaded: LoadedModel, dims, seq_len: int, batch_hint: int,
                program: Program = INFERENCE) -> int:
    """Ops in a trace at a small length."""
    gm = _make_graph(loaded, dims, seq_len, batch_hint, unroll_limit=None, program=program)[0]
    return sum(1 for n in gm.graph.nodes if n.op == "call_function")


def _make_graph(loaded: LoadedModel, dims, seq_hint: int, batch_hint: int,
                unroll_limit: int | None = UNROLL_LIMIT, program: Program = INFERENCE):
    """make_fx of ``program`` over fake parameters and symbolic inputs.

    A branch on a value read from the inputs' data is decided as the example
    inputs decide it, at the branch or, failing that, by tracing again with
    the value known (tracing.data_values); the values fixed are in the
    graph's ``meta["attncost_fixed"]``."""
    data = DataValues()
    while True:
        try:
            made = _make_graph_once(loaded, dims, seq_hint, batch_hint, unroll_limit, program, data)
        except ModelError as exc:
            if data_dependent(exc) is None or \
                    not data.resolve(exc, loaded, seq_hint, batch_hint, data.n_params):
                raise
            continue
        data.fix_sizes(made[0], loaded, seq_hint, batch_hint)
        made[0].meta["attncost_fixed"] = list(data.fixed)
        return made


def _make_graph_once(loaded: LoadedModel, dims, seq_hint: int, batch_hint: int,
                     unroll_limit: int | None, program: Program, data: DataValues):
    """One make_fx of ``program``, with the data values fixed so far."""
    model = loaded.module
    shape_env = DataShapeEnv(duck_shape=False)
    data.resolving(shape_env, loaded, seq_hint, batch_hint)
    # A tensor kept as a plain attribute (not a parameter or buffer: a fixed
    # sin-cos table) is a constant of the graph, as it is of a real run.
    mode = FakeTensorMode(shape_env=shape_env, allow_non_fake_inputs=True)
    inputs, replacements = symbolic_inputs(loaded, mode, seq_hint, batch_hint, dims)
    shape_env.watch([s for s, e in replacements.items() if N in e.free_symbols], unroll_limit)
    params, kinds = fake_parameters(model, mode, loaded.trace_device,
                                    mirror_requires_grad=not program.grad)
    data.n_params = len(params)
    if program.grad:
        for name, t in params.items():
            if kinds[name] == "parameter" and program.trainable(name):
                t.requires_grad_(True)
    args, kwargs = call_args(inputs)
    function = program.build(model, params)
    grad_mode = torch.enable_grad() if program.grad else torch.no_grad()

    try:
        with grad_mode, _record_module_paths(model), flex_uncompiled(), einx_symbolic(), \
                module_state_kept(model), loaded.trace_context(), program.context(), \
                fast_paths(loaded.kernel_device), \
                warnings.catch_warnings(), quiet_shape_log(), sizes_through_tensors(), \
                numbers_kept_symbolic(model), sizes_hashable(), data.watching():
            # Warnings about running eagerly on fake data concern the trace, not the model.
            warnings.simplefilter("ignore")
            with _lazy_code():
                gm = make_fx(function, tracing_mode="symbolic",
                             _allow_non_fake_inputs=True)(params, args, kwargs)
    except ModelError:
        raise
    except Exception as exc:  # the user's model raised while being traced
        raise SymbolicTraceRaised(f"the model raised while being traced: "
                                  f"{type(exc).__name__}: {first_line(exc)}") from exc

    # Placeholders come in the order of the flattened (params, args, kwargs).
    placeholder_kinds = {}
    names = list(params)
    for i, node in enumerate(n for n in gm.graph.nodes if n.op == "placeholder"):
        placeholder_kinds[node.name] = kinds[names[i]] if i < len(names) else "input"
        if i < len(names):
            node.meta["attncost_param"] = names[i]
    return gm, shape_env, replacements, placeholder_kinds


class SymbolicTraceRaised(ModelError):
    """The model's own code raised with the length a symbol (it may check
    that a size is an int, as a type-checked signature does)."""


def _lazy_code() -> ContextManager:
    """The graph's Python code generated when first run or read, not at
    each change: attncost reads the graph, and replayed layers change it."""
    try:
        from torch.fx._lazy_graph_module import _use_lazy_graph_module
    except ImportError:  # an older torch: code generated eagerly
        return contextlib.nullcontext()
    return _use_lazy_graph_module(True)


def _guards(traced: TracedModel) -> tuple[list[str], tuple[int, int | None]]:
    """Conditions on N and B the trace recorded, and the range of N they allow."""
    env = traced.shape_env
    lo, hi = 1, None
    for s in [s for s, e in traced.replacements.items() if e == N]:
        vr = env.var_to_range.get(s)
        if vr is None:
            continue
        lower = int(vr.lower) if vr.lower.is_Integer else 1
        # The shape env assumes sizes >= 2 by default; only a tighter bound counts.
        if lower > 2:
            lo = max(lo, lower)
        if vr.upper.is_Integer and int(vr.upper) < 2**62:
            hi = int(vr.upper) if hi is None else min(hi, int(vr.upper))
    texts = []
    # values read from data and read as N: the branches taken on them bound N
    read_as_length = [s for s, e in traced.replacements.items()
                      if e == N and free_unbacked_symbols(s)]
    decided = [r for s in read_as_length for r in env.deferred_runtime_asserts.get(s, [])]
    for g in list(env.guards) + decided:
        expr = traced.expr(g.expr)
        if expr in (sympy.true, sympy.false) or not expr.free_symbols:
            continue
        texts.append(str(expr))
        lo, hi = _bounded(expr, lo, hi, traced.seq_len_hint)
    return sorted(set(texts)), (lo, hi)


def _bounded(guard, lo: int, hi: int | None, hint: int) -> tuple[int, int | None]:
    """(lo, hi) narrowed by a guard linear in N alone (``N + 1 <= 257``: a
    table of positions sliced to the length; ``8*N == 64``: one length), or by a count of pieces of
    the sequence fixed (``floor((N + 31)/32) == 8``: eight chunks of 32,
    225 <= N <= 256): the bounds a range can say."""
    if not isinstance(guard, sympy.core.relational.Relational) or guard.free_symbols != {N}:
        return lo, hi
    for linear in _counted_pieces(guard, hint):
        lo, hi = _bounded(linear, lo, hi, hint)
    side = guard.lhs - guard.rhs
    if not side.is_polynomial(N) or sympy.degree(side, N) != 1:
        return lo, hi
    interval = sympy.solve_univariate_inequality(guard, N, relational=False)
    if isinstance(interval, sympy.FiniteSet) and len(interval) == 1:
        # N fixed (``8*N == 64``: an image width the model asserts on)
        (only,) = interval
        return (int(only), int(only)) if only.is_Integer else (lo, hi)
    if not isinstance(interval, sympy.Interval):
        return lo, hi
    if interval.inf.is_finite:  # the least integer inside (sizes >= 2 go without saying)
        least = sympy.floor(interval.inf) + 1 if interval.left_open else sympy.ceiling(interval.inf)
        lo = max(lo, int(least)) if least > 2 else lo
    if interval.sup.is_finite:  # the greatest integer inside
        most = sympy.ceiling(interval.sup) - 1 if interval.right_open else sympy.floor(interval.sup)
        hi = int(most) if hi is None else min(hi, int(most))
    return lo, hi


def _counted_pieces(guard, hint: int) -> list:
    """``floor(a·N + b) == c`` (or ceiling) with a > 0, as the two linear
    bounds on N it means; a count written otherwise (``floor(N/64 +
    Mod(63*N, 64)/64) == 1``: the chunks of 64 padded to, ceiling(N/64)),
    as the run of lengths around the traced one ``hint`` that it counts
    alike; [] for any other guard."""
    if not isinstance(guard, sympy.Eq):
        return []
    for side, value in ((guard.lhs, guard.rhs), (guard.rhs, guard.lhs)):
        if isinstance(side, (sympy.floor, sympy.ceiling)) and value.is_Integer:
            inner = side.args[0]
            if inner.is_polynomial(N) and sympy.degree(inner, N) == 1 and \
                    inner.coeff(N, 1) > 0:
                if isinstance(side, sympy.floor):
                    return [sympy.Ge(inner, value), sympy.Lt(inner, value + 1)]
                return [sympy.Gt(inner, value - 1), sympy.Le(inner, value)]
            return _counted_alike(side, int(value), hint)
    return []


def _counted_alike(count, value: int, hint: int) -> list:
    """[N >= lo, N <= hi]: the lengths around ``hint`` at which ``count``
    (a number of pieces, which grows with N) is ``value``; [] where it is
    not so at ``hint``, does not grow so, or cannot be read at some N."""
    at = lambda n: int(count.subs(N, n))  # noqa: E731
    try:
        if at(hint) != value:
            return []
        hi = _last_where(lambda n: at(n) <= value, hint)
        lo = hint - _last_where(lambda k: k < hint and at(hint - k) == value, 0)
        grows = (lo == 1 or at(lo - 1) < value) and (hi is None or at(hi + 1) > value)
        # a count is ``value`` all along its run (floor(N/ceiling(N/4)) is 4
        # at multiples of 4 only: a condition on N, not a run of lengths)
        grows = grows and all(at(n) == value for n in _inside(lo, hi, hint))
    except (TypeError, ValueError, ZeroDivisionError):  # zoo, nan: no count there
        return []
    if not grows:
        return []
    return [sympy.Ge(N, lo)] + ([sympy.Le(N, hi)] if hi is not None else [])


def _inside(lo: int, hi: int | None, hint: int) -> set[int]:
    """Lengths of the run lo..hi (hi None: no end) a count is checked at."""
    top = hi if hi is not None else 16 * hint + 3
    picks = {lo, top, hint - 1, hint + 1, (lo + top) // 2, (hint + top) // 2, 2 * hint + 1}
    return {n for n in picks if lo <= n <= top}


def _last_where(holds, start: int) -> int | None:
    """The largest n >= start with ``holds(n)``, ``holds`` true from start
    up to it and false past it; None where it still holds at 2**62."""
    step = 1
    while holds(start + step):
        if start + step >= 2**62:
            return None
        step *= 2
    lo, hi = start + step // 2 if step > 1 else start, start + step
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if holds(mid) else (lo, mid)
    return lo
