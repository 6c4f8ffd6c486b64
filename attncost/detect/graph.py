"""What every recogniser asks of the graph: operands seen through views,
weights told from activations, heads told from rows."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import sympy
import torch
import torch.fx as fx

from ..expr import B, N, as_int, settled, simplified
from ..rules.flops import FLOP_RULES
from ..rules.ops import BIASED_MATMUL_OPS, COPY_OPS, FACTORY_LIKE_OPS, GATHER_OPS, MATMUL_OPS, \
    RANKING_OPS, SCATTER_OPS, SOFTMAX_OPS, getitem, is_view, packet, writes_input

aten = torch.ops.aten

INDEX_PUTS = frozenset({aten.index_put, aten.index_put_})
_CONCATENATIONS = frozenset({aten.cat, aten.stack})

#: Ops that may sit between Q·Kᵀ and the softmax (scale, mask, bias, casts).
SCORE_OPS = frozenset(
    getattr(aten, n) for n in (
        "div", "mul", "add", "sub", "masked_fill", "where", "_to_copy", "clone", "neg",
        "tanh", "clamp", "contiguous", "masked_fill_", "add_", "div_", "mul_", "to",
        "constant_pad_nd", "pow", "maximum", "minimum", "clamp_min", "clamp_max",
    ) if hasattr(aten, n)
)
#: Ops that can take a tensor along the sequence to a fixed number of rows
#: that summarize it (a sum or mean over it, a projection along it, pooling).
SEQUENCE_REDUCTIONS = frozenset(
    getattr(aten, n) for n in (
        "sum", "mean", "amax", "max", "bmm", "mm", "addmm", "baddbmm", "avg_pool1d",
        "avg_pool2d", "adaptive_avg_pool1d", "_adaptive_avg_pool2d", "convolution",
    ) if hasattr(aten, n)
)
#: Ops that may sit between the softmax and ·V (dropout, casts; a mask's
#: rows zeroed in place, as DeBERTa's XSoftmax does).
PROB_OPS = frozenset(
    getattr(aten, n) for n in (
        "_to_copy", "clone", "native_dropout", "dropout", "mul", "div", "masked_fill",
        "masked_fill_", "mul_", "div_", "where", "contiguous", "to", "constant_pad_nd",
    ) if hasattr(aten, n)
)


def _written_from(node: fx.Node, content: set) -> bool:
    """Is anything in ``content`` written in place into ``node`` or its views?"""
    _, writes = views_and_writes(node)
    return any(isinstance(a, fx.Node) and a in content for w in writes for a in w.args[1:])


#: Ops that copy a tensor several times over (keys repeated for grouped heads).
_REPEATS = frozenset(getattr(aten, n) for n in ("repeat", "repeat_interleave")
                     if hasattr(aten, n))


@dataclass
class GraphContext:
    """One traced model as the recognisers see it."""

    traced: object
    loaded: object = None
    #: the length the user asked about (masks are read at it, or below a cap)
    seq_len: int = 0
    flop_rules: object = None
    order: dict = field(default_factory=dict)
    #: (mask node, length) -> its value there (masks are shared by layers)
    mask_values: dict = field(default_factory=dict)
    #: the weights a site applies to V -> the function that weighs its scores
    #: in place of a softmax (relu, exp), where masks may follow it
    weighed_by: dict = field(default_factory=dict)
    #: the weights a site applies to V -> its Q·Kᵀ, where nothing weighs the scores
    unweighed: dict = field(default_factory=dict)
    #: mask -> (rank, queries axis, keys axis) of the scores it is applied
    #: to, where those are not the last two (unfused._score_layout)
    mask_layouts: dict = field(default_factory=dict)
    #: operand -> does it come from a projection of the input (unfused._projected)
    projected: dict = field(default_factory=dict)
    #: evaluations already run, by what they compute (detect/evaluate.py)
    evaluated: object = None
    _sizes_of_weights: set | None = field(default=None, repr=False)
    _written: dict = field(default_factory=dict, repr=False)
    _parameters_only: dict = field(default_factory=dict, repr=False)
    _by_name: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.seq_len = self.seq_len or self.traced.seq_len_hint
        if self.flop_rules is None:
            self.flop_rules = FLOP_RULES
        self.order = {n: i for i, n in enumerate(self.traced.nodes)}

    def is_weight(self, node, limit: int = 12, content: set | None = None) -> bool:
        """Is this operand a parameter or buffer (seen through views), or
        computed from parameters alone (``_of_parameters``)?  Not
        a buffer the model writes activations into (a KV cache, written in
        place before its keys are read back); ``content``: the activations
        known so far, while they are being found."""
        for _ in range(limit):
            if not isinstance(node, fx.Node) or self._holds_activations(node, content):
                return False
            if node.op == "placeholder":
                return self.traced.placeholder_kinds.get(node.name) in ("parameter", "buffer")
            if node.op != "call_function":
                return False
            if not (is_view(node) or packet(node) in (aten._to_copy, aten.clone)):
                return self._of_parameters(node)
            node = node.args[0]
        return False

    def _of_parameters(self, node: fx.Node, depth: int = 12) -> bool:
        """Is ``node`` computed from parameters alone, in a shape free of N
        and B: a weight normalised each forward (a parametrization, weight
        or spectral norm, nViT's unit-norm rows), a product of two weights?"""
        if node in self._parameters_only:
            return self._parameters_only[node]
        if depth <= 0:  # too deep to tell here: not remembered
            return False
        shape = self.traced.shape(node)
        inputs = tensor_inputs(node)
        kinds = self.traced.placeholder_kinds
        held = shape is not None and inputs and \
            not set().union(*(sympy.sympify(x).free_symbols for x in shape)) & {N, B} and \
            packet(node) not in FACTORY_LIKE_OPS and all(
                kinds.get(a.name) == "parameter" if a.op == "placeholder" else
                a.op == "call_function" and self._of_parameters(a, depth - 1) for a in inputs)
        self._parameters_only[node] = bool(held)
        return bool(held)

    def _holds_activations(self, node: fx.Node, content: set | None = None) -> bool:
        """Does the model write activations in place into this tensor or its
        views?  (Of ``content`` where given: a buffer filled from the input
        before it is read, as Lumina2 packs text and image tokens.)"""
        if is_view(node):
            return False  # asked of the tensor it views
        if content is not None:
            return _written_from(node, content)
        if node not in self._written:
            self._written[node] = _written_from(node, self.activations)
        return self._written[node]

    def node(self, name: str) -> fx.Node | None:
        """The graph's node of this name."""
        if len(self._by_name) != len(self.order):
            self._by_name.update((n.name, n) for n in self.order)
        return self._by_name.get(name)

    def product_operands(self, mm: fx.Node) -> tuple[fx.Node, fx.Node]:
        """The two factors of a matrix product (after the bias of baddbmm/addmm)."""
        first = 1 if packet(mm) in BIASED_MATMUL_OPS else 0
        return mm.args[first], mm.args[first + 1]

    def expand_ratio(self, start: fx.Node, limit: int = 12) -> sympy.Expr:
        """How many times the K (or V) operand was repeated on its way to the
        product: the product of numel ratios of the expands (or repeats:
        JetMoE's ``key.repeat(1, top_k, 1, 1)``) it went through."""
        ratio = sympy.Integer(1)
        node = start
        for _ in range(limit):
            if not isinstance(node, fx.Node) or node.op != "call_function":
                break
            repeats = packet(node) in _REPEATS
            if packet(node) is aten.expand or repeats:
                src, dst = self.traced.shape(node.args[0]), self.traced.shape(node)
                if src is not None and dst is not None:
                    ratio *= sympy.Mul(*dst) / sympy.Mul(*src)
            if not (is_view(node) or packet(node) in COPY_OPS or repeats):
                break
            node = node.args[0]
        return simplified(ratio)

    def number_sizes(self, node) -> tuple[int, ...] | None:
        """``node``'s sizes where every one is a number, else None (a
        symbolic size is never compared here: that would add a guard)."""
        shape = self.traced.shape(node) if isinstance(node, fx.Node) else None
        sizes = [as_int(s) for s in shape] if shape is not None else None
        return tuple(sizes) if sizes is not None and None not in sizes else None

    @functools.cached_property
    def sequence_cuts(self) -> set[tuple[str, int]]:
        """(module, count of chunks) of every view that cuts an axis n to
        n + one chunk long (the sequence padded to whole chunks) into
        (chunks, chunk), in a trace at one length n."""
        t, cuts = self.traced, set()
        n = t.seq_len_hint
        for view in t.nodes:
            if view.op != "call_function" or not is_view(view) or not view.all_input_nodes:
                continue
            src, out = self.number_sizes(view.all_input_nodes[0]), self.number_sizes(view)
            if src is None or out is None:
                continue
            for k in range(len(out) - 1):
                cut = out[k] * out[k + 1]
                if n <= cut < n + out[k + 1] and cut in src and cut not in out:
                    cuts.add((t.module_path(view), out[k]))
        return cuts

    @functools.cached_property
    def activations(self) -> set[fx.Node]:
        """The nodes whose values depend on the input's content: a floating
        input, or what a weight gives for the input (an embedding of token
        ids), and everything computed from them.  Sizes, and tensors made
        only in the shape of one (``zeros_like``), are not."""
        kinds = self.traced.placeholder_kinds
        from_input: set[fx.Node] = set()
        content: set[fx.Node] = set()
        for node in self.traced.graph_module.graph.nodes:
            if node.op == "placeholder":
                if kinds.get(node.name) == "input":
                    from_input.add(node)
                    val = node.meta.get("val")
                    if isinstance(val, torch.Tensor) and val.is_floating_point():
                        content.add(node)
                continue
            if node.op != "call_function" or packet(node) in FACTORY_LIKE_OPS:
                continue
            args = node.all_input_nodes
            if any(a in from_input for a in args):
                from_input.add(node)
                if any(a in content for a in args) or \
                        any(self.is_weight(a, content=content) for a in args):
                    content.add(node)
        return content

    def selected_by_content(self, operand: fx.Node) -> bool:
        """Are the rows of this product operand picked by an index computed
        from the input's content (top-k of routing scores, an argsort of
        hash buckets), between the product that made them and here, or,
        for a fixed number of rows (routed tokens), before their projection?"""
        seen: set[fx.Node] = set()
        stack = [operand]
        while stack:
            n = stack.pop()
            if not isinstance(n, fx.Node) or n in seen or n.op != "call_function":
                continue
            seen.add(n)
            if packet(n) in GATHER_OPS:
                source, *index = n.all_input_nodes
                if any(i in self.activations for i in index):
                    return True
                stack.append(source)
            elif not is_product(n):
                stack.extend(tensor_inputs(n))
            elif any(self._selection_matrix(a) for a in tensor_inputs(n)):
                return True
            elif not self._runs_along_sequence(n):
                # a fixed number of rows projected: routed tokens, picked before
                stack.extend(a for a in tensor_inputs(n) if not self.is_weight(a))
        return False

    def _selection_matrix(self, operand: fx.Node) -> bool:
        """Is this product operand a matrix that picks rows: written by a
        scatter at the indices a ranking of activations returned (Sinkhorn
        attention's top-k of bucket scores, one per row), seen through
        views, copies and concatenation?"""
        for n in self._through_layout(operand):
            if packet(n) in SCATTER_OPS and len(n.args) > 2:
                index = n.args[2] if packet(n) not in INDEX_PUTS else n.args[1]
                indices = index if isinstance(index, (list, tuple)) else [index]
                if any(self._ranked(i) for i in indices if isinstance(i, fx.Node)):
                    return True
        return False

    def _ranked(self, index: fx.Node) -> bool:
        """Is this index what a ranking of activations returned?"""
        for n in self._through_layout(index):
            if n.target is getitem and n.args and isinstance(n.args[0], fx.Node):
                rank = n.args[0]
                if packet(rank) in RANKING_OPS and rank.args and rank.args[0] in self.activations:
                    return True
        return False

    @staticmethod
    def _through_layout(node: fx.Node, limit: int = 32) -> list[fx.Node]:
        """``node`` and what it was made from through views, copies and
        concatenation: the same values, laid out otherwise."""
        seen, stack, out = set(), [node], []
        while stack and len(out) < limit:
            n = stack.pop()
            if not isinstance(n, fx.Node) or n in seen or n.op != "call_function":
                continue
            seen.add(n)
            out.append(n)
            if is_view(n) or packet(n) in COPY_OPS or packet(n) in _CONCATENATIONS:
                stack.extend(tensor_inputs(n))
        return out

    def summarizes_sequence(self, operand: fx.Node) -> bool:
        """Is this product operand a fixed number of rows that summarize the
        sequence (keys projected along it, landmarks pooled from it), rather
        than a context of its own (an encoder of fixed length, learned
        latents) or a few positions picked from it (a class token)?  Its
        shape has no N, and on the way back a reduction or product took an
        activation that runs along the sequence to a shape without N."""
        if self._runs_along_sequence(operand):
            return False
        seen: set[fx.Node] = set()
        stack = [operand]
        while stack:
            n = stack.pop()
            if n in seen or n.op != "call_function":
                continue
            seen.add(n)
            inputs = tensor_inputs(n)
            if packet(n) in SEQUENCE_REDUCTIONS and _weighs_by_attention(self, n):
                continue  # tokens that attended to the sequence: a context of their own
            if packet(n) in SEQUENCE_REDUCTIONS and not self._runs_along_sequence(n) and \
                    any(a in self.activations and self._runs_along_sequence(a) for a in inputs):
                return True
            stack.extend(a for a in inputs if not self._runs_along_sequence(a))
        return False

    def _runs_along_sequence(self, node: fx.Node) -> bool:
        """Has the value an axis along the sequence: one whose length grows
        with N, or, in a trace at one fixed length n, one of length n?"""
        shape = self.traced.shape(node)
        if shape is None:
            return False
        lo, hi = self.traced.n_range
        n = self.traced.seq_len_hint
        along = {n, n * B, n * (self.traced.batch_hint or 1)} if lo == hi == n else set()
        if along and n in self._weight_sizes():
            shape = shape[:-1]  # n is a width too: the last axis is the features
        return any(N in sympy.sympify(settled(d)).free_symbols or sympy.sympify(d) in along
                   for d in shape)

    def _weight_sizes(self) -> set[int]:
        """Every size of every parameter's axes (widths: features, heads)."""
        if self._sizes_of_weights is None:
            self._sizes_of_weights = {
                int(d) for p in self.traced.placeholders("parameter")
                for d in getattr(p.meta.get("val"), "shape", ()) if isinstance(d, int)}
        return self._sizes_of_weights

    def ancestor_ops(self, node: fx.Node, through_products: bool = True) -> set:
        """The ops of every node ``node`` depends on; without
        ``through_products``, only back to the matrix products that made its
        values (a projection, an earlier site), not what came before them."""
        seen: set[fx.Node] = set()
        stack = tensor_inputs(node)
        while stack:
            n = stack.pop()
            if n not in seen:
                seen.add(n)
                if through_products or not is_product(n):
                    stack.extend(tensor_inputs(n))
        return {packet(n) for n in seen}


def _weighs_by_attention(ctx, product: fx.Node, limit: int = 32) -> bool:
    """Is one factor of ``product`` attention weights (a softmax's output,
    through views, dropout and a mixing of the heads: CaiT's talking
    heads)?  Its rows are the outputs of an attention: global tokens or
    latents that attended to the sequence in an earlier layer (PEGASUS-X,
    Perceiver, CaiT's class token), not the sequence pooled (Nyström)."""
    from .heads import heads_mixed  # heads.py reads this module's helpers

    stack = [(a, 0) for a in tensor_inputs(product)]
    while stack:
        n, depth = stack.pop()
        if n.op != "call_function" or depth > limit:
            continue
        if packet(n) in SOFTMAX_OPS:
            return True
        mixed = heads_mixed(ctx, n)
        if mixed is not None:
            stack.append((mixed[0], depth + 1))
        elif is_view(n) or packet(n) in PROB_OPS or adds_constant(ctx, n):
            stack.extend((a, depth + 1) for a in tensor_inputs(n)[:1])
    return False


def adds_constant(ctx, node: fx.Node) -> bool:
    """Does ``node`` add to its first input something that is no
    activation: a number (slot attention's ε, keeping its weights off zero
    before they are renormalised) or a learned bias (the bias of a Linear
    that mixed the heads: timm's CaiT)?"""
    if packet(node) is not aten.add or len(node.args) < 2 or \
            not isinstance(node.args[0], fx.Node):
        return False
    other = node.args[1]
    return not isinstance(other, fx.Node) or ctx.is_weight(other)


def tensor_inputs(node: fx.Node) -> list[fx.Node]:
    """The inputs of ``node`` that are tensors: its data, not the sizes it
    was given (a size can come from anywhere, a mask's shape included)."""
    return [a for a in node.all_input_nodes
            if not isinstance(a.meta.get("val"), (torch.SymInt, int))]


def copied_into(node: fx.Node) -> list[fx.Node]:
    """What is copied in place into ``node`` or its views from elsewhere
    (scores written into slices of a zero tensor, as Longformer lays out its
    diagonals); not what is computed from ``node`` itself and written back
    (a mask applied in place)."""
    views, writes = views_and_writes(node)
    sources = [w.args[1] for w in writes
               if packet(w) is aten.copy_ and isinstance(w.args[1], fx.Node)]
    return [s for s in sources if not _reads(s, views)]


def views_and_writes(node: fx.Node) -> tuple[set[fx.Node], list[fx.Node]]:
    """``node`` and its views, and the ops that write in place into any of
    them (a copy_ into a slice, ``scores[:, i, j] = value``)."""
    views, writes, stack = {node}, [], [node]
    while stack:
        for user in stack.pop().users:
            if user.op != "call_function" or not user.args or user.args[0] not in views:
                continue
            if is_view(user):
                views.add(user)
                stack.append(user)
            elif writes_input(user):
                writes.append(user)
    return views, writes


def _reads(node: fx.Node, targets: set, limit: int = 16) -> bool:
    """Does ``node`` read any of ``targets`` within ``limit`` steps back?"""
    frontier = [node]
    for _ in range(limit):
        if any(n in targets for n in frontier):
            return True
        frontier = [a for n in frontier for a in n.all_input_nodes]
        if not frontier:
            return False
    return False


def split_rows(rows: sympy.Expr) -> tuple[int, sympy.Expr]:
    """Split score rows (B·H·N_q) into heads H and query length N_q."""
    per_batch = settled(simplified(rows / B) if B in rows.free_symbols else rows)
    coeff, rest = sympy.factor(per_batch).as_coeff_Mul()
    if coeff.is_Integer and coeff > 0:
        return int(coeff), rest
    return 1, per_batch


def is_product(node: fx.Node) -> bool:
    return node.op == "call_function" and packet(node) in MATMUL_OPS
