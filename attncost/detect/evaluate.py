"""Run part of a traced graph on concrete data at a chosen length.

Masks, and the positions a site pairs, are read by running the nodes that
compute them on the inputs ``example_inputs`` builds at that length: sizes
come from the shapes, buffers keep their data, weights are zeros (up to a
size), and any node may be given a value instead of being computed.
"""
from __future__ import annotations

import collections
import hashlib

import torch
import torch.fx as fx
from torch.utils._pytree import tree_flatten

from ..errors import first_line
from ..expr import value_at
from ..rules.ops import is_view


def _buffer_data(loaded, name: str | None) -> torch.Tensor | None:
    """A buffer's real data, when the model was built with it (not on meta)."""
    if loaded is None or not name:
        return None
    try:
        buf = loaded.module.get_buffer(name)
    except AttributeError:
        return None
    return None if buf.device.type == "meta" else buf


class CannotEvaluate(Exception):
    pass


#: Most bytes of weights a mask may read; they are given as zeros (a mask
#: that adds a learned bias to a -inf pattern keeps its pattern).
MAX_WEIGHT_BYTES = 64 << 20


def _zeros_like(p: fx.Node, kind: str) -> torch.Tensor:
    val = p.meta.get("val")
    if not isinstance(val, torch.Tensor) or any(not isinstance(s, int) for s in val.shape):
        raise CannotEvaluate(f"it depends on the model's {kind}s")
    if val.numel() * val.element_size() > MAX_WEIGHT_BYTES:
        raise CannotEvaluate(f"it depends on the model's {kind}s ({val.numel():,} values)")
    return torch.zeros(val.shape, dtype=val.dtype)


def _mutated_base(node: fx.Node) -> fx.Node | None:
    """The tensor an in-place op writes into (through the views it writes
    through: ``zeros[:, :4].fill_(1)`` writes into ``zeros``), or None."""
    schema = getattr(node.target, "_schema", None)
    if node.op != "call_function" or schema is None or not schema.arguments:
        return None
    info = schema.arguments[0].alias_info
    if info is None or not info.is_write or not isinstance(node.args[0], fx.Node):
        return None
    base = node.args[0]
    while base.op == "call_function" and is_view(base) and isinstance(base.args[0], fx.Node):
        base = base.args[0]
    return base


def _order_and_writes(graph: fx.Graph) -> tuple[dict, dict]:
    """Each node's position, and the in-place writes into each tensor, of
    ``graph`` (read once per graph and length of it)."""
    stamp = (len(graph.nodes), id(next(reversed(graph.nodes), None)))
    known = getattr(graph, "_attncost_writes", None)
    if known is not None and known[0] == stamp:
        return known[1], known[2]
    order = {n: i for i, n in enumerate(graph.nodes)}
    writes: dict[fx.Node, list[fx.Node]] = {}
    for node in order:
        base = _mutated_base(node)
        if base is not None:
            writes.setdefault(base, []).append(node)
    graph._attncost_writes = (stamp, order, writes)
    return order, writes


def _needed(traced, target: fx.Node, sizes: tuple[int, int],
            given=()) -> tuple[set[fx.Node], dict[fx.Node, int]]:
    """The nodes ``target`` depends on, and the sizes among them (known from
    the shapes alone, so their own inputs are not needed); the ``given``
    nodes are fed, so their inputs are not needed either.  A tensor filled
    in place (a mask built by writing into slices of zeros) needs its writes."""
    needed: set[fx.Node] = set()
    scalars: dict[fx.Node, int] = {}
    order, writes = _order_and_writes(traced.graph_module.graph)
    stack = [target]
    while stack:
        _collect(traced, target, sizes, given, needed, scalars, stack)
        stack = [w for base in needed & writes.keys()
                 for w in _before(target, base, writes[base], order) if w not in needed]
    return needed, scalars


def _before(target: fx.Node, base: fx.Node, writes: list[fx.Node],
            order: dict) -> list[fx.Node]:
    """The writes into ``base`` that the evaluation of ``target`` must make:
    those before ``target`` (the nodes run in the graph's order, so each
    read sees the writes made before it: masks written into the scores in
    place, in slices that read them), and, where ``base`` is read later
    than that, those before its first read (a mask written into slices of
    zeros, evaluated as the zeros); not those after both (a cache filled
    after attention read it keeps what was read)."""
    reads, stack = [], list(base.users)
    while stack:
        user = stack.pop()
        if user.op == "call_function" and is_view(user):
            stack.extend(user.users)
        elif user not in writes:
            reads.append(order[user])
    until = max(order[target], min(reads, default=len(order)))
    return [w for w in writes if order[w] < until]


def _collect(traced, target, sizes, given, needed: set, scalars: dict, stack: list) -> None:
    """Add what the nodes on ``stack`` depend on to ``needed`` and ``scalars``."""
    while stack:
        n = stack.pop()
        if n in needed or n in scalars:
            continue
        if n in given:
            needed.add(n)
            continue
        val = n.meta.get("val")
        if n is not target and isinstance(val, (torch.SymInt, int)) and not isinstance(val, bool):
            scalars[n] = value_at(traced.expr(val), *sizes)
            continue
        needed.add(n)
        stack.extend(n.all_input_nodes)


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
        feeds[p] = data if data is not None else _zeros_like(p, kind)
    if loaded is None:
        raise CannotEvaluate("no inputs to evaluate it on")
    with torch.device("cpu"):
        flat, _ = tree_flatten(loaded.example_inputs(n_eval, batch))
    input_nodes = traced.placeholders("input")
    if len(input_nodes) > len(flat):
        raise CannotEvaluate("inputs do not line up with the graph")
    # Placeholders for non-tensor leaves are not in the graph: match by position of tensors.
    tensors = [x for x in flat if isinstance(x, torch.Tensor)] if len(input_nodes) != len(flat) else flat
    feeds.update((node, value) for node, value in zip(input_nodes, tensors) if node in needed)
    return feeds


def evaluate_node(ctx, target: fx.Node, n_eval: int, given: dict | None = None):
    """Run the part of the graph that computes ``target`` at length n_eval on
    concrete inputs (B=2), with the ``given`` nodes' values replaced;
    weights it reads are zeros, up to a size."""
    gm = ctx.traced.graph_module
    batch = evaluation_batch(ctx.traced)
    given = given or {}
    try:
        needed, scalars = _needed(ctx.traced, target, (n_eval, batch), given)
    except (TypeError, ValueError, ZeroDivisionError) as exc:  # a size with no value there
        raise CannotEvaluate(f"its sizes have no value at N={n_eval}: {first_line(exc)}")
    try:
        feeds = {**_feeds(ctx, needed - set(given), n_eval, batch), **given}
    except CannotEvaluate:
        zeroed = _activations_as_zeros(ctx, target, n_eval, batch, given)
        if not zeroed:
            raise
        return evaluate_node(ctx, target, n_eval, {**given, **zeroed})
    feeds.update(_fake_constants(gm, needed))
    order = [n for n in gm.graph.nodes if n in feeds]
    if ctx.evaluated is None:
        ctx.evaluated = Evaluations()
    key = ctx.evaluated.key(ctx, [n for n in gm.graph.nodes
                                  if n in needed or n in scalars or n in feeds], target,
                            feeds, given, scalars, n_eval)
    if key in ctx.evaluated:
        return ctx.evaluated[key]
    env: dict[fx.Node, object] = dict(scalars)
    sub = fx.Graph()
    for node in order:
        env[node] = sub.placeholder(node.name)
    for node in gm.graph.nodes:
        if node in needed and node not in feeds and node.op != "placeholder":
            env[node] = sub.node_copy(node, lambda x: env[x])
    sub.output(env[target])
    try:
        # Rooted at the traced module so that constants (get_attr) resolve.
        module = fx.GraphModule(gm, sub)
        with torch.no_grad():
            result = module(*[feeds[n] for n in order])
    except Exception as exc:  # the mask code needs something we cannot give it
        raise CannotEvaluate(f"{type(exc).__name__}: {first_line(exc)}")
    if _not_a_number(result):
        # weights read as zeros divided by their norm (a weight-normalised
        # convolution: wav2vec 2.0's positional embedding) make the hidden
        # states 0/0: read again with the activations nearest as zeros
        zeroed = _activations_as_zeros(ctx, target, n_eval, batch, given)
        if zeroed:
            result = evaluate_node(ctx, target, n_eval, {**given, **zeroed})
    ctx.evaluated[key] = result
    return result


def _not_a_number(value) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point() and \
        bool(torch.isnan(value).any())


def _fake_constants(gm: fx.GraphModule, needed: set[fx.Node]) -> dict[fx.Node, torch.Tensor]:
    """Constants the trace made from the weights (a module that caches a
    tensor computed from its parameters, as LeViT's attention biases are
    cached in eval mode): they hold no values, and are read as zeros, as
    the weights are."""
    from torch._subclasses.fake_tensor import FakeTensor

    out = {}
    for node in needed:
        if node.op != "get_attr":
            continue
        value = getattr(gm, str(node.target), None)
        if isinstance(value, FakeTensor) and all(isinstance(d, int) for d in value.shape):
            out[node] = torch.zeros(tuple(value.shape), dtype=value.dtype)
    return out


class Evaluations(dict):
    """Results of evaluations, by what they compute: the ops in order with
    their arguments, and the values fed in.  The layers of a stack copied
    from a traced one (tracing/repeat.py) compute their masks and weights
    with the same ops on the same values, and are run once.  Holds up to
    ``MAX_BYTES`` of results."""

    MAX_BYTES = 512 << 20
    RECENT = 4

    def __init__(self):
        super().__init__()
        #: the last few values digested (a site's weights, given for every
        #: group of positions read), held so that their ids stay theirs
        self._fingerprints: collections.OrderedDict[int, tuple] = collections.OrderedDict()
        self._bytes = 0

    def key(self, ctx, nodes: list[fx.Node], target: fx.Node, feeds: dict, given: dict,
            scalars: dict, n_eval: int) -> tuple:
        index: dict[fx.Node, int] = {}
        parts: list = [n_eval]
        for node in nodes:
            if node in given:
                part = ("given", self._fingerprint(given[node]))
            elif node in feeds:
                kind = ctx.traced.placeholder_kinds.get(node.name)
                part = ("zeros", tuple(feeds[node].shape), feeds[node].dtype) \
                    if kind == "parameter" else ("fed", node.name)
            elif node in scalars:
                part = ("size", scalars[node])
            else:
                part = (str(node.target), repr(fx.map_arg((node.args, node.kwargs),
                                                          lambda x: _Ref(index[x]))))
            index[node] = len(parts)
            parts.append(part)
        parts.append(index[target])
        return tuple(parts)

    def _fingerprint(self, value) -> tuple:
        """What a given value is: its shape, dtype and bytes' digest (a
        tensor given again, the same object, is digested once)."""
        if not isinstance(value, torch.Tensor):
            return ("value", repr(value))
        known = self._fingerprints.get(id(value))
        if known is not None and known[0] is value:
            return known[1]
        data = value.detach().contiguous().cpu()
        digest = hashlib.blake2b(data.reshape(-1).view(torch.uint8).numpy().tobytes()
                                 if data.numel() else b"", digest_size=16).hexdigest()
        fingerprint = (tuple(value.shape), value.dtype, digest)
        self._fingerprints[id(value)] = (value, fingerprint)
        if len(self._fingerprints) > self.RECENT:
            self._fingerprints.popitem(last=False)
        return fingerprint

    def __setitem__(self, key, result) -> None:
        size = sum(t.numel() * t.element_size() for t in tree_flatten(result)[0]
                   if isinstance(t, torch.Tensor))
        if self._bytes + size > self.MAX_BYTES:
            return
        self._bytes += size
        super().__setitem__(key, result)


class _Ref:
    """A node argument in an evaluation's key: the position of its node."""

    def __init__(self, position: int):
        self.position = position

    def __repr__(self) -> str:
        return f"@{self.position}"


def evaluation_batch(traced) -> int:
    """The batch evaluations run at: 2 where the trace's batch is a symbol
    (copies of one matrix tell what a batch of one cannot), else the
    trace's own, which its sizes fix."""
    low, high = traced.batch_range
    return low if low == high else 2


def zeros_at(ctx, node: fx.Node, n_eval: int, batch: int | None = None) -> torch.Tensor:
    """Zeros shaped as ``node``'s value at length n_eval (and ``batch``)."""
    batch = evaluation_batch(ctx.traced) if batch is None else batch
    val = node.meta["val"]
    try:
        shape = [value_at(ctx.traced.expr(d), n_eval, batch) for d in val.shape]
    except (TypeError, ValueError, ZeroDivisionError) as exc:
        raise CannotEvaluate(f"its sizes have no value at N={n_eval}: {first_line(exc)}")
    return torch.zeros(shape, dtype=val.dtype)


def ones_at(ctx, node: fx.Node, n_eval: int, batch: int | None = None) -> torch.Tensor:
    return zeros_at(ctx, node, n_eval, batch) + 1


def _activations_as_zeros(ctx, target: fx.Node, n_eval: int, batch: int,
                          given: dict) -> dict[fx.Node, torch.Tensor]:
    """Zeros for the floating activations nearest ``target`` (a bias
    projected from the hidden states, added to a mask): with the weights
    zeros they are zeros, and the weights of every layer before may be
    too large to give."""
    activations = getattr(ctx, "activations", None) or set()
    zeroed: dict[fx.Node, torch.Tensor] = {}
    seen, stack = set(), list(target.all_input_nodes)
    while stack:
        n = stack.pop()
        if n in seen or n in given:
            continue
        seen.add(n)
        val = n.meta.get("val")
        if n in activations and isinstance(val, torch.Tensor) and val.is_floating_point():
            zeroed[n] = zeros_at(ctx, n, n_eval, batch)
            continue
        stack.extend(n.all_input_nodes)
    return zeroed
