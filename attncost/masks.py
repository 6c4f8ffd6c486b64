"""Read an attention mask off the graph by evaluating it on concrete data.

A mask is whatever the model computes to block scores: ``tril`` of ones, a
comparison of position ranges, a band, a random pattern passed in as data.
Rather than recognise each way of writing it, attncost runs the part of the
graph that builds the mask at a small concrete length and looks at the
result: all allowed, causal, a causal or symmetric window, or a pattern with
a measured density.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sympy
import torch
import torch.fx as fx
from torch.utils._pytree import tree_flatten

from .tracer import B, N

#: Largest length at which a mask is evaluated (its N×N entries are built).
MAX_EVAL_LEN = 4096


@dataclass
class MaskPattern:
    """What a mask lets through, read at length ``length``."""

    kind: str  # full | causal | window | pattern | unknown
    causal: bool = False
    window: int | None = None
    symmetric: bool = False
    density: float | None = None
    allowed: int | None = None  # allowed (query, key) pairs at ``length``
    length: int | None = None
    notes: list[str] = field(default_factory=list)

    @classmethod
    def full(cls) -> "MaskPattern":
        return cls("full", density=1.0)

    @classmethod
    def causal_mask(cls) -> "MaskPattern":
        return cls("causal", causal=True)


def classify_allowed(allowed: torch.Tensor) -> MaskPattern:
    """Name the pattern of a 2-D boolean (queries × keys) matrix."""
    nq, nk = allowed.shape
    total = allowed.sum().item()
    if total == nq * nk:
        return MaskPattern.full()
    if nq == nk:
        i = torch.arange(nq).unsqueeze(1)
        j = torch.arange(nk).unsqueeze(0)
        tril = j <= i
        if torch.equal(allowed, tril):
            return MaskPattern("causal", causal=True, allowed=int(total), length=nq)
        w = int(allowed[-1].sum().item())
        if torch.equal(allowed, tril & (j > i - w)):
            return MaskPattern("window", causal=True, window=w, allowed=int(total), length=nq)
        half = int(allowed[nq // 2].sum().item()) // 2
        if torch.equal(allowed, (j - i).abs() <= half):
            return MaskPattern("window", causal=False, window=2 * half + 1, symmetric=True,
                               allowed=int(total), length=nq)
    causal = bool(nq == nk and not allowed.triu(1).any())
    return MaskPattern("pattern", causal=causal, density=total / (nq * nk),
                       allowed=int(total), length=nq)


def combine(patterns: list[MaskPattern]) -> MaskPattern:
    """Several masks on one score matrix: the most restrictive known one wins."""
    known = [p for p in patterns if p.kind != "unknown"]
    if not known:
        return patterns[0] if patterns else MaskPattern.full()
    order = {"full": 0, "causal": 1, "window": 2, "pattern": 3}
    return max(known, key=lambda p: order[p.kind])


def _eval_len(detector) -> int:
    lo, hi = detector.traced.n_range
    n = min(detector.seq_len, MAX_EVAL_LEN)
    n = max(n, lo, 2)
    if hi is not None:
        n = min(n, hi)
    return n


def pattern_of(detector, mask: fx.Node, polarity: str) -> MaskPattern:
    """The pattern of the mask ``mask`` applied with ``polarity``:
    allowed (True lets through), blocked (True blocks), masked_fill (as the
    mask of masked_fill), additive (a float added to the scores)."""
    try:
        value = evaluate_node(detector, mask, _eval_len(detector))
    except _CannotEvaluate as why:
        return MaskPattern("unknown", notes=[f"mask not evaluated: {why}"])
    if value is None:
        return MaskPattern("unknown")
    value = torch.as_tensor(value)
    allowed = _allowed(value, polarity)
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


def _allowed(value: torch.Tensor, polarity: str) -> torch.Tensor:
    """Which (query, key) pairs a mask's values let through."""
    if value.dtype == torch.bool:
        return value if polarity in ("allowed", "additive") else ~value
    if value.is_floating_point() and polarity in ("allowed", "additive"):
        # added to the scores (SDPA treats a float attn_mask the same way): -inf blocks
        return value > torch.finfo(value.dtype).min / 2
    return value != 0 if polarity == "allowed" else value == 0


def pattern_of_mask_mod(detector, mask_mod) -> MaskPattern:
    """The pattern of a FlexAttention mask_mod (a graph of (b, h, q_idx, kv_idx)),
    evaluated on the grid of positions at a small length."""
    if mask_mod is None:
        return MaskPattern.full()
    fn = mask_mod
    if isinstance(mask_mod, fx.Node) and mask_mod.op == "get_attr":
        fn = getattr(detector.traced.graph_module, mask_mod.target)
    n = _eval_len(detector)
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


def evaluate_node(detector, target: fx.Node, n_eval: int):
    """Run the part of the graph that computes ``target`` at length n_eval on
    concrete inputs; weights are not needed (a mask that reads them raises)."""
    traced = detector.traced
    loaded = detector.loaded
    gm = traced.graph_module
    batch = 2
    sizes = {N: n_eval, B: batch}
    needed: set[fx.Node] = set()
    scalars: dict[fx.Node, int] = {}
    stack = [target]
    while stack:
        n = stack.pop()
        if n in needed or n in scalars:
            continue
        val = n.meta.get("val")
        if n is not target and isinstance(val, (torch.SymInt, int)) and not isinstance(val, bool):
            # A size read off a tensor: known from the shapes alone.
            scalars[n] = int(traced.expr(val).xreplace(sizes))
            continue
        needed.add(n)
        stack.extend(n.all_input_nodes)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    buffers: dict[str, torch.Tensor] = {}
    for p in placeholders:
        kind = traced.placeholder_kinds.get(p.name)
        if p not in needed or kind == "input":
            continue
        data = _buffer_data(loaded, p.meta.get("attncost_param")) if kind == "buffer" else None
        if data is None:
            raise _CannotEvaluate(f"it depends on the model's {kind}s")
        buffers[p.name] = data
    if loaded is None:
        raise _CannotEvaluate("no inputs to evaluate it on")
    with torch.device("cpu"):
        inputs = loaded.example_inputs(n_eval, batch)
    flat, _ = tree_flatten(inputs)
    input_nodes = [p for p in placeholders if traced.placeholder_kinds.get(p.name) == "input"]
    if len(input_nodes) > len(flat):
        raise _CannotEvaluate("inputs do not line up with the graph")
    # Placeholders for non-tensor leaves are not in the graph: match by position of tensors.
    tensors = [x for x in flat if isinstance(x, torch.Tensor)] if len(input_nodes) != len(flat) else flat
    env: dict[fx.Node, object] = dict(scalars)
    sub = fx.Graph()
    feeds = {}
    for node, value in [*zip(input_nodes, tensors),
                        *((p, buffers[p.name]) for p in placeholders if p.name in buffers)]:
        if node in needed:
            new = sub.placeholder(node.name)
            env[node] = new
            feeds[node.name] = value
    for node in gm.graph.nodes:
        if node in needed and node.op != "placeholder":
            env[node] = sub.node_copy(node, lambda x: env[x])
    sub.output(env[target])
    try:
        # Rooted at the traced module so that constants (get_attr) resolve.
        module = fx.GraphModule(gm, sub)
        with torch.no_grad():
            return module(*[feeds[n.name] for n in sub.nodes if n.op == "placeholder"])
    except Exception as exc:  # the mask code needs something we cannot give it
        raise _CannotEvaluate(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")


def window_useful_flops(pattern: MaskPattern, values: dict) -> sympy.Expr:
    """Mask-aware FLOPs of a windowed site, by the canonical local formulas."""
    from .variants import SYMBOLS, formula

    name = "local_symmetric" if pattern.symmetric else "local"
    expr = formula(name).useful_flops.xreplace({**values, SYMBOLS["w"]: pattern.window})
    return sympy.expand(expr)


def pattern_useful_flops(pattern: MaskPattern, flops: sympy.Expr) -> sympy.Expr:
    """A measured pattern: its density (read at one length) times the work."""
    return sympy.expand(flops * sympy.Rational(pattern.allowed, pattern.length ** 2))
