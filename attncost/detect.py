"""Find the attention sites in a traced graph by pattern, not by name.

Two patterns are recognised on the aten graph (a networkx view of it):

* a fused attention call (``scaled_dot_product_attention`` in any of its aten
  forms, FlexAttention);
* the unfused chain ``Q·Kᵀ -> (scale, mask, bias) -> softmax over keys -> ·V``:
  a matrix product whose output, through elementwise ops only, is the input
  of a softmax taken over the axis that the next product contracts.

Heads, KV heads and head_dim come from shapes; causality, windows and
sparsity from the mask, evaluated on concrete data at a small length.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import sympy
import torch
import torch.fx as fx

from . import masks
from .symbolic import (FLEX_ATTENTION, FUSED_ATTENTION_OPS, is_view, node_flops, schema_args)
from .tracer import B, N, TracedModel, value_at

aten = torch.ops.aten

SOFTMAX_OPS = frozenset(
    getattr(aten, n) for n in ("_softmax", "softmax", "_safe_softmax") if hasattr(aten, n)
)
MATMUL_OPS = frozenset({aten.bmm, aten.mm, aten.baddbmm, aten.addmm})
#: Ops that pick keys by index: block-sparse attention written in PyTorch.
GATHER_OPS = frozenset(
    getattr(aten, n) for n in ("index", "gather", "index_select", "take_along_dim")
    if hasattr(aten, n)
)

#: Ops that may sit between Q·Kᵀ and the softmax (scale, mask, bias, casts).
SCORE_OPS = frozenset(
    getattr(aten, n) for n in (
        "div", "mul", "add", "sub", "masked_fill", "where", "_to_copy", "clone", "neg",
        "tanh", "clamp", "contiguous", "masked_fill_", "add_", "div_", "mul_", "to",
    ) if hasattr(aten, n)
)
#: Ops that may sit between the softmax and ·V (dropout, casts).
PROB_OPS = frozenset(
    getattr(aten, n) for n in (
        "_to_copy", "clone", "native_dropout", "dropout", "mul", "div", "masked_fill",
        "where", "contiguous", "to",
    ) if hasattr(aten, n)
)


@dataclass
class AttentionSite:
    """One attention computation in the model, with its cost in N and B."""

    name: str
    layer: str
    variant: str  # dense | local | sparse | linear
    implementation: str
    causal: bool
    heads: int
    kv_heads: int
    head_dim: int
    window: int | None
    query_len: sympy.Expr
    key_len: sympy.Expr
    flops: sympy.Expr
    useful_flops: sympy.Expr
    complexity: str
    #: what the site allocates on the target device (set by the memory model)
    memory_bytes: sympy.Expr | None = None
    density: float | None = None
    feature_dim: int | None = None
    mask: str | None = None
    #: the canonical formula (specs/variants.yaml) the code executes as written
    formula: str | None = None
    matches_formula: bool | None = None  # none | causal | window | pattern | unknown
    nodes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def flops_per_head(self) -> sympy.Expr:
        return sympy.expand(self.flops / self.heads)


def _packet(node: fx.Node):
    return getattr(node.target, "overloadpacket", node.target)


def _as_int(expr: sympy.Expr) -> int | None:
    expr = sympy.simplify(expr)
    return int(expr) if expr.is_Integer else None


def layer_of(path: str) -> str:
    """The repeated block a module belongs to: the path up to its last index
    (``model.layers.3.self_attn`` -> ``model.layers.3``)."""
    parts = path.split(".")
    for i in range(len(parts) - 1, -1, -1):
        if parts[i].isdigit():
            return ".".join(parts[: i + 1])
    return path


def to_nx(gm: fx.GraphModule) -> nx.DiGraph:
    """The fx graph as a networkx DiGraph of node names (edges: data flow)."""
    g = nx.DiGraph()
    for node in gm.graph.nodes:
        g.add_node(node.name, node=node)
        for inp in node.all_input_nodes:
            g.add_edge(inp.name, node.name)
    return g


def _expand_ratio(traced: TracedModel, start: fx.Node, limit: int = 12) -> sympy.Expr:
    """How many times the K (or V) operand was repeated on its way to the
    product: the product of numel ratios of the expands it went through."""
    ratio = sympy.Integer(1)
    node = start
    for _ in range(limit):
        if not isinstance(node, fx.Node) or node.op != "call_function":
            break
        if _packet(node) is aten.expand:
            src, dst = traced.shape(node.args[0]), traced.shape(node)
            if src is not None and dst is not None:
                ratio *= sympy.Mul(*dst) / sympy.Mul(*src)
        if not (is_view(node) or _packet(node) in (aten.clone, aten._to_copy, aten.contiguous)):
            break
        node = node.args[0]
    return sympy.simplify(ratio)


def _rows_split(traced, rows: sympy.Expr) -> tuple[int, sympy.Expr]:
    """Split score rows (B·H·N_q) into heads H and query length N_q."""
    per_batch = sympy.simplify(rows / B) if B in rows.free_symbols else rows
    coeff, rest = sympy.factor(per_batch).as_coeff_Mul()
    if coeff.is_Integer and coeff > 0:
        return int(coeff), rest
    return 1, per_batch


class Detector:
    """Finds attention sites in one traced model."""

    def __init__(self, traced: TracedModel, loaded=None, seq_len: int | None = None):
        self.traced = traced
        self.loaded = loaded
        self.seq_len = seq_len or traced.seq_len_hint
        self.graph = to_nx(traced.graph_module)
        self.nodes = {n.name: n for n in traced.graph_module.graph.nodes}

    def sites(self) -> list[AttentionSite]:
        found = []
        for node in self.traced.graph_module.graph.nodes:
            if node.op != "call_function":
                continue
            if node.target in FUSED_ATTENTION_OPS or _packet(node) in FUSED_ATTENTION_OPS:
                found.append(self._fused(node))
            elif _packet(node) in SOFTMAX_OPS:
                site = self._unfused(node)
                if site is not None:
                    found.append(site)
        used = {n for s in found for n in s.nodes}
        for node in self.traced.graph_module.graph.nodes:
            if node.op == "call_function" and _packet(node) in MATMUL_OPS and node.name not in used:
                site = self._linear(node, used)
                if site is not None:
                    found.append(site)
                    used.update(site.nodes)
        order = {n.name: i for i, n in enumerate(self.traced.graph_module.graph.nodes)}
        return sorted(found, key=lambda s: order[s.nodes[-1]])

    # ----------------------------------------------------------- linear

    def _contraction(self, mm: fx.Node) -> tuple[sympy.Expr, fx.Node, fx.Node] | None:
        """Contraction length and the two operands of an activation product."""
        a_op = 1 if _packet(mm) in (aten.baddbmm, aten.addmm) else 0
        a, b = mm.args[a_op], mm.args[a_op + 1]
        if self._is_weight(a) or self._is_weight(b):
            return None
        shape = self.traced.shape(a)
        return (shape[-1], a, b) if shape else None

    def _linear(self, state_mm: fx.Node, used: set[str]) -> AttentionSite | None:
        """Kernelized attention: a product summing over the sequence into a
        state with no N (phi(K)ᵀV), then applied to every query (phi(Q)·state)."""
        t = self.traced
        c = self._contraction(state_mm)
        out = t.shape(state_mm)
        if c is None or out is None:
            return None
        k_len = sympy.sympify(c[0])
        if N not in k_len.free_symbols or any(N in sympy.sympify(x).free_symbols for x in out):
            return None
        apply_mm = self._state_consumer(state_mm)
        if apply_mm is None:
            return None
        ca = self._contraction(apply_mm)
        out_apply = t.shape(apply_mm)
        if ca is None or out_apply is None:
            return None
        r = _as_int(ca[0]) or 0
        d = _as_int(out_apply[-1]) or 0
        heads, n_q = _rows_split(t, sympy.Mul(*out_apply[:-1]))
        module = t.module_path(apply_mm)
        site_nodes = [state_mm, apply_mm]
        # Normalizers and other activation products of the same module.
        for node in t.graph_module.graph.nodes:
            if (node.op == "call_function" and _packet(node) in MATMUL_OPS
                    and node not in site_nodes and node.name not in used
                    and t.module_path(node) == module and self._contraction(node) is not None):
                site_nodes.append(node)
        flops = sympy.expand(sum((node_flops(t, n) for n in site_nodes), sympy.Integer(0)))
        from .variants import SYMBOLS, formula

        f = formula("linear")
        values = {SYMBOLS["B"]: B, SYMBOLS["H"]: heads, SYMBOLS["N"]: n_q, SYMBOLS["d"]: d,
                  SYMBOLS["r"]: r}
        useful = sympy.expand(f.useful_flops.xreplace(values))
        order = {n: i for i, n in enumerate(t.graph_module.graph.nodes)}
        name = module or "<root>"
        return AttentionSite(
            name=name, layer=layer_of(module) or "<root>", variant="linear",
            implementation="einsum", causal=False, heads=heads, kv_heads=heads, head_dim=d,
            window=None, query_len=n_q, key_len=k_len, flops=flops, useful_flops=useful,
            complexity=f.complexity, mask=None,
            nodes=[n.name for n in sorted(site_nodes, key=order.__getitem__)],
            feature_dim=r, formula="linear",
            matches_formula=matches_formula(flops, "linear", values))

    def _state_consumer(self, state_mm: fx.Node, limit: int = 8) -> fx.Node | None:
        """The product that applies a sequence-free state to every query."""
        frontier = [state_mm]
        for _ in range(limit):
            nxt = []
            for node in frontier:
                for user in node.users:
                    if _packet(user) in MATMUL_OPS:
                        out = self.traced.shape(user)
                        if out and any(N in sympy.sympify(x).free_symbols for x in out):
                            return user
                        continue
                    if is_view(user) or _packet(user) in SCORE_OPS:
                        nxt.append(user)
            frontier = nxt
        return None

    # ------------------------------------------------------------ fused

    def _fused(self, node: fx.Node) -> AttentionSite:
        t = self.traced
        if node.target is FLEX_ATTENTION:
            q, k, v = node.args[:3]
            args = {}
            impl = "flex"
            block_mask = node.args[4] if len(node.args) > 4 else None
            mask_mod = block_mask[-1] if isinstance(block_mask, tuple) and block_mask else None
        else:
            args = schema_args(node)
            q, k, v = args.get("query", node.args[0]), args.get("key", node.args[1]), \
                args.get("value", node.args[2])
            impl = "sdpa"
        qs, ks, vs = t.shape(q), t.shape(k), t.shape(v)
        if _packet(node) in (aten._flash_attention_forward, aten._efficient_attention_forward):
            qs, ks, vs = [(s[0], s[2], s[1], s[3]) for s in (qs, ks, vs)]
        heads = _as_int(qs[1]) or 1
        kv_direct = _as_int(ks[1]) or heads
        ratio = _as_int(_expand_ratio(t, k)) or 1
        kv_heads = max(1, kv_direct // ratio) if kv_direct % ratio == 0 else kv_direct
        head_dim = _as_int(qs[-1]) or 0
        flops = node_flops(t, node)
        causal = bool(args.get("is_causal", False))
        mask_node = args.get("attn_mask")
        if impl == "flex":
            pattern = masks.pattern_of_mask_mod(self, mask_mod)
        elif isinstance(mask_node, fx.Node):
            pattern = masks.pattern_of(self, mask_node, polarity="allowed")
        elif causal:
            pattern = masks.MaskPattern.causal_mask()
        else:
            pattern = masks.MaskPattern.full()
        return self._site(node, impl, heads, kv_heads, head_dim, qs[-2], ks[-2], flops,
                          pattern, nodes=[node.name])

    # ---------------------------------------------------------- unfused

    def _unfused(self, softmax: fx.Node) -> AttentionSite | None:
        t = self.traced
        shape = t.shape(softmax)
        if shape is None or len(shape) < 2:
            return None
        dim = softmax.args[1] if len(softmax.args) > 1 else -1
        dim = dim % len(shape)
        n_keys = shape[dim]
        qk, mask_inputs, score_path = self._walk_back(softmax.args[0])
        if qk is None:
            return None
        if _packet(qk) is aten.baddbmm and isinstance(qk.args[0], fx.Node):
            # mask + Q·Kᵀ in one op (nn.MultiheadAttention with attn_mask)
            mask_inputs.append((qk.args[0], "additive"))
        a_op = 1 if _packet(qk) in (aten.baddbmm, aten.addmm) else 0
        # Scores and values come from activations; a product with a weight is a layer.
        if any(self._is_weight(x) for x in qk.args[a_op:a_op + 2]):
            return None
        qk_shape = t.shape(qk)
        # The softmax must be over the keys: the axis the Q·Kᵀ product produced.
        if sympy.simplify(qk_shape[-1] - n_keys) != 0 or dim != len(shape) - 1:
            return None
        pv, prob_path = self._walk_forward(softmax)
        if pv is None:
            return None
        p_operand = pv.args[1] if _packet(pv) in (aten.baddbmm, aten.addmm) else pv.args[0]
        if self._is_weight(pv.args[-1]):
            return None
        pv_a = t.shape(p_operand)
        if pv_a is None or sympy.simplify(pv_a[-1] - n_keys) != 0:
            return None
        rows = sympy.Mul(*shape) / n_keys
        heads, n_q = _rows_split(t, rows)
        head_dim = _as_int(t.shape(qk.args[a_op])[-1]) or 0
        k_operand = qk.args[a_op + 1]
        ratio = _as_int(_expand_ratio(t, k_operand)) or 1
        kv_heads = heads // ratio if ratio > 1 and heads % ratio == 0 else heads
        flops = sympy.expand(node_flops(t, qk) + node_flops(t, pv))
        if mask_inputs:
            pattern = masks.combine([masks.pattern_of(self, m, polarity=p) for m, p in mask_inputs])
        else:
            pattern = masks.MaskPattern.full()
        k_ops = {_packet(self.nodes[n]) for n in nx.ancestors(self.graph, k_operand.name)}
        if aten.unfold in k_ops:
            impl = "unfold"
        elif k_ops & GATHER_OPS and N not in sympy.sympify(n_keys).free_symbols:
            impl = "gather"
        elif pattern.kind in ("pattern", "window"):
            impl = "masked"
        else:
            impl = "unfused"
        site_nodes = [qk, *score_path, softmax, *prob_path, pv]
        return self._site(softmax, impl, heads, kv_heads, head_dim, n_q, n_keys, flops, pattern,
                          nodes=[n.name for n in site_nodes])

    def _is_weight(self, node, limit: int = 12) -> bool:
        """Is this operand a parameter or buffer (seen through views)?"""
        for _ in range(limit):
            if not isinstance(node, fx.Node):
                return False
            if node.op == "placeholder":
                return self.traced.placeholder_kinds.get(node.name) in ("parameter", "buffer")
            if node.op != "call_function" or not (
                    is_view(node) or _packet(node) in (aten._to_copy, aten.clone)):
                return False
            node = node.args[0]
        return False

    def _walk_back(self, start: fx.Node, limit: int = 16):
        """From the softmax input back to the Q·Kᵀ product, collecting the masks
        and biases applied on the way (with how to read them)."""
        masks_found: list[tuple[fx.Node, str]] = []
        path: list[fx.Node] = []
        node = start
        for _ in range(limit):
            if not isinstance(node, fx.Node) or node.op != "call_function":
                return None, [], []
            pk = _packet(node)
            if pk in MATMUL_OPS:
                return node, masks_found, path
            if not (pk in SCORE_OPS or is_view(node)):
                return None, [], []
            path.append(node)
            tensor_args = [a for a in node.args if isinstance(a, fx.Node)]
            if pk in (aten.masked_fill, aten.masked_fill_):
                masks_found.append((node.args[1], "masked_fill"))
                node = node.args[0]
            elif pk is aten.where:
                cond, a, b = node.args[:3]
                on_a = isinstance(a, fx.Node) and self._reaches_matmul(a)
                masks_found.append((cond, "allowed" if on_a else "blocked"))
                node = a if on_a else b
            elif pk in (aten.add, aten.sub, aten.add_) and len(tensor_args) == 2:
                main, other = self._main_operand(tensor_args)
                masks_found.append((other, "additive"))
                node = main
            elif tensor_args:
                node = self._main_operand(tensor_args)[0] if len(tensor_args) > 1 else tensor_args[0]
            else:
                return None, [], []
        return None, [], []

    def _main_operand(self, args: list[fx.Node]) -> tuple[fx.Node, fx.Node]:
        """Of two operands, the one that carries the scores (reaches Q·Kᵀ)."""
        a, b = args[0], args[1]
        if self._reaches_matmul(a):
            return a, b
        return b, a

    def _reaches_matmul(self, node: fx.Node, limit: int = 16) -> bool:
        for _ in range(limit):
            if not isinstance(node, fx.Node) or node.op != "call_function":
                return False
            if _packet(node) in MATMUL_OPS:
                return True
            if not (_packet(node) in SCORE_OPS or is_view(node)):
                return False
            tensor_args = [a for a in node.args if isinstance(a, fx.Node)]
            if not tensor_args:
                return False
            if len(tensor_args) > 1:
                return any(self._reaches_matmul(a, limit - 1) for a in tensor_args)
            node = tensor_args[0]
        return False

    def _walk_forward(self, softmax: fx.Node, limit: int = 8):
        """From the softmax to the product that applies it to V."""
        frontier = [(softmax, [])]
        for _ in range(limit):
            nxt = []
            for node, path in frontier:
                for user in node.users:
                    pk = _packet(user)
                    if pk in MATMUL_OPS:
                        p_idx = 1 if pk in (aten.baddbmm, aten.addmm) else 0
                        if user.args[p_idx] is node:
                            return user, path
                        continue
                    if pk in PROB_OPS or is_view(user) or user.target is _getitem:
                        nxt.append((user, path + [user]))
            frontier = nxt
            if not frontier:
                break
        return None, []

    # -------------------------------------------------------------- site

    def _site(self, node, impl, heads, kv_heads, head_dim, n_q, n_k, flops, pattern,
              nodes) -> AttentionSite:
        name = self.traced.module_path(node)
        c = classify(pattern, impl, heads, head_dim, n_q, n_k, flops)
        site = AttentionSite(
            name=name or "<root>", layer=layer_of(name) or "<root>", variant=c.variant,
            implementation=impl, causal=pattern.causal, heads=heads, kv_heads=kv_heads,
            head_dim=head_dim, window=c.window, query_len=n_q, key_len=n_k,
            flops=flops, useful_flops=c.useful_flops,
            complexity=c.complexity, density=pattern.density, mask=pattern.kind,
            nodes=nodes, notes=list(pattern.notes), formula=c.as_written,
            matches_formula=matches_formula(flops, c.as_written, c.values))
        # FlexAttention skips masked blocks itself: no waste to report.
        note = waste_note(site, self.seq_len) if impl != "flex" else None
        if note:
            site.notes.append(note)
        return site

_getitem = __import__("operator").getitem


@dataclass
class Classification:
    variant: str
    useful_flops: sympy.Expr
    window: int | None
    complexity: str
    #: the canonical formula that the code as written executes
    as_written: str
    #: values of the canonical formula's symbols for this site
    values: dict


def classify(pattern, impl, heads, head_dim, n_q, n_k, flops) -> Classification:
    """Variant, useful FLOPs, window and complexity class of a site, from its
    mask pattern and its query/key lengths, by the canonical formulas."""
    from .variants import SYMBOLS, formula

    values = {SYMBOLS["B"]: B, SYMBOLS["H"]: heads, SYMBOLS["N"]: n_q, SYMBOLS["M"]: n_k,
              SYMBOLS["d"]: head_dim}
    keys_grow = N in sympy.sympify(n_k).free_symbols
    if not keys_grow and N in sympy.sympify(n_q).free_symbols:
        # Each query meets a fixed number of keys, all of which the code
        # computes: a window cut out with unfold, blocks gathered by index,
        # or a fixed context (cross-attention to a few tokens).
        kept = _as_int(n_k)
        if impl == "unfold":
            values[SYMBOLS["w"]] = kept
            return Classification("local", flops, kept, formula("local").complexity, "local", values)
        if impl == "gather":
            values[SYMBOLS["k"]] = kept
            return Classification("sparse", flops, None, formula("sparse").complexity, "sparse",
                                  values)
        return Classification("dense", flops, None, formula("dense").complexity, "dense", values)
    if pattern.kind == "causal":
        f = formula("causal_dense")
        return Classification("dense", sympy.expand(f.useful_flops.xreplace(values)), None,
                              f.complexity, "dense", values)
    if pattern.kind == "window" and pattern.window:
        values[SYMBOLS["w"]] = pattern.window
        return Classification("local", masks.window_useful_flops(pattern, values), pattern.window,
                              formula("local").complexity, "dense", values)
    if pattern.kind == "pattern" and pattern.density is not None:
        return Classification("sparse", masks.pattern_useful_flops(pattern, flops), None,
                              formula("sparse").complexity, "dense", values)
    return Classification("dense", flops, None, formula("dense").complexity, "dense", values)


def matches_formula(flops: sympy.Expr, name: str, values: dict) -> bool:
    """Does the traced count equal the canonical formula of ``name``?"""
    from .variants import formula

    canonical = formula(name).flops.xreplace(values)
    return sympy.expand(canonical - flops) == 0


def waste_note(site: "AttentionSite", seq_len: int) -> str | None:
    """A plain-words note when the code computes far more than its pattern needs."""
    done = value_at(site.flops, seq_len)
    needed = value_at(site.useful_flops, seq_len)
    if needed <= 0 or done < WASTE_FACTOR * needed:
        return None
    factor = done / needed
    if site.variant == "sparse":
        return (f"{site.implementation} sparse attention computes all N×N scores: {factor:.1f}× "
                "what its pattern needs; a block-sparse kernel would skip them")
    if site.variant == "local":
        return (f"the sliding window is applied as a mask over all N×N scores: {factor:.1f}× what "
                "the window needs; a sliding-window kernel (FlexAttention, flash-attn "
                "window_size) would skip them")
    return f"computes {factor:.1f}× the attention its mask lets through"


#: Computing this many times the needed work earns a note.
WASTE_FACTOR = 3
