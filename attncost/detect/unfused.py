"""Unfused attention: the chain ``Q·Kᵀ -> (scale, mask, bias) -> softmax over
keys -> ·V``: a product of two activations whose output, through
elementwise ops only, is the input of a softmax taken over the axis that
the next product contracts.  The masks met on the way name the pattern.
Scores or weights mixed across heads on the way keep their pairs; one
factor may be a learned query where the softmax runs over the sequence and
its weights sum the tokens (attention pooling)."""
from __future__ import annotations

import functools
import weakref

import sympy
import torch
import torch.fx as fx

from ..expr import B, N, as_int, settled, simplified, value_at
from ..patterns import MaskPattern
from ..rules.flops import node_flops
from ..rules.ops import BIASED_MATMUL_OPS, GATHER_OPS, MATMUL_OPS, SOFTMAX_OPS, getitem, is_view, \
    is_function_of_one, \
    packet
from . import masks
from .axes import follow_axes
from .concatenated import read_concatenated
from .positions import counted_positions, pattern_of_positions, pattern_of_values
from .graph import INDEX_PUTS, PROB_OPS, SCORE_OPS, adds_constant, copied_into, is_product, tensor_inputs, \
    views_and_writes
from .heads import heads_and_queries, heads_mixed, pairs_convolved
from .site import AttentionSite, SiteShape, build_sites, content_based

aten = torch.ops.aten


def find_unfused(ctx, used: set[str]) -> list[AttentionSite]:
    found = []
    for node in ctx.traced.nodes:
        if node.op == "call_function" and softmax_of(node) is not None:
            found.extend(read_unfused(ctx, node, *softmax_of(node)) or
                         read_concatenated(ctx, node, *softmax_of(node)))
    return found


#: Elementwise functions that weigh scores in place of a softmax: exp with
#: the normalizer applied after ·V (a running sum, levels combined), and the
#: squared ReLU of gated attention units; what may follow them before ·V.
WEIGHING_OPS = frozenset(getattr(aten, n) for n in (
    "exp", "relu", "sigmoid", "elu", "gelu", "silu", "softplus") if hasattr(aten, n))
_AFTER_WEIGHING = frozenset(getattr(aten, n) for n in ("pow", "square", "relu", "exp")
                            if hasattr(aten, n))
#: Reductions over the keys subtracted from the scores to keep exp finite.
_STABILIZERS = frozenset(getattr(aten, n) for n in ("amax", "max", "logsumexp")
                         if hasattr(aten, n))


def find_weighed(ctx, used: set[str]) -> list[AttentionSite]:
    """Attention whose scores are weighed by an elementwise function instead
    of a softmax op (``exp(S - max S)``, ``relu(S)**2``): the same chain,
    Q·Kᵀ -> that function -> ·V, read as the softmax's is.  A chunked
    linear form's products of Q and K are weighed by nothing: they stay for
    the linear recognisers."""
    found = []
    for node in ctx.traced.nodes:
        if node.op != "call_function" or packet(node) not in WEIGHING_OPS or \
                node.name in used or not isinstance(node.args[0], fx.Node):
            continue
        sites = read_unfused(ctx, node, _unstabilized(node.args[0]), -1)
        if not any(n in used for s in sites for n in s.nodes):
            found.extend(sites)
    return found


def find_unweighed(ctx, used: set[str]) -> list[AttentionSite]:
    """Scores applied to V with no softmax or other weighing function: a
    retention's decay (Q·Kᵀ ⊙ D)·V, a Taylor polynomial of the scores, a
    mask; their parallel forms cost N_q·N_k like any scores.  Runs last:
    the linear recognisers claim the chunked forms' products first."""
    found = []
    for node in ctx.traced.nodes:
        if node.op != "call_function" or packet(node) not in MATMUL_OPS or node.name in used:
            continue
        weights = _unweighed_weights(ctx, node)
        if weights is None:
            continue
        ctx.unweighed[weights] = node
        sites = read_unfused(ctx, weights, weights, -1)
        if sites and not any(n in used for s in sites for n in s.nodes):
            found.extend(sites)
            used.update(n for s in sites for n in s.nodes)
    return found


def _unweighed_weights(ctx, pv: fx.Node) -> fx.Node | None:
    """The factor of ``pv`` that scores reach through score ops only (a
    decay, a polynomial, a mask: its last op before the product), when
    those scores are a product of two projections of the input; else None."""
    first = 1 if packet(pv) in BIASED_MATMUL_OPS else 0
    for factor in pv.args[first:first + 2]:
        if not isinstance(factor, fx.Node) or packet(factor) in MATMUL_OPS:
            continue
        qk, _, _ = _walk_back(factor, ctx)
        if qk is None:
            continue
        operands = ctx.product_operands(qk)
        # scores multiply two activations (a product with a weight is a layer)
        if not any(ctx.is_weight(o) for o in operands) and \
                all(_projected(ctx, o) for o in operands):
            return factor
    return None


def _projected(ctx, operand: fx.Node) -> bool:
    """Does this operand come from a projection of the input (a product with
    a weight) and from no other product on the way?  Queries and keys do;
    a matrix iterated on (a pseudo-inverse's steps), or the raw input, not."""
    if operand not in ctx.projected:
        ctx.projected[operand] = _search_projection(ctx, operand)
    return ctx.projected[operand]


def _search_projection(ctx, operand: fx.Node) -> bool:
    seen: set[fx.Node] = set()
    stack, projected = [operand], False
    while stack:
        n = stack.pop()
        if not isinstance(n, fx.Node) or n in seen or n.op != "call_function":
            continue
        seen.add(n)
        if packet(n) in MATMUL_OPS:
            if not any(ctx.is_weight(o) for o in ctx.product_operands(n)):
                return False
            projected = True
            continue
        stack.extend(tensor_inputs(n))
    return projected


def _unstabilized(scores: fx.Node) -> fx.Node:
    """``S`` for ``S - max(S)`` (the max over the keys, kept or detached)."""
    if packet(scores) is not aten.sub or not isinstance(scores.args[1], fx.Node):
        return scores
    reduced = scores.args[1]
    while reduced.op == "call_function" and (is_view(reduced) or reduced.target is getitem or
                                             packet(reduced) in (aten.detach, aten.alias)):
        reduced = reduced.args[0]
    if packet(reduced) in _STABILIZERS and reduced.args[0] is scores.args[0]:
        return scores.args[0]
    return scores


def softmax_of(node: fx.Node) -> tuple[fx.Node, int] | None:
    """(scores, axis) when ``node`` is a softmax: the op, or written out as
    exp(scores - logsumexp(scores)) (Reformer); else None."""
    if packet(node) in SOFTMAX_OPS:
        return node.args[0], node.args[1] if len(node.args) > 1 else -1
    if packet(node) is not aten.exp or not isinstance(node.args[0], fx.Node):
        return None
    sub = node.args[0]
    if packet(sub) is not aten.sub or len(sub.args) < 2 or not isinstance(sub.args[1], fx.Node):
        return None
    norm = sub.args[1]
    if packet(norm) is not aten.logsumexp or norm.args[0] is not sub.args[0]:
        return None
    dims = norm.args[1] if len(norm.args) > 1 else [-1]
    return (sub.args[0], dims[0]) if len(dims) == 1 else None


def read_unfused(ctx, softmax: fx.Node, scores: fx.Node, axis: int) -> list[AttentionSite]:
    """The site this softmax (or the function that weighs the ``scores`` in
    its place) belongs to: one per group of heads that let different pairs
    through, or none."""
    t = ctx.traced
    shape = t.shape(softmax)
    if shape is None or len(shape) < 2:
        return []
    dim = axis % len(shape)
    layout = _score_layout(ctx, _sink_free(t, scores, dim))
    if layout is not None and dim not in layout:
        return []  # a softmax over the heads or the batch
    over_queries = dim == (layout[0] if layout else len(shape) - 2)  # queries compete
    keys_first = over_queries and _sums_values_over(ctx, softmax, dim) and \
        (_of_two_activations(ctx, _sink_free(t, scores, dim)) or
         _pools_tokens(ctx, scores, shape[dim], softmax))
    if keys_first:  # K·Qᵀ: the rows the softmax runs over are the keys
        layout = (layout[1], layout[0]) if layout else (len(shape) - 1, len(shape) - 2)
        over_queries = False
    dim = (layout[1] if layout else len(shape) - 1) if over_queries else dim
    scores = _sink_free(t, scores, dim)
    n_keys = settled(t.shape(scores)[dim])
    qk, mask_inputs, score_path = _walk_back(scores, ctx)
    if qk is None:
        return []
    if layout is not None and layout != (len(shape) - 2, len(shape) - 1):
        shape, dim = _queries_and_keys_last(shape, layout), len(shape) - 1
        _note_mask_layouts(ctx, qk, score_path, mask_inputs, keys_first)
    if packet(qk) is aten.baddbmm and isinstance(qk.args[0], fx.Node):
        # mask + Q·Kᵀ in one op (nn.MultiheadAttention with attn_mask)
        mask_inputs.append((qk.args[0], "additive"))
    operands = _queries_and_keys(ctx, qk, n_keys)
    if operands is None:
        return []
    q_operand, k_operand, pooled = operands
    if keys_first and not pooled:
        q_operand, k_operand = k_operand, q_operand
    # The softmax must be over the keys: the axis the Q·Kᵀ product produced
    # (or, pooling, the tokens its learned queries met), or the keys of
    # fixed windows the scores were padded into on the way.
    if dim != len(shape) - 1 or (simplified(settled(t.shape(qk)[-2 if keys_first else -1])
                                            - n_keys) != 0
                                 and not pooled and not _relaid(n_keys, score_path)):
        return []
    applied = _applied(ctx, softmax, n_keys, pooled)
    if applied is None:
        return []
    pv, prob_path, p_side, p_operand, v_operand = applied
    heads, n_q = heads_and_queries(ctx, shape, dim, q_operand)
    if any(k != heads for k in _heads_mixed_sizes(ctx, score_path + prob_path)):
        return []  # a learned matrix over another axis than the heads
    weights = softmax
    if softmax in ctx.unweighed:  # nothing weighs the scores: a factor 0 blocks
        mask_inputs += _scaled(score_path, softmax)
    if packet(softmax) in WEIGHING_OPS:  # its masks may follow it: read at ·V
        mask_inputs += _zeroed(prob_path)
        weights = p_operand
        ctx.weighed_by[p_operand] = softmax
    ratio = as_int(ctx.expand_ratio(k_operand)) or 1
    kv_heads = heads // ratio if ratio > 1 and heads % ratio == 0 else heads
    kv_heads = min(kv_heads, _key_heads(t, k_operand, n_keys, ratio, n_q) or kv_heads)
    terms = _score_terms(ctx, qk, mask_inputs) + [n for n in score_path
                                                  if pairs_convolved(ctx, n) is not None]
    term_flops = sum((node_flops(t, x, ctx.flop_rules) for x in terms), sympy.Integer(0))
    flops = sympy.expand(node_flops(t, qk, ctx.flop_rules) + node_flops(t, pv, ctx.flop_rules)
                         + term_flops)
    relaid = (pv, v_operand) if _relaid(n_keys, score_path + prob_path) else None
    pattern = _site_pattern(ctx, (qk, weights, q_operand, k_operand), mask_inputs, n_keys, heads,
                            n_q, relaid)
    pattern.content = content_based(ctx, (q_operand, k_operand), [m for m, _ in mask_inputs])
    width = settled(t.shape(ctx.product_operands(qk)[0])[-1])  # the axis Q·Kᵀ contracts
    if _across_sequence(width, n_q, n_keys):  # features × features, tokens contracted
        site_shape = SiteShape("cross-covariance", heads, kv_heads, as_int(n_keys) or 0,
                               width, width, flops, as_int(n_keys))
    else:
        site_shape = SiteShape(_implementation(ctx, (q_operand, k_operand), n_keys, pattern,
                                               kv_heads),
                               heads, kv_heads, as_int(width) or 0, n_q, n_keys, flops,
                               _value_width(t, (softmax, p_operand, pv), p_side, prob_path),
                               score_term_width=_width_per_pair(term_flops, heads, n_q, n_keys))
    sites = build_sites(ctx, softmax, site_shape, pattern,
                        nodes=[*terms, qk, *score_path, softmax, *prob_path, pv])
    for site in sites:
        site.block_masks = list(mask_inputs)
        if over_queries:
            site.notes.append(_OVER_QUERIES)
    return sites


#: The note of a softmax taken over the queries, not the keys.
_OVER_QUERIES = ("softmax over the queries: they compete for each key (slot attention, "
                 "inverted cross-attention); the weights then meet the values over the keys")


def _score_layout(ctx, scores: fx.Node) -> tuple[int, int] | None:
    """(queries axis, keys axis) of ``scores``, followed from Q·Kᵀ's last two
    (axes.follow_axes); None where they cannot be followed."""
    qk, _, path = _walk_back(scores, ctx)
    rank = len(ctx.traced.shape(qk) or ()) if qk is not None else 0
    if rank < 2:
        return None
    return follow_axes(path[::-1], qk, (rank - 2, rank - 1))


def _queries_and_keys_last(shape, layout: tuple[int, int]) -> tuple:
    """``shape`` with its queries and keys axes moved to the end, in that order."""
    rest = [s for i, s in enumerate(shape) if i not in layout]
    return (*rest, shape[layout[0]], shape[layout[1]])


def _note_mask_layouts(ctx, qk: fx.Node, score_path: list[fx.Node], mask_inputs,
                       keys_first: bool = False) -> None:
    """For each mask applied on the way from Q·Kᵀ (K·Qᵀ, ``keys_first``),
    where the scores it meets keep their queries and keys (ctx.mask_layouts,
    read by masks.py)."""
    rank = len(ctx.traced.shape(qk))
    forward = score_path[::-1]
    for mask, _ in mask_inputs:
        at = next((i for i, node in enumerate(forward) if mask in node.all_input_nodes), None)
        axes = follow_axes(forward[:at + 1], qk, (rank - 2, rank - 1)) if at is not None else None
        if axes is not None:
            ctx.mask_layouts[mask] = (len(ctx.traced.shape(forward[at])),
                                      *(axes[::-1] if keys_first else axes))


def _of_two_activations(ctx, scores: fx.Node) -> bool:
    """Are the scores a product of two activations (K·Qᵀ, not K's own
    softmax over the sequence in linear attention, nor learned queries)?"""
    qk = _walk_back(scores, ctx)[0]
    return qk is not None and not any(ctx.is_weight(x) for x in ctx.product_operands(qk))


def _pools_tokens(ctx, scores: fx.Node, rows, softmax: fx.Node) -> bool:
    """Are the scores learned queries met by the tokens, laid out with the
    tokens first ((b, n, h): Fastformer's additive attention), the rows the
    softmax runs over being the tokens, each query's weights summing the
    values alone (a row of one in the product that applies them)?  Linear
    attention's softmax of K over the sequence is no pooling: its weights
    meet the values with a row per feature, a state for the queries."""
    qk = _walk_back(scores, ctx)[0]
    if qk is None or not any(ctx.is_weight(x) for x in ctx.product_operands(qk)) or \
            N not in sympy.sympify(settled(rows)).free_symbols:
        return False
    pv, _, p_side = walk_forward(ctx, softmax)
    p_shape = ctx.traced.shape(ctx.product_operands(pv)[p_side]) if pv is not None else None
    return p_shape is not None and len(p_shape) >= 2 and \
        as_int(p_shape[-2 if p_side == 0 else -1]) == 1


def _sums_values_over(ctx, softmax: fx.Node, dim: int) -> bool:
    """Do the weights meet the values over the axis the softmax normalised?
    Then that axis holds the keys, whatever the product's order (K·Qᵀ with
    its softmax over the rows); slot attention normalises over the queries
    and sums the values over the other axis."""
    pv, prob_path, p_side = walk_forward(ctx, softmax)
    if pv is None:
        return False
    axes = follow_axes(prob_path, softmax, (dim,))
    rank = len(ctx.traced.shape(prob_path[-1] if prob_path else softmax) or ())
    return axes is not None and axes[0] == (rank - 1 if p_side == 0 else rank - 2)


def _queries_and_keys(ctx, qk: fx.Node, n_keys):
    """(Q, K, pooled) of the scores' product.  Scores multiply two
    activations; a product with a weight is a layer, unless the weight is
    a learned query over the tokens (attention pooling: PatchMerger's
    queries, CCT's SeqPool), told by what follows: the softmax runs over
    the sequence, and (``_applied``) its weights sum activations over it.
    A router's softmax runs over its experts.  None for a layer."""
    a, b = ctx.product_operands(qk)
    learned = ctx.is_weight(a), ctx.is_weight(b)
    if not any(learned):
        return a, b, False
    tokens = b if learned[0] else a
    shape = ctx.traced.shape(tokens)
    if all(learned) or shape is None or N not in sympy.sympify(n_keys).free_symbols or \
            N not in sympy.Mul(*shape).free_symbols:
        return None
    return (a if learned[0] else b), tokens, True


def _applied(ctx, softmax: fx.Node, n_keys, pooled: bool):
    """(P·V, the ops on the way, the weights' side, P, V) where the weights
    are applied to values over the keys: the weights' last axis on the
    left, their next-to-last on the right (V_windows @ weightsᵀ); or, where
    the weights of fixed windows were padded into another layout on the way
    (Longformer's diagonals), the keys of that layout.  Values are
    activations, never a weight; pooled, they are the tokens themselves."""
    pv, prob_path, p_side = walk_forward(ctx, softmax)
    if pv is None:
        return None
    operands = ctx.product_operands(pv)
    p_operand, v_operand = operands[p_side], operands[1 - p_side]
    p_shape = ctx.traced.shape(p_operand)
    if ctx.is_weight(v_operand) or p_shape is None or \
            (pooled and v_operand not in ctx.activations):
        return None
    contracted = settled(p_shape[-1 if p_side == 0 else -2])
    if simplified(contracted - n_keys) != 0 and not _relaid(n_keys, prob_path):
        return None
    return pv, prob_path, p_side, p_operand, v_operand


def _score_terms(ctx, qk: fx.Node, mask_inputs, limit: int = 192) -> list[fx.Node]:
    """Other products added to the scores in the same module (DeBERTa's
    disentangled terms: the queries against relative position keys, the
    keys against position queries, gathered to N×N; Transformer-XL's
    queries against position keys cut to the length): part of the scores'
    work, not a mask's."""
    module = ctx.traced.module_path(qk)
    found: list[fx.Node] = []
    stack = [m for m, kind in mask_inputs if kind == "additive" and isinstance(m, fx.Node)]
    seen: set[fx.Node] = set()
    while stack and len(seen) < limit:
        n = stack.pop()
        if n in seen or n.op != "call_function":
            continue
        seen.add(n)
        if is_product(n):
            if n is not qk and ctx.traced.module_path(n) == module and \
                    not any(_fixed_weight(ctx, o) for o in ctx.product_operands(n)) and \
                    not _depends_on(n, qk):
                found.append(n)
            continue
        stack.extend(n.all_input_nodes)
    return sorted(found, key=ctx.order.__getitem__)


def _fixed_weight(ctx, operand: fx.Node) -> bool:
    """A weight of fixed size: a product with it is a layer.  A weight cut
    to the length (a table of position keys sliced to the keys, as in
    Transformer-XL and Music Transformer's relative attention) is the keys'
    positions: its product with the queries is a term of the scores."""
    if not ctx.is_weight(operand):
        return False
    shape = ctx.traced.shape(operand)
    return shape is None or N not in sympy.Mul(*shape).free_symbols


def _width_per_pair(term_flops, heads: int, n_q, n_keys) -> int:
    """The width the score terms add to each (query, key) pair: their work
    over 2·B·H·N_q·N_k, where that is a whole number (a term over the same
    pairs); 0 where it is not (DeBERTa's terms over relative distances)."""
    if term_flops == 0:
        return 0
    width = sympy.cancel(term_flops / (2 * B * heads * n_q * n_keys))
    return int(width) if width.is_Integer and width > 0 else 0


def _depends_on(node: fx.Node, earlier: fx.Node, limit: int = 256) -> bool:
    """Is ``earlier`` among the values ``node`` is computed from (the scores
    themselves, mixed or scaled and added back, are not another term)?"""
    seen, stack = set(), list(node.all_input_nodes)
    while stack and len(seen) < limit:
        n = stack.pop()
        if n is earlier:
            return True
        if n not in seen:
            seen.add(n)
            stack.extend(n.all_input_nodes)
    return False


def _across_sequence(width, n_q, n_keys) -> bool:
    """Do the scores pair features, not positions: Q·Kᵀ contracts the
    sequence (its width grows with N) while neither side does (XCiT's
    cross-covariance attention, a d×d matrix per head)?"""
    grows = [N in sympy.sympify(x).free_symbols for x in (width, n_q, n_keys)]
    return grows == [True, False, False]


def _sink_free(t, scores: fx.Node, dim: int) -> fx.Node:
    """The scores of a row that ends in logits no key made (``cat([scores,
    sinks], -1)``, GPT-OSS's learned attention sinks, or one projected from
    each query's hidden state, dropped after the softmax): those scores;
    else ``scores`` itself."""
    row = _unstabilized(scores)  # the row less its maximum, taken with the sinks
    if packet(row) is not aten.cat or len(row.args[0]) < 2:
        return scores
    along = row.args[1] if len(row.args) > 1 else row.kwargs.get("dim", 0)
    shape = t.shape(row)
    if shape is None or along % len(shape) != dim:
        return scores
    reaching = [p for p in row.args[0] if _reaches_product(p) and not _one_logit(t, p, dim)]
    return reaching[0] if len(reaching) == 1 else scores


def _one_logit(t, piece: fx.Node, dim: int) -> bool:
    """Is ``piece`` one logit per row (a sink), not scores over keys?"""
    shape = t.shape(piece)
    return shape is not None and len(shape) > dim and as_int(shape[dim]) == 1


def _key_heads(t, k_operand: fx.Node, n_keys, ratio: int, n_q=None) -> int | None:
    """Heads the keys hold: the K operand's elements, before any repeat,
    over B·keys·d (or over B·queries·keys·d, where each query has keys
    picked for it: NSA's selected blocks); one for keys shared
    by every head without a repeat (an einsum of per-head queries with
    head-less keys, multi-query attention)."""
    shape = t.shape(k_operand)
    if shape is None or len(shape) < 2:
        return None
    d = shape[-2] if simplified(settled(shape[-1]) - n_keys) == 0 else shape[-1]
    held = as_int(sympy.Mul(*shape) / ratio / (B * n_keys * d))
    if held is None and n_q is not None:  # keys picked for each query
        held = as_int(simplified(sympy.Mul(*map(settled, shape)) / ratio / (B * n_keys * d * n_q)))
    return held if held is not None and held >= 1 else None


def _scaled(path: list[fx.Node], weights: fx.Node) -> list[tuple[fx.Node, str]]:
    """Tensors multiplied into unweighed scores (a decay with zeros above
    the diagonal): where they are 0, the pair is blocked."""
    found = []
    for n in path + [weights]:
        if packet(n) in (aten.mul, aten.mul_) and len(n.args) == 2 and \
                all(isinstance(a, fx.Node) for a in n.args):
            other = n.args[1] if _reaches_product(n.args[0]) else n.args[0]
            found.append((other, "scale"))
    return found


def _zeroed(path: list[fx.Node]) -> list[tuple[fx.Node, str]]:
    """Masks that zero weights on the way to ·V (``masked_fill(p, m, 0)``)."""
    return [(n.args[1], "masked_fill") for n in path
            if packet(n) in (aten.masked_fill, aten.masked_fill_) and
            isinstance(n.args[1], fx.Node) and n.args[2] == 0]


def _relaid(n_keys, path: list[fx.Node]) -> bool:
    """Were scores or weights over a fixed number of keys padded into
    another layout on ``path`` (Longformer's diagonals)?  Then the axes
    differ in length, and the position probe says which pairs meet."""
    return N not in sympy.sympify(n_keys).free_symbols and \
        any(packet(n) is aten.constant_pad_nd for n in path)


def _site_pattern(ctx, site, mask_inputs, n_keys, heads: int, n_q,
                  relaid: tuple | None = None) -> MaskPattern:
    """What the site lets through: its masks read as N×N, or, when its
    scores are laid out in blocks or windows, the positions it pairs
    (probed; through the values, (P·V, V), where they were ``relaid``),
    or at least the pairs its masks allow, counted."""
    qk, softmax, q_operand, k_operand = site
    if N in sympy.sympify(n_keys).free_symbols:
        pattern = masks.pattern_of(ctx, mask_inputs, heads) if mask_inputs else MaskPattern.full()
        *lead, rows, _ = ctx.traced.shape(softmax)
        blocks = sympy.Mul(*lead)
        if not mask_inputs or N not in sympy.sympify(blocks).free_symbols or \
                len({value_at(rows, n) for n in masks.probe_lengths(ctx)}) > 1:
            return pattern
        # queries in blocks, each over keys that grow with N (its neighbours
        # and a summary of every block): the mask's first matrix is one block
        return masks.windowed_pattern(ctx, pattern, mask_inputs, ctx.traced.shape(softmax),
                                      heads, n_q, n_keys)
    probed = pattern_of_positions(ctx, qk, softmax, q_operand, k_operand, heads)
    if probed is None and relaid is not None:  # diagonals: read through the values
        probed = pattern_of_values(ctx, *relaid, softmax, qk)
    if probed is not None and probed.pairs is None and probed.kind == "pattern":
        # not the same pattern at every length: its pairs counted at several
        probed.pairs = counted_positions(ctx, qk, softmax, q_operand, k_operand, heads)
        pattern = probed
    elif probed is not None:
        return probed
    else:
        pattern = masks.pattern_of(ctx, mask_inputs) if mask_inputs else MaskPattern.full()
    return masks.windowed_pattern(ctx, pattern, mask_inputs, ctx.traced.shape(softmax), heads,
                                  n_q, n_keys)


def _keys_of_every_token(ctx, k_shape, heads: int | None, n_keys) -> bool:
    """In a trace at one length n (every size a number), do the keys hold a
    row for each of the n tokens, per head and batch, each query meeting
    fewer than n of them (the sequence cut into windows of a few keys:
    Swin's), not a context of their own?"""
    t = ctx.traced
    lo, hi = t.n_range
    if t.replacements or lo != hi or not heads or len(k_shape) < 2 or \
            not (as_int(n_keys) or lo) < lo:
        return False
    rows = as_int(sympy.Mul(*k_shape[:-1]))
    return rows is not None and rows == lo * (t.batch_hint or 1) * heads


def _implementation(ctx, operands: tuple[fx.Node, fx.Node], n_keys, pattern: MaskPattern,
                    heads: int | None = None) -> str:
    """How the keys reach the product: cut out by unfold (a window), picked
    by index (blocks), summaries of the whole sequence on one side (low-rank:
    keys projected or pooled along it), the sequence cut into blocks by a
    reshape (each query meets its block's keys), masked (a pattern on the
    full matrix) or all."""
    q_operand, k_operand = operands
    # Keys are picked between the product that made them and this one.
    k_ops = ctx.ancestor_ops(k_operand, through_products=False)
    fixed_keys = N not in sympy.sympify(n_keys).free_symbols
    if aten.unfold in k_ops:
        return "unfold"
    if k_ops & GATHER_OPS and fixed_keys:
        return "gather"
    if any(ctx.summarizes_sequence(o) for o in operands):
        return "low-rank"
    k_shape = ctx.traced.shape(k_operand)
    if fixed_keys and k_shape is not None and (N in sympy.Mul(*k_shape).free_symbols or
                                               _keys_of_every_token(ctx, k_shape, heads, n_keys)):
        return "blocked"
    if pattern.kind in ("pattern", "window"):
        return "masked"
    return "unfused"


def _walk_back(start: fx.Node, ctx=None, limit: int = 16):
    """From the softmax input back to the Q·Kᵀ product, collecting the masks
    and biases applied on the way (with how to read them); given ``ctx``,
    through a product that mixes scores across heads (``heads.heads_mixed``)
    and a convolution over the pairs (``heads.pairs_convolved``)."""
    masks_found: list[tuple[fx.Node, str]] = []
    path: list[fx.Node] = []
    node = start
    for _ in range(limit):
        if not isinstance(node, fx.Node) or node.op != "call_function":
            return None, [], []
        pk = packet(node)
        mixed = heads_mixed(ctx, node) if ctx is not None else None
        if mixed is not None and _reaches_product(mixed[0]):
            path.append(node)  # scores mixed across heads: the pairs kept
            node = mixed[0]
            continue
        convolved = pairs_convolved(ctx, node) if ctx is not None else None
        if convolved is not None and _reaches_product(convolved):
            path.append(node)  # each pair's score from its neighbours'
            node = convolved
            continue
        if pk in MATMUL_OPS:
            return node, masks_found, path
        masks_found += [(w, "additive") for w in views_and_writes(node)[1] if _writes_number(w)]
        if _writes_number(node):  # scores[:, i, j] = -big: the scores as written, a mask
            masks_found.append((node, "additive"))
            path.append(node)
            node = node.args[0]
            continue
        if not (pk in SCORE_OPS or is_view(node) or is_function_of_one(node)):
            written = next((s for s in copied_into(node) if _reaches_product(s)), None)
            if written is None:
                return None, [], []
            path.append(node)
            node = written  # scores copied into slices of a tensor made for them
            continue
        path.append(node)
        node = _score_operand(node, masks_found)
        if node is None:
            return None, [], []
    return None, [], []


def _writes_number(node: fx.Node) -> bool:
    """Does ``node`` write a value that is no score into chosen entries of
    the scores (``scores[:, i, j] = -5e4``, index assignment: Reformer's
    causal and self masks)?  Read as the scores it leaves, weights as zeros:
    the written entries stand out as an additive mask's."""
    return packet(node) in INDEX_PUTS and len(node.args) > 2 and \
        not _reaches_product(node.args[2]) and _reaches_product(node.args[0])


def _score_operand(node: fx.Node, masks_found: list) -> fx.Node | None:
    """The operand of a score op that carries the scores; a mask or bias
    it applies is added to ``masks_found``."""
    pk = packet(node)
    tensor_args = [a for a in node.args if isinstance(a, fx.Node)]
    if pk in (aten.masked_fill, aten.masked_fill_):
        masks_found.append((node.args[1], "masked_fill"))
        return node.args[0]
    if pk is aten.where:
        cond, a, b = node.args[:3]
        on_a = isinstance(a, fx.Node) and _reaches_product(a)
        masks_found.append((cond, "allowed" if on_a else "blocked"))
        return a if on_a else b
    if pk in (aten.add, aten.sub, aten.add_) and len(tensor_args) == 2:
        main, other = _main_operand(tensor_args)
        masks_found.append((other, "additive"))
        return main
    if tensor_args:
        return _main_operand(tensor_args)[0] if len(tensor_args) > 1 else tensor_args[0]
    return None


def _main_operand(args: list[fx.Node]) -> tuple[fx.Node, fx.Node]:
    """Of two operands, the one that carries the scores (reaches Q·Kᵀ)."""
    a, b = args[0], args[1]
    return (a, b) if _reaches_product(a) else (b, a)


#: How many ops back from the scores Q·Kᵀ may be (masks, scales, views, copies).
REACH = 16
_reaches: "weakref.WeakKeyDictionary[fx.Node, bool]" = weakref.WeakKeyDictionary()


def _reaches_product(node: fx.Node) -> bool:
    """Is a product of two tensors at most ``REACH`` score ops, views or
    copies back from ``node``?  Breadth first, each node once, remembered
    per node (the chains of many sites meet in one graph)."""
    if not isinstance(node, fx.Node):
        return False
    if node not in _reaches:
        _reaches[node] = _search_product(node)
    return _reaches[node]


def _search_product(start: fx.Node) -> bool:
    level, seen = [start], {start}
    for _ in range(REACH):
        nxt = []
        for node in level:
            if node.op != "call_function":
                continue
            if packet(node) in MATMUL_OPS:
                return True
            if packet(node) in SCORE_OPS or is_view(node) or is_function_of_one(node):
                sources = [a for a in node.args if isinstance(a, fx.Node)]
            elif packet(node) in INDEX_PUTS:
                sources = node.args[:1]  # entries written into the scores
            else:
                sources = copied_into(node)
            nxt += [s for s in sources if s not in seen]
            seen.update(sources)
        level = nxt
    return False


#: Ops that combine two maps of weights into one.
_COMBINING = frozenset(getattr(aten, n) for n in ("add", "sub", "add_", "sub_") if hasattr(aten, n))


def _value_width(t, nodes: tuple[fx.Node, fx.Node, fx.Node], p_side: int,
                 prob_path: list[fx.Node]):
    """The values' width each head of scores meets: the value heads' own,
    or, where the maps of k heads were combined into one on the way to ·V
    (differential attention's pairs), its k-th share."""
    softmax, p_operand, pv = nodes
    d_v = as_int(t.shape(pv)[-1 if p_side == 0 else -2])
    if not any(packet(n) in _COMBINING for n in prob_path):
        return d_v
    merged = as_int(simplified(sympy.Mul(*t.shape(softmax)) / sympy.Mul(*t.shape(p_operand))))
    if d_v and merged and merged > 1 and d_v % merged == 0:
        return d_v // merged
    return d_v


def _combines_its_weights(node: fx.Node, softmax: fx.Node) -> bool:
    """Does ``node`` add or subtract maps of weights that all come from this
    one softmax (differential attention: one softmax over 2·H heads, each
    pair's second map, scaled by a learned λ, taken from its first)?"""
    if packet(node) not in _COMBINING:
        return False
    others = [a for a in node.args[:2] if isinstance(a, fx.Node)]
    return len(others) == 2 and all(a is softmax or _depends_on(a, softmax, limit=64)
                                    for a in others)


def _heads_mixed_sizes(ctx, path: list[fx.Node]) -> list[int]:
    """The axes mixed on the way between Q·Kᵀ and ·V (``heads.heads_mixed``)."""
    return [m[1] for m in map(functools.partial(heads_mixed, ctx), path) if m is not None]


def walk_forward(ctx, softmax: fx.Node, limit: int = 32):
    """From the softmax to the product that applies it to V: that product,
    the ops on the way (a mixing across heads among them), and which of its
    two factors the weights are."""
    frontier = [(softmax, [])]
    for _ in range(limit):
        nxt = []
        for node, path in frontier:
            for user in node.users:
                pk = packet(user)
                mixed = heads_mixed(ctx, user)
                if mixed is not None and mixed[0] is node:
                    nxt.append((user, path + [user]))
                    continue
                if pk in MATMUL_OPS:
                    first = 1 if pk in BIASED_MATMUL_OPS else 0
                    factors = user.args[first:first + 2]
                    if node in factors:
                        return user, path, factors.index(node)
                    continue
                if pk in PROB_OPS or is_view(user) or user.target is getitem or \
                        adds_constant(ctx, user) or _combines_its_weights(user, softmax) or \
                        (pk in _AFTER_WEIGHING and packet(softmax) in WEIGHING_OPS):
                    nxt.append((user, path + [user]))
        frontier = nxt
        if not frontier:
            break
    return None, [], 0
