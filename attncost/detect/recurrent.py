"""Recurrent mixers: a loop over the sequence that carries a state from one
token to the next (state = f(state, token); outputs read the state), as
Mamba's slow path, RWKV-style and fla's recurrent references write it.

Such a loop fixes the length, so it is only seen in a trace at one small
length (tracing/loops.py traces several and fits the costs in N): there
the loop is unrolled, the same ops once per position.  The body is found
as the shortest period of the graph's (op, module) sequence that repeats
about once per position, and confirmed by what makes it a recurrence: a
value of one repetition read by the next (the state).  The state's shape
gives the heads (H×d_k×d_v: H heads; d_inner×d_state: one) and the work
the recurrence needs: each token written into the largest state and read
from it (2 FLOPs per element each), once into any smaller state (a
normalizer).  Each token reaches every earlier one through the state:
linear, causal.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import sympy
import torch
import torch.fx as fx

from ..expr import B, N, value_at
from ..patterns.formulas import formula
from ..paths import enclosing, layer_or_path
from ..rules.flops import node_flops
from ..rules.ops import is_view, op_name, packet
from .graph import is_product
from .linear import _contraction
from .site import AttentionSite

aten = torch.ops.aten

#: Longest loop body (ops per position) looked for.
MAX_PERIOD = 512
#: Positions a loop may run fewer times than the length (a first step written apart).
SHORT_BY = 2


def find_recurrent(ctx, used: set[str]) -> list[AttentionSite]:
    """One site per loop over the positions of a trace at one fixed length."""
    n = _fixed_length(ctx.traced)
    if n is None:
        return []
    nodes = [x for x in ctx.traced.nodes if x.op == "call_function" and _makes_tensors(x)]

    def recurrence(start: int, period: int, reps: int):
        body = nodes[start:start + period * reps]
        if any(x.name in used for x in body):
            return None
        states = carried_states(body, period)
        return recurrent_site(ctx, body, states, n, runs_backward(ctx, body, period, reps)) \
            if states else None

    return loop_bodies(ctx.traced, nodes, (max(3, n - SHORT_BY), n), recurrence)


def find_chunk_loops(ctx, used: set[str]) -> list[AttentionSite]:
    """One site per loop over the chunks of the sequence that carries a
    state from one chunk to the next (a chunked delta rule: each repetition
    takes the next piece of the same tensors, reads the state the one
    before it left, and leaves its own)."""
    nodes = [x for x in ctx.traced.nodes if x.op == "call_function" and _makes_tensors(x)]

    def recurrence(start: int, period: int, reps: int):
        body = nodes[start:start + period * reps]
        if any(x.name in used for x in body) or not _walks_pieces(ctx, body, period, reps):
            return None
        states = carried_states(body, period)
        return chunk_loop_site(ctx, body, states, reps, used,
                               runs_backward(ctx, body, period, reps)) if states else None

    return loop_bodies(ctx.traced, nodes, (2, None), recurrence)


def _walks_pieces(ctx, body: list[fx.Node], period: int, reps: int) -> bool:
    """Does repetition r take piece r of one tensor along a sequence axis
    (index r, or the slice from r·L on), the pieces covering the axis?"""
    taken = _pieces_by_repetition(ctx, body, period, reps)
    for key in set.intersection(*(set(t) for t in taken)):
        starts = [t[key] for t in taken]
        step = starts[1] - starts[0]
        if starts[0] != 0 or step <= 0 or starts != [r * step for r in range(reps)]:
            continue
        length = _sequence_axis_length(ctx, *key, step)
        if length is not None and (reps - 1) * step < length <= reps * step:
            return True
    return False


def _pieces_by_repetition(ctx, body: list[fx.Node], period: int, reps: int) -> list[dict]:
    """For each repetition, {(tensor, axis): start} of the pieces it takes."""
    taken: list[dict] = [{} for _ in range(reps)]
    for i, x in enumerate(body):
        piece = _piece_taken(ctx, x)
        if piece is not None:
            taken[i // period].setdefault(piece[:2], piece[2])
    return taken


def runs_backward(ctx, body: list[fx.Node], period: int, reps: int) -> bool:
    """Does the loop walk the sequence from its end back: its pieces taken
    at falling starts (``reversed(range(N))``), or in order from tensors its
    own module flipped along the sequence (``x.flip(1)`` scanned forward)?
    Each token then reaches the later ones, not the earlier.  A sequence
    flipped before the module (a model that reads from the right) is the
    order the module reads: its scan is causal in it."""
    taken = _pieces_by_repetition(ctx, body, period, reps)
    walked = set.intersection(*(set(t) for t in taken)) if taken else set()
    for key in walked:
        starts = [t[key] for t in taken]
        if all(a > b for a, b in zip(starts, starts[1:])):
            return True
    module = enclosing([ctx.traced.module_path(x) for x in body])
    return bool(walked) and all(_flipped_in(ctx, source, module) for source, _ in walked)


def _flipped_in(ctx, source: fx.Node, module: str) -> bool:
    """Is ``source`` made from flipped tensors only, every activation on its
    way back meeting a flip before it leaves ``module`` (through views,
    copies, a pad or a constant put before it, a norm, products of flipped
    tensors)?"""
    stack, seen = [source], set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        path = ctx.traced.module_path(node)
        if node.op != "call_function" or not (module == "" or _inside(path, module)):
            return False
        if packet(node) is aten.flip:
            continue
        inputs = [a for a in node.all_input_nodes if a in ctx.activations]
        if not inputs:
            return False
        stack.extend(inputs)
    return True


def _piece_taken(ctx, x: fx.Node) -> tuple[fx.Node, int, int] | None:
    """(tensor, axis, start) of what ``x`` takes: one index (a select) or a
    slice from a fixed start; None for anything else."""
    if not (isinstance(x.args[0] if x.args else None, fx.Node) and len(x.args) >= 3):
        return None
    if packet(x) is aten.select and isinstance(x.args[2], int):
        return _whole(ctx, x.args[0]), x.args[1], x.args[2]
    if packet(x) is aten.slice and isinstance(x.args[2], int) and \
            ctx.traced.shape(x) != ctx.traced.shape(x.args[0]):
        return _whole(ctx, x.args[0]), x.args[1], x.args[2]
    return None


def _sequence_axis_length(ctx, source: fx.Node, axis: int, step: int) -> int | None:
    """The axis' length at the traced length, where it runs along the
    sequence: its length grows with N, or, in a trace at one length n, it
    is n or the count of chunks before an axis of their positions, the
    sequence padded to whole pieces of ``step`` (positions or chunks)."""
    t = ctx.traced
    shape = t.shape(source)
    if shape is None:
        return None
    n, b = t.seq_len_hint, t.batch_hint
    length = value_at(shape[axis], n, b)
    if N in sympy.sympify(shape[axis]).free_symbols:
        return length
    inner = value_at(shape[axis + 1], n, b) if axis + 1 < len(shape) else 1
    padded = n <= length < n + step or n <= length * inner < n + step * inner
    return length if padded or _chunks_of_sequence(ctx, source, axis) else None


def _chunks_of_sequence(ctx, source: fx.Node, axis: int) -> bool:
    """In a trace at one length n, is ``axis`` of ``source`` as long as the
    count of chunks a view of the same module cut the sequence into (an axis
    n to n + one chunk long, the sequence padded to whole chunks, made
    (chunks, chunk))?  The pieces a loop takes may come from a product over
    the chunks' positions (K·Vᵀ per chunk: torchscale's chunkwise RetNet),
    whose chunk axis no longer sits before an axis of positions.  Sizes are
    read as numbers only (a symbolic size is never compared: that would add
    a guard to the trace)."""
    sizes = ctx.number_sizes(source)
    return sizes is not None and \
        (ctx.traced.module_path(source), sizes[axis]) in ctx.sequence_cuts


def _fixed_length(traced) -> int | None:
    """The length of a trace that fixed N (a loop over it can be unrolled), else None."""
    lo, hi = traced.n_range
    n = traced.seq_len_hint
    return n if lo == hi == n and n >= 4 else None


def loop_bodies(traced, nodes: list[fx.Node], reps: tuple[int, int | None],
                accept: Callable) -> list:
    """``accept(start, period, repetitions)`` of each stretch of ``nodes``
    whose (op, module) sequence repeats a number of times in ``reps`` (about
    once per position of a fixed length: a stack of many layers repeats
    too, but not n times at every n), where it is not None; the shortest
    period first claims its stretch."""
    min_reps, max_reps = reps[0], reps[1] or len(nodes)
    ids: dict[tuple, int] = {}
    keys = np.array([ids.setdefault((op_name(x), traced.module_path(x)), len(ids))
                     for x in nodes], dtype=np.int64)
    claimed = np.zeros(len(keys), dtype=bool)
    out = []
    for p in range(1, min(MAX_PERIOD, len(keys) // min_reps) + 1):
        same = np.concatenate([[False], keys[:-p] == keys[p:], [False]])
        edges = np.flatnonzero(np.diff(same.astype(np.int8)))
        for i, j in zip(edges[::2], edges[1::2]):
            reps = (j - i + p) // p
            if min_reps <= reps <= max_reps and not claimed[i:i + reps * p].any():
                got = accept(int(i), p, int(reps))
                if got is not None:
                    out.append(got)
                    claimed[i:i + reps * p] = True
    return out


def carried_states(body: list[fx.Node], period: int) -> list[fx.Node]:
    """Values of one repetition that the next one reads (one per distinct
    shape), taken from the middle repetition (the first of two); [] when
    no repetition reads the one before it (a run of like ops, not a
    recurrence)."""
    if all(is_view(x) for x in body[:period]):
        return []  # a chain of views (unsqueezes) computes nothing
    step = {x: i // period for i, x in enumerate(body)}
    middle = (len(body) // period - 1) // 2
    carried: dict[str, fx.Node] = {}
    for x in body[middle * period:(middle + 1) * period]:
        for user in x.users:
            if step.get(user) == middle + 1:
                shape = str(list(getattr(x.meta.get("val"), "shape", ())))
                carried.setdefault(shape, x)
    return list(carried.values())


def state_dims(traced, node: fx.Node) -> list[int]:
    """The state's dims without its batch dim and size-1 dims."""
    shape = traced.shape(node) or ()
    batch = traced.batch_hint
    dims, batch_seen = [], False
    for d in shape:
        d = sympy.sympify(d)
        if not batch_seen and (B in d.free_symbols or d == batch):
            batch_seen = True
            continue
        if d.is_Integer and int(d) > 1:
            dims.append(int(d))
    return dims


def recurrent_site(ctx, body: list[fx.Node], states: list[fx.Node], n: int,
                   backward: bool = False) -> AttentionSite:
    """The site of one loop: its FLOPs at this length, heads and state from
    the largest carried state, and the work the recurrence needs.  A loop
    that runs ``backward`` is not causal: each token reaches the later ones."""
    t = ctx.traced
    dims = {s: state_dims(t, s) for s in states}
    main = max(states, key=lambda s: int(np.prod(dims[s] or [1])))
    shape = dims[main] or [1]
    heads = shape[0] if len(shape) >= 3 else 1
    head_dim, feature = shape[-1], (shape[-2] if len(shape) >= 2 else shape[-1])
    flops = sympy.expand(sum((node_flops(t, x, ctx.flop_rules) for x in body), sympy.Integer(0)))
    per_token = sum((4 if s is main else 2) * int(np.prod(dims[s] or [1])) for s in states)
    batch = B if any(B in sympy.sympify(d).free_symbols for d in t.shape(main) or ()) \
        else t.batch_hint
    useful = batch * n * per_token
    name = enclosing([t.module_path(x) for x in body]) or "<root>"
    notes = [f"state {'×'.join(map(str, shape))} per sequence, carried from token to token"]
    if backward:
        notes.append(_BACKWARD)
    return AttentionSite(
        name=name, layer=layer_or_path(name), variant="linear", implementation="recurrent",
        causal=not backward, heads=heads, kv_heads=heads, head_dim=head_dim, window=None,
        query_len=sympy.Integer(n), key_len=sympy.Integer(n), flops=flops,
        useful_flops=sympy.sympify(useful), complexity=formula("linear").complexity,
        feature_dim=feature, formula="linear", mask=None, nodes=[x.name for x in body],
        notes=notes)


#: The note of a loop from the last position back.
_BACKWARD = ("the loop runs from the last position back: each token reaches the later ones "
             "(with a forward loop beside it, the layer sees both ways)")


def _whole(ctx, node: fx.Node) -> fx.Node:
    """The tensor a slice that keeps all of it (``x[:, :]``) was taken from."""
    while packet(node) is aten.slice and isinstance(node.args[0], fx.Node) and \
            ctx.traced.shape(node) == ctx.traced.shape(node.args[0]):
        node = node.args[0]
    return node


def chunk_loop_site(ctx, body: list[fx.Node], states: list[fx.Node], chunks: int,
                    used: set[str], backward: bool = False) -> AttentionSite:
    """The site of a loop over chunks: the loop's work and that of the
    module's other products of activations (each chunk's own scores, made
    before the loop), and, as for a loop over the positions, each token
    written into the state and read from it."""
    t = ctx.traced
    n = t.seq_len_hint
    site = recurrent_site(ctx, body, states, n, backward)
    module = site.name
    inside = set(body)
    extra = [x for x in t.nodes if is_product(x) and x not in inside and x.name not in used
             and _inside(t.module_path(x), module) and _contraction(ctx, x) is not None]
    site.flops = sympy.expand(site.flops + sum((node_flops(t, x, ctx.flop_rules) for x in extra),
                                               sympy.Integer(0)))
    length = N if t.replacements else sympy.Integer(n)
    site.useful_flops = sympy.expand(site.useful_flops / n * length)
    site.query_len = site.key_len = length
    site.nodes = sorted(site.nodes + [x.name for x in extra],
                        key=lambda name: ctx.order[ctx.node(name)])
    site.notes = [note.replace("from token to token", f"from chunk to chunk ({chunks} chunks "
                               f"at N={n:,})") for note in site.notes]
    return site


def _inside(path: str | None, module: str) -> bool:
    """Is ``path`` the module or one of its submodules (not a sibling whose
    name starts alike: layers.1 and layers.10)?"""
    return bool(path) and (path == module or path.startswith(module + "."))


def _makes_tensors(node: fx.Node) -> bool:
    """Ops on tensors; size reads come and go between repetitions."""
    val = node.meta.get("val")
    return isinstance(val, torch.Tensor) or (
        isinstance(val, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in val))
