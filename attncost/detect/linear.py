"""Kernelized (linear) attention: a product that sums over the sequence into
a state with no N (phi(K)ᵀV), then a product that applies that state to
every query (phi(Q)·state).  Normalizers of the same module join the site."""
from __future__ import annotations

import sympy
import torch.fx as fx

from ..expr import B, N, as_int, settled, simplified
from ..patterns.classify import classify_linear, matches_formula
from ..patterns.formulas import formula
from ..paths import layer_or_path
from ..rules.flops import node_flops
from ..rules.ops import MATMUL_OPS, is_view, packet
from .graph import SCORE_OPS, is_product, split_rows
from .heads import heads_and_queries, projection_heads
from .site import AttentionSite


def find_linear(ctx, used: set[str]) -> list[AttentionSite]:
    found = []
    for node in ctx.traced.nodes:
        if is_product(node) and node.name not in used:
            site = read_linear(ctx, node, used)
            if site is not None:
                found.append(site)
                used.update(site.nodes)
    return found


def _contraction(ctx, mm: fx.Node) -> sympy.Expr | None:
    """Contraction length of a product of two activations (None: a layer)."""
    a, b = ctx.product_operands(mm)
    if ctx.is_weight(a) or ctx.is_weight(b):
        return None
    shape = ctx.traced.shape(a)
    return sympy.sympify(shape[-1]) if shape else None


def _has_n(exprs) -> bool:
    return any(N in sympy.sympify(x).free_symbols for x in exprs)


def read_linear(ctx, state_mm: fx.Node, used: set[str]) -> AttentionSite | None:
    t = ctx.traced
    k_len, out = _contraction(ctx, state_mm), t.shape(state_mm)
    if k_len is None or out is None or _has_n(out):
        return None
    tokens = _tokens_at_one_length(ctx, k_len, out)
    if N not in k_len.free_symbols and tokens is None:
        return None
    apply_mm = _state_consumer(ctx, state_mm, tokens)
    if apply_mm is None:
        return None
    if _contraction(ctx, apply_mm) is None or t.shape(apply_mm) is None:
        return None
    return linear_site(ctx, state_mm, apply_mm, [], used, "einsum", k_len)


def linear_site(ctx, state: fx.Node, apply: fx.Node, extra: list[fx.Node], used: set[str],
                implementation: str, key_len) -> AttentionSite:
    """A linear-time site from the product that builds the state and the one
    that applies it to the queries; the module's other products of
    activations (normalizers, a chunk's own scores) join it.  A prefix-sum
    site ("scan") is causal and needs what its two products compute, the
    states built and applied, 4·B·H·N·r·d_v: a chunked scan's scores within
    each chunk (half of them masked) are its way of computing the same."""
    t = ctx.traced
    out = _a_row_per_token(t.shape(apply), key_len)
    r, d = as_int(_contraction(ctx, apply)) or 0, as_int(out[-1]) or 0
    heads, n_q = _heads_and_queries(ctx, apply, out, key_len)
    module = t.module_path(apply)
    site_nodes = [state, apply] + [
        node for node in t.nodes
        if is_product(node) and node not in (state, apply) and node.name not in used
        and t.module_path(node) == module and _contraction(ctx, node) is not None]
    flops = sympy.expand(sum((node_flops(t, n, ctx.flop_rules) for n in site_nodes),
                             sympy.Integer(0)))
    values, useful = classify_linear(heads, n_q, r, d)
    scan = implementation == "scan"
    if scan:
        useful = sympy.expand(node_flops(t, state, ctx.flop_rules)
                              + node_flops(t, apply, ctx.flop_rules))
    else:  # no mask drops a pair: all its products compute is needed (a state
        useful = flops  # the heads share is built once, not once per head)
    name = module or "<root>"
    return AttentionSite(
        name=name, layer=layer_or_path(name), variant="linear", implementation=implementation,
        causal=scan, heads=heads, kv_heads=heads, head_dim=d, window=None, query_len=n_q,
        key_len=key_len if key_len is not None else n_q, flops=flops,
        useful_flops=useful, complexity=formula("linear").complexity,
        mask=None, nodes=[n.name for n in sorted(site_nodes + extra, key=ctx.order.__getitem__)],
        feature_dim=r, formula="linear", matches_formula=matches_formula(flops, "linear", values))


def _a_row_per_token(out, key_len) -> tuple:
    """The shape of what a state applied to the queries gives, read as a
    row per token.  A state applied from the left (S·φ(Q) with the tokens
    as columns: Sana's ``b h d n``) gives the transpose; the tokens are the
    axis that runs along the sequence (at one length: as long as the keys)."""
    if len(out) < 2:
        return tuple(out)
    if _has_n(out):
        along = lambda x: _has_n([x])  # noqa: E731
    else:
        along = lambda x: key_len is not None and simplified(x - key_len) == 0  # noqa: E731
    if along(out[-1]) and not along(out[-2]):
        return (*out[:-2], out[-1], out[-2])
    return tuple(out)


def _tokens_at_one_length(ctx, k_len, out) -> int | None:
    """In a trace at one length (every size a number), the tokens a product
    sums over into a state: a contraction longer than both of the state's
    axes (features × features, as kernelized attention's φ(K)ᵀV is; Q·Kᵀ
    contracts the features, P·V keeps the queries).  None otherwise."""
    lo, hi = ctx.traced.n_range
    length, sizes = as_int(k_len), [as_int(x) for x in out[-2:]]
    if lo != hi or not length or len(sizes) < 2 or \
            not all(sizes) or length <= max(sizes):
        return None
    return length


def _heads_and_queries(ctx, apply: fx.Node, out, key_len) -> tuple[int, sympy.Expr]:
    """Heads and queries of the rows a state is applied to.  In a trace at
    one length the rows tell them apart by shape; rows that merge heads
    and tokens into one axis (a lambda layer's queries, ``b h k n``, against
    one state the heads share) split as the queries' projection says, or
    into as many queries as keys where that divides them."""
    if not _has_n(out):
        return heads_and_queries(ctx, out, len(out) - 1)
    heads, n_q = split_rows(sympy.Mul(*out[:-1]))
    if key_len is None or not _has_n([key_len]) or simplified(n_q - key_len) == 0:
        return heads, n_q
    per_batch = settled(simplified(sympy.Mul(*out[:-1]) / B))
    q_operand = next((o for o in ctx.product_operands(apply)
                      if _has_n(ctx.traced.shape(o) or ())), None)
    for split in (projection_heads(ctx, q_operand) if q_operand is not None else None,
                  as_int(simplified(per_batch / key_len))):
        if split and split > 0 and as_int(sympy.factor(per_batch).as_coeff_Mul()[0]) % split == 0:
            return split, settled(simplified(per_batch / split))
    return heads, n_q


def _state_consumer(ctx, state_mm: fx.Node, tokens: int | None = None,
                    limit: int = 16) -> fx.Node | None:
    """The product that applies a sequence-free state to every query: its
    output runs along the sequence (at one length, a row per token)."""
    frontier = [state_mm]
    for _ in range(limit):
        nxt = []
        for node in frontier:
            for user in node.users:
                if packet(user) in MATMUL_OPS:
                    out = ctx.traced.shape(user)
                    if out and (_has_n(out) if tokens is None else
                                tokens in (as_int(x) for x in out[-2:])):
                        return user
                    continue
                if is_view(user) or packet(user) in SCORE_OPS:
                    nxt.append(user)
        frontier = nxt
    return None
