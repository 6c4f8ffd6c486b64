"""Prefix-scan (causal linear) attention: a product of two activations
whose results are summed along the sequence by a cumulative sum (kᵀv per
position or per chunk, then ``cumsum``), and a product that applies the
running state to the queries.  Each query reaches every earlier key through
the scan, in time linear in N: causal linear attention, chunked or not.
Other products of activations in the same module (a chunk's own scores)
join the site."""
from __future__ import annotations

import sympy
import torch
import torch.fx as fx

from ..expr import N
from ..rules.ops import getitem, is_view, packet
from .graph import SCORE_OPS, is_product
from .linear import _contraction, _has_n, linear_site
from .site import AttentionSite

aten = torch.ops.aten

#: Ops a running state may pass through between the scan and its use.
_STATE_OPS = frozenset({aten.cat, aten.slice, aten.zeros_like, aten.add, aten.sub, aten.mul,
                        aten.div, aten._to_copy, aten.clone, aten.contiguous})


def find_scans(ctx, used: set[str]) -> list[AttentionSite]:
    found = []
    for node in ctx.traced.nodes:
        if node.op == "call_function" and packet(node) is aten.cumsum:
            site = read_scan(ctx, node, used)
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


def _consumer(ctx, scan: fx.Node, limit: int = 8) -> fx.Node | None:
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
