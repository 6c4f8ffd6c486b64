"""Prefix-scan (causal linear) attention: a product of two activations
whose results are summed along the sequence by a cumulative sum (kᵀv per
position or per chunk, then ``cumsum``), and a product that applies the
running state to the queries.  Each query reaches every earlier key through
the scan, in time linear in N: causal linear attention, chunked or not.
The states of chunks may instead be passed on by a product with a
lower-triangular chunks × chunks matrix (each chunk's state a decayed sum
of the earlier chunks': Mamba-2's state space duality).  Other products of
activations in the same module (a chunk's own scores) join the site."""
from __future__ import annotations

import sympy
import torch
import torch.fx as fx

from ..expr import N, settled, simplified
from ..rules.ops import getitem, is_view, packet
from .evaluate import CannotEvaluate, evaluate_node
from .graph import SCORE_OPS, is_product
from .positions import PROBE_LENGTHS
from .linear import _contraction, _has_n, linear_site
from .site import AttentionSite

aten = torch.ops.aten

#: Ops a running state may pass through between the scan and its use.
_STATE_OPS = frozenset({aten.cat, aten.slice, aten.zeros_like, aten.add, aten.sub, aten.mul,
                        aten.div, aten._to_copy, aten.clone, aten.contiguous,
                        aten.constant_pad_nd})


def find_scans(ctx, used: set[str]) -> list[AttentionSite]:
    found = []
    for node in ctx.traced.nodes:
        site = None
        if node.op == "call_function" and packet(node) is aten.cumsum:
            site = read_scan(ctx, node, used)
        elif is_product(node) and node.name not in used:
            site = read_chunk_scan(ctx, node, used)
        if site is not None:
            found.append(site)
            used.update(site.nodes)
    return found


def _scans_the_sequence(ctx, scan: fx.Node) -> bool:
    shape = ctx.traced.shape(scan)
    dim = scan.args[1] if len(scan.args) > 1 else scan.kwargs.get("dim", 0)
    return shape is not None and N in sympy.sympify(shape[dim % len(shape)]).free_symbols


def _outer_product(ctx, node: fx.Node) -> bool:
    """An elementwise product of two activations that broadcast against
    each other into a larger state (k ⊗ v per position, as einsum writes it)."""
    args = [a for a in node.args if isinstance(a, fx.Node)]
    if packet(node) is not aten.mul or len(args) != 2 or any(ctx.is_weight(a) for a in args):
        return False
    shapes = [ctx.traced.shape(a) for a in args]
    out = ctx.traced.shape(node)
    return None not in shapes and out is not None and all(
        sympy.Mul(*s) != sympy.Mul(*out) for s in shapes)


def _producer(ctx, node, limit: int = 8) -> fx.Node | None:
    """The product of two activations the scanned values come from."""
    for _ in range(limit):
        if not isinstance(node, fx.Node) or node.op != "call_function":
            return None
        if is_product(node):
            return node if _contraction(ctx, node) is not None else None
        if _outer_product(ctx, node):
            return node
        if not (is_view(node) or packet(node) in SCORE_OPS):
            return None
        node = node.args[0]
    return None


def _consumer(ctx, scan: fx.Node, limit: int = 16) -> fx.Node | None:
    """The product that applies the running state to the queries."""
    frontier = [scan]
    for _ in range(limit):
        nxt = []
        for node in frontier:
            for user in node.users:
                if is_product(user):
                    out = ctx.traced.shape(user)
                    if out and _has_n(out) and _contraction(ctx, user) is not None:
                        return user
                elif is_view(user) or packet(user) in _STATE_OPS or user.target is getitem:
                    nxt.append(user)
        frontier = nxt
    return None


def read_scan(ctx, scan: fx.Node, used: set[str]) -> AttentionSite | None:
    if not _scans_the_sequence(ctx, scan):
        return None
    state, apply = _producer(ctx, scan.args[0]), _consumer(ctx, scan)
    if state is None or apply is None or state.name in used or apply.name in used:
        return None
    return linear_site(ctx, state, apply, [scan], used, "scan", None)


def read_chunk_scan(ctx, passing: fx.Node, used: set[str]) -> AttentionSite | None:
    """The site of chunk states passed on by ``passing``, a product of a
    lower-triangular chunks × chunks matrix with per-chunk states (a product
    contracting each chunk's positions), applied to the queries after."""
    operands = ctx.product_operands(passing)
    if any(ctx.is_weight(o) for o in operands):
        return None
    mixing, states = operands
    if not _square_over_chunks(ctx, mixing):
        return None
    state = _chunk_state(ctx, states)
    apply = _consumer(ctx, passing)
    if state is None or apply is None or state.name in used or apply.name in used or \
            not _lower_triangular(ctx, mixing):
        return None
    return linear_site(ctx, state, apply, [passing], used, "scan", None)


def _square_over_chunks(ctx, node: fx.Node) -> bool:
    """A matrix whose two last axes are one length that grows with N."""
    shape = ctx.traced.shape(node)
    if shape is None or len(shape) < 2:
        return False
    rows, cols = (settled(x) for x in shape[-2:])
    return N in cols.free_symbols and simplified(rows - cols) == 0


def _chunk_state(ctx, node, limit: int = 16) -> fx.Node | None:
    """The product of two activations that made per-chunk states: it
    contracts a fixed number of positions and keeps an axis that grows
    with N (the chunks), seen through views, copies and a concatenation
    with an initial state."""
    for _ in range(limit):
        if not isinstance(node, fx.Node) or node.op != "call_function":
            return None
        if is_product(node):
            length, out = _contraction(ctx, node), ctx.traced.shape(node)
            grows = out is not None and any(N in sympy.sympify(x).free_symbols for x in out)
            fixed = length is not None and N not in settled(length).free_symbols
            return node if grows and fixed else None
        if packet(node) is aten.cat:
            node = next((a for a in node.args[0] if isinstance(a, fx.Node) and
                         N in sympy.Mul(*(ctx.traced.shape(a) or ())).free_symbols), None)
            continue
        if not (is_view(node) or packet(node) in _STATE_OPS or node.target is getitem):
            return None
        node = node.args[0]
    return None


def _lower_triangular(ctx, mixing: fx.Node) -> bool:
    """Is the chunks × chunks matrix zero above its diagonal and not below
    (each chunk receives the earlier chunks' states), evaluated at the
    shortest probe length the trace holds for (weights read as zeros)?"""
    lo, hi = ctx.traced.n_range
    for n in sorted(PROBE_LENGTHS):
        if n < lo or (hi is not None and n > hi):
            continue
        try:
            value = torch.as_tensor(evaluate_node(ctx, mixing, n)).float()
        except CannotEvaluate:
            continue
        above = torch.triu(torch.ones(value.shape[-2:], dtype=torch.bool), 1)
        return bool((value[..., above] == 0).all()) and bool((value[..., ~above] != 0).any())
    return False
