"""An attention site: one attention computation, its shape and its cost in N and B."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import sympy
import torch
import torch.fx as fx

from ..expr import B
from ..paths import enclosing, layer_or_path
from ..patterns import MaskPattern, classify, matches_formula, waste_factor
from ..patterns.classify import formula_values
from ..rules.ops import MATMUL_OPS, RANKING_OPS, packet


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
    #: bytes the site's ops allocate on the target device (set by the memory
    #: model); JSON calls it memory_bytes.  Not bytes moved.
    allocated_bytes: sympy.Expr | None = None
    #: in a training step: the FLOPs of the site's backward (training/sites.py)
    backward_flops: sympy.Expr | None = None
    density: float | None = None
    feature_dim: int | None = None
    mask: str | None = None
    #: the canonical formula (specs/variants.yaml) the code executes as written
    formula: str | None = None
    matches_formula: bool | None = None
    #: how many times what its pattern needs the code computes, when >= 3
    waste_factor: float | None = None
    nodes: list[str] = field(default_factory=list)
    #: the input's values choose which keys each query meets (routing, hashing)
    content_based: bool = False
    #: the share of its ops' work that is this site's: 1, or, where the heads
    #: of one computation let different pairs through, its heads' share
    head_share: sympy.Rational = sympy.Integer(1)
    #: which heads of the computation they are, when not all
    head_indices: list[int] | None = None
    #: what could not be read (a mask not evaluated, masks differing by head)
    notes: list[str] = field(default_factory=list)
    #: the masks read for its pattern, with their polarity (detect/blocks.py
    #: places a block's allowed pairs in the whole computation's)
    block_masks: list | None = field(default=None, repr=False, compare=False)
    #: a fused call's is_causal, its block's triangle (detect/blocks.py)
    block_causal: bool = field(default=False, repr=False, compare=False)

    @property
    def flops_per_head(self) -> sympy.Expr:
        return sympy.expand(self.flops / self.heads)


@dataclass
class SiteShape:
    """What a recogniser read off the graph for one site."""

    implementation: str
    heads: int
    kv_heads: int
    head_dim: int
    query_len: sympy.Expr
    key_len: sympy.Expr
    flops: sympy.Expr
    head_dim_v: int | None = None
    #: the sequence folded into the batch in windows of key_len keys, each
    #: query meeting its window's (a fused call on windows): blocked
    windows: bool = False
    #: the width each (query, key) pair's score adds beyond Q·Kᵀ's, from
    #: other products added to the scores (Transformer-XL's position term):
    #: a pair's work is 2·(head_dim + this + head_dim_v)
    score_term_width: int = 0


def content_based(ctx, operands, masks=()) -> bool:
    """Do the input's values choose which (query, key) pairs meet: rows of
    Q or K picked by an index computed from activations, or a boolean mask
    computed from them?  (A float bias computed from them weighs pairs; it
    does not choose them.)"""
    if any(ctx.selected_by_content(o) for o in operands):
        return True
    for mask in masks:
        val = mask.meta.get("val") if isinstance(mask, fx.Node) else None
        if isinstance(val, torch.Tensor) and val.dtype == torch.bool and mask in ctx.activations:
            return True
        if isinstance(mask, fx.Node) and _ranked_by_content(ctx, mask):
            return True
    return False


def _ranked_by_content(ctx, mask: fx.Node, limit: int = 64) -> bool:
    """Is the mask, of any dtype, built from a ranking of activations (the
    keys a top-k of scores computed from the input keeps: Doge's dynamic
    mask)?  A bias that only adds them weighs pairs; a ranking chooses."""
    seen, stack = set(), [mask]
    while stack and len(seen) < limit:
        n = stack.pop()
        if not isinstance(n, fx.Node) or n in seen or n.op != "call_function":
            continue
        seen.add(n)
        if packet(n) in RANKING_OPS and n.args and n.args[0] in ctx.activations:
            return True
        stack.extend(n.all_input_nodes)
    return False


def build_sites(ctx, node: fx.Node, shape: SiteShape, pattern: MaskPattern,
                nodes: list[fx.Node]) -> list[AttentionSite]:
    """The site of one attention computation, or, where its heads let
    different pairs through (some local, some global), one site per group
    of heads, each with its heads' share of the work."""
    if not pattern.head_groups:
        return [build_site(ctx, node, shape, pattern, nodes)]
    sites = []
    for heads, part in pattern.head_groups:
        share = sympy.Rational(len(heads), shape.heads)
        part.content = pattern.content
        kv_heads = max(1, -(-shape.kv_heads * len(heads) // shape.heads))
        site = build_site(ctx, node, replace(shape, heads=len(heads), kv_heads=kv_heads,
                                             flops=sympy.expand(shape.flops * share)),
                          part, nodes)
        site.head_share, site.head_indices = share, list(heads)
        site.name = f"{site.name}(heads={_ranges(heads)})"
        sites.append(site)
    return sites


def _ranges(indices: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5'."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def _site_module(ctx, node: fx.Node, nodes: list[fx.Node]) -> str:
    """The module a site is named for: the one that runs its softmax (or
    what weighs its scores), or, where that is a module of its own (an
    ``nn.Softmax`` child), the one around it that runs its products too."""
    path = ctx.traced.module_path
    return enclosing([path(node)] + [path(n) for n in nodes
                                     if n.op == "call_function" and packet(n) in MATMUL_OPS])


def build_site(ctx, node: fx.Node, shape: SiteShape, pattern: MaskPattern,
               nodes: list[fx.Node]) -> AttentionSite:
    """A site from what a recogniser read and the pattern of its mask."""
    name = _site_module(ctx, node, nodes) or "<root>"
    values = formula_values(shape.heads, shape.head_dim + shape.score_term_width,
                            shape.head_dim_v or shape.head_dim, shape.query_len, shape.key_len,
                            batched=B in sympy.sympify(shape.flops).free_symbols)
    c = classify(pattern, "blocked" if shape.windows else shape.implementation, values,
                 shape.flops)
    site = AttentionSite(
        name=name, layer=layer_or_path(name), variant=c.variant,
        implementation=shape.implementation, causal=pattern.causal, heads=shape.heads,
        kv_heads=shape.kv_heads, head_dim=shape.head_dim, window=c.window,
        query_len=shape.query_len, key_len=shape.key_len, flops=shape.flops,
        useful_flops=c.useful_flops, complexity=c.complexity, density=pattern.density,
        mask=pattern.kind, content_based=pattern.content, nodes=[n.name for n in nodes], notes=list(pattern.notes),
        formula=c.as_written, matches_formula=matches_formula(shape.flops, c.as_written, values))
    # FlexAttention and a windowed flash kernel skip masked blocks themselves.
    if shape.implementation not in ("flex", "flash"):
        site.waste_factor = waste_factor(site.flops, site.useful_flops, ctx.seq_len)
    return site
