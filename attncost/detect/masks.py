"""Read an attention mask off the graph by evaluating it on concrete data.

A mask is whatever the model computes to block scores: ``tril`` of ones, a
comparison of position ranges, a band, a random pattern passed in as data.
Rather than recognise each way of writing it, attncost runs the part of the
graph that builds the mask at a small concrete length and hands the result
to patterns.mask, which names it.
"""
from __future__ import annotations

import torch
import torch.fx as fx
from torch.utils._pytree import tree_flatten

from ..errors import first_line
from ..expr import value_at
from ..patterns.mask import MaskPattern, allowed_pairs, classify_allowed

#: Largest length at which a mask is evaluated (its N×N entries are built).
MAX_EVAL_LEN = 4096


def _eval_len(ctx) -> int:
    lo, hi = ctx.traced.n_range
    n = min(ctx.seq_len, MAX_EVAL_LEN)
    n = max(n, lo, 2)
    if hi is not None:
        n = min(n, hi)
    return n


def pattern_of(ctx, mask: fx.Node, polarity: str) -> MaskPattern:
    """The pattern of the mask ``mask`` applied with ``polarity``:
    allowed (True lets through), blocked (True blocks), masked_fill (as the
    mask of masked_fill), additive (a float added to the scores)."""
    try:
        value = evaluate_node(ctx, mask, _eval_len(ctx))
    except _CannotEvaluate as why:
        return MaskPattern("unknown", notes=[f"mask not evaluated: {why}"])
    if value is None:
        return MaskPattern("unknown")
    value = torch.as_tensor(value)
    allowed = allowed_pairs(value, polarity)
    if allowed.dim() < 2:
        return MaskPattern.full()
    lead = allowed.reshape(-1, *allowed.shape[-2:])
    first = lead[0]
    pattern = classify_allowed(first)
    if not all(torch.equal(first, m) for m in lead[1:]):
        pattern.notes.append("the mask differs across batch or heads; the first is shown")
    if value.is_floating_point() and polarity == "additive" and pattern.kind == "full":
        pattern.notes.append("an additive bias of N×N entries is applied to the scores")
    return pattern


def pattern_of_mask_mod(ctx, mask_mod) -> MaskPattern:
    """The pattern of a FlexAttention mask_mod (a graph of (b, h, q_idx, kv_idx)),
    evaluated on the grid of positions at a small length."""
    if mask_mod is None:
        return MaskPattern.full()
    fn = mask_mod
    if isinstance(mask_mod, fx.Node) and mask_mod.op == "get_attr":
        fn = getattr(ctx.traced.graph_module, mask_mod.target)
    n = _eval_len(ctx)
    q = torch.arange(n).view(n, 1)
    kv = torch.arange(n).view(1, n)
    zero = torch.zeros((), dtype=torch.long)
    try:
        with torch.no_grad():
            out = fn(zero, zero, q, kv)
    except Exception as exc:
        return MaskPattern("unknown", notes=[f"mask_mod not evaluated: {type(exc).__name__}"])
    out = out[0] if isinstance(out, (tuple, list)) else out
    allowed = torch.as_tensor(out).to(torch.bool).expand(n, n)
    return classify_allowed(allowed.contiguous())


def _buffer_data(loaded, name: str | None) -> torch.Tensor | None:
    """A buffer's real data, when the model was built with it (not on meta)."""
    if loaded is None or not name:
        return None
    try:
        buf = loaded.module.get_buffer(name)
    except AttributeError:
        return None
    return None if buf.device.type == "meta" else buf


class _CannotEvaluate(Exception):
    pass


def _needed(traced, target: fx.Node, sizes: tuple[int, int]) -> tuple[set[fx.Node], dict[fx.Node, int]]:
    """The nodes ``target`` depends on, and the sizes among them (known from
    the shapes alone, so their own inputs are not needed)."""
    needed: set[fx.Node] = set()
    scalars: dict[fx.Node, int] = {}
    stack = [target]
    while stack:
        n = stack.pop()
        if n in needed or n in scalars:
            continue
        val = n.meta.get("val")
        if n is not target and isinstance(val, (torch.SymInt, int)) and not isinstance(val, bool):
            scalars[n] = value_at(traced.expr(val), *sizes)
            continue
        needed.add(n)
        stack.extend(n.all_input_nodes)
    return needed, scalars


def _feeds(ctx, needed: set[fx.Node], n_eval: int, batch: int) -> dict[fx.Node, torch.Tensor]:
    """Concrete values for the needed placeholders: inputs built at n_eval,
    buffers with their data; a needed weight cannot be given."""
    traced, loaded = ctx.traced, ctx.loaded
    feeds: dict[fx.Node, torch.Tensor] = {}
    for p in traced.placeholders("parameter") + traced.placeholders("buffer"):
        if p not in needed:
            continue
        kind = traced.placeholder_kinds[p.name]
        data = _buffer_data(loaded, p.meta.get("attncost_param")) if kind == "buffer" else None
        if data is None:
            raise _CannotEvaluate(f"it depends on the model's {kind}s")
        feeds[p] = data
    if loaded is None:
        raise _CannotEvaluate("no inputs to evaluate it on")
    with torch.device("cpu"):
        flat, _ = tree_flatten(loaded.example_inputs(n_eval, batch))
    input_nodes = traced.placeholders("input")
    if len(input_nodes) > len(flat):
        raise _CannotEvaluate("inputs do not line up with the graph")
    # Placeholders for non-tensor leaves are not in the graph: match by position of tensors.
    tensors = [x for x in flat if isinstance(x, torch.Tensor)] if len(input_nodes) != len(flat) else flat
    feeds.update((node, value) for node, value in zip(input_nodes, tensors) if node in needed)
    return feeds


def evaluate_node(ctx, target: fx.Node, n_eval: int):
    """Run the part of the graph that computes ``target`` at length n_eval on
    concrete inputs; weights are not needed (a mask that reads them raises)."""
    gm = ctx.traced.graph_module
    batch = 2
    needed, scalars = _needed(ctx.traced, target, (n_eval, batch))
    feeds = _feeds(ctx, needed, n_eval, batch)
    env: dict[fx.Node, object] = dict(scalars)
    sub = fx.Graph()
    order = [n for n in gm.graph.nodes if n in feeds]
    for node in order:
        env[node] = sub.placeholder(node.name)
    for node in gm.graph.nodes:
        if node in needed and node.op != "placeholder":
            env[node] = sub.node_copy(node, lambda x: env[x])
    sub.output(env[target])
    try:
        # Rooted at the traced module so that constants (get_attr) resolve.
        module = fx.GraphModule(gm, sub)
        with torch.no_grad():
            return module(*[feeds[n] for n in order])
    except Exception as exc:  # the mask code needs something we cannot give it
        raise _CannotEvaluate(f"{type(exc).__name__}: {first_line(exc)}")
