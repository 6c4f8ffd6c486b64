"""The analysis of one model: sites, totals and memory, as SymPy expressions.

This is the data model every output is rendered from (table, JSON, YAML,
Markdown, plots).  ``analyze`` is the library's entry point; the CLI is a thin
layer over it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import sympy
import torch

from .detect import AttentionSite, Detector
from .errors import AttncostError, ModelError
from .loader import DTYPES, LoadedModel, load
from .memory import peak_memory
from .symbolic import leading_term, node_flops
from .tracer import N, TracedModel, trace, value_at

DEVICES = ("cuda", "cpu")


@dataclass
class QuadraticTensor:
    """An intermediate whose size grows as N² (a mask, a bias, a score matrix)."""

    node: str
    op: str
    layer: str
    shape: tuple
    dtype: str
    bytes: sympy.Expr
    in_site: bool  # part of an attention site's own computation


def _op_name(node) -> str:
    """aten.bitwise_not.default -> bitwise_not."""
    packet = getattr(node.target, "overloadpacket", None)
    return getattr(packet, "__name__", None) or str(getattr(node.target, "__name__", node.target))


def quadratic_tensors(traced: TracedModel, sites: list[AttentionSite]) -> list[QuadraticTensor]:
    """Every allocated tensor whose bytes are of degree >= 2 in N."""
    from .detect import layer_of
    from .symbolic import degree, is_view, tensor_bytes

    site_nodes = {n for s in sites for n in s.nodes}
    out = []
    for node in traced.graph_module.graph.nodes:
        if node.op != "call_function" or is_view(node):
            continue
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            continue
        size = tensor_bytes(traced, node)
        if degree(size, N) < 2:
            continue
        path = traced.module_path(node)
        out.append(QuadraticTensor(
            node=node.name, op=_op_name(node),
            layer=layer_of(path) or "<root>", shape=traced.shape(node),
            dtype=str(val.dtype).replace("torch.", ""), bytes=size,
            in_site=node.name in site_nodes))
    return out


@dataclass
class Analysis:
    """What the attention of one model costs, for every N the trace holds for."""

    model: str
    seq_len: int
    batch: int
    dtype: str
    device: str
    sites: list[AttentionSite]
    flops: sympy.Expr
    weight_bytes: int
    peak_memory_bytes: sympy.Expr | None
    n_range: tuple[int, int | None]
    guards: list[str] = field(default_factory=list)
    source: str = "file"
    attn_implementation: str | None = None
    kv_cache: bool = False
    memory: Any = None
    quadratic: list[QuadraticTensor] = field(default_factory=list)
    traced: TracedModel | None = field(default=None, repr=False)
    loaded: LoadedModel | None = field(default=None, repr=False)

    @property
    def attention_flops(self) -> sympy.Expr:
        return sympy.expand(sum((s.flops for s in self.sites), sympy.Integer(0)))

    @property
    def useful_attention_flops(self) -> sympy.Expr:
        return sympy.expand(sum((s.useful_flops for s in self.sites), sympy.Integer(0)))

    def at(self, expr: sympy.Expr, seq_len: int | None = None, batch: int | None = None) -> int:
        """Evaluate one of this analysis' expressions (default: the requested N, B)."""
        return value_at(expr, self.seq_len if seq_len is None else seq_len,
                        self.batch if batch is None else batch)

    @property
    def subquadratic(self) -> bool:
        """Does every site need less than N² work (local, sparse, linear)?"""
        from .symbolic import degree

        return bool(self.sites) and all(degree(s.useful_flops, N) < 2 or s.variant != "dense"
                                        for s in self.sites) and any(
            s.variant in ("local", "sparse", "linear") for s in self.sites)

    def hidden_quadratics(self) -> list[QuadraticTensor]:
        """N² tensors outside the attention computations themselves (masks,
        biases) in a model whose attention needs less than N² work."""
        return [q for q in self.quadratic if not q.in_site] if self.subquadratic else []

    def valid_for(self) -> str | None:
        """The range of N the formulas hold for, when a branch narrowed it."""
        lo, hi = self.n_range
        if lo <= 2 and hi is None:
            return None
        if hi is None:
            return f"N >= {lo}"
        return f"{lo} <= N <= {hi}"

    def to_dict(self) -> dict:
        """DESIGN.md's JSON object for `attncost analyze`."""
        def ev(expr):
            return {"expr": str(sympy.expand(expr)), "value": self.at(expr)}

        sites = []
        for s in self.sites:
            sites.append({
                "name": s.name, "layer": s.layer, "variant": s.variant,
                "implementation": s.implementation, "causal": s.causal,
                "heads": s.heads, "kv_heads": s.kv_heads, "head_dim": s.head_dim,
                "window": s.window,
                "flops": ev(s.flops),
                "useful_flops": ev(s.useful_flops),
                "flops_per_head": ev(s.flops_per_head),
                "memory_bytes": ev(s.memory_bytes),
                "complexity": s.complexity,
                "query_len": str(s.query_len), "key_len": str(s.key_len),
                "mask": s.mask, "density": s.density, "feature_dim": s.feature_dim,
                "formula": s.formula, "matches_formula": s.matches_formula,
                "notes": list(s.notes),
            })
        totals = {
            "flops": ev(self.flops),
            "attention_flops": ev(self.attention_flops),
            "useful_attention_flops": ev(self.useful_attention_flops),
            "weight_bytes": int(self.weight_bytes),
            "peak_memory_bytes": ev(self.peak_memory_bytes) if self.peak_memory_bytes is not None else None,
            "leading_term": str(leading_term(self.flops, N)),
        }
        quadratic = [{
            "node": q.node, "op": q.op, "layer": q.layer, "shape": [str(x) for x in q.shape],
            "dtype": q.dtype, "bytes": ev(q.bytes), "in_attention_site": q.in_site,
        } for q in self.quadratic]
        return {
            "model": self.model, "seq_len": self.seq_len, "batch": self.batch,
            "dtype": self.dtype, "device": self.device,
            "attn_implementation": self.attn_implementation,
            "sites": sites, "totals": totals,
            "valid_for": self.valid_for(), "guards": list(self.guards),
            "quadratic_tensors": quadratic,
            "memory_notes": list(self.memory.notes) if self.memory is not None else [],
            "peak_breakdown": [{
                "tensor": e.name, "module": e.module_path, "layer": e.layer, "shape": e.shape,
                "dtype": e.dtype, "bytes": e.bytes, "share": round(e.share, 4), "count": e.count,
            } for e in self.memory.breakdown(self.seq_len, self.batch, top=5)]
            if self.memory is not None else [],
            "hidden_quadratic": bool(self.hidden_quadratics()),
        }


def _dtype_name(dtype: torch.dtype) -> str:
    return next(k for k, v in DTYPES.items() if v == dtype)


def analyze(model: str | Path | LoadedModel, seq_len: int, batch: int = 1,
            dtype: str | None = None, device: str = "cuda",
            attn_implementation: str | None = None, kv_cache: bool | None = None,
            progress: Callable[[str], None] | None = None,
            last_logits_only: bool = False) -> Analysis:
    """Trace ``model`` once and derive its attention cost as formulas in N and B.

    ``model`` is a path (a .py file, a transformers config.json or its
    folder) or an already loaded model.  Every expression of the result holds
    for all N in ``result.n_range``; ``result.at(expr, N, B)`` evaluates one.
    """
    seq_len, batch = int(seq_len), int(batch)
    if seq_len <= 0:
        raise AttncostError(f"--seq-len must be a positive integer, not {seq_len}")
    if batch <= 0:
        raise AttncostError(f"--batch must be a positive integer, not {batch}")
    if device not in DEVICES:
        raise AttncostError(f"unknown device {device!r}: use one of {', '.join(DEVICES)}")
    if progress:
        progress("loading the model")
    loaded = model if isinstance(model, LoadedModel) else load(
        model, dtype=dtype, attn_implementation=attn_implementation, kv_cache=kv_cache,
        last_logits_only=last_logits_only)
    traced = trace(loaded, seq_len, batch, progress=progress)
    lo, hi = traced.n_range
    if seq_len < lo or (hi is not None and seq_len > hi):
        raise ModelError(f"the model's own code constrains the length: N={seq_len} is outside "
                         f"{lo}..{hi or 'inf'}")
    if progress:
        progress("finding attention sites")
    sites = Detector(traced, loaded, seq_len).sites()
    if progress:
        progress("deriving formulas")
    flops = sympy.Integer(0)
    for node in traced.graph_module.graph.nodes:
        flops += node_flops(traced, node)
    flops = sympy.expand(flops)
    if progress:
        progress("following tensor lifetimes for the peak memory")
    memory = peak_memory(traced, loaded, device=device)
    peak = memory.peak_bytes
    weight_bytes = int(memory.weight_bytes)
    for site in sites:
        site.memory_bytes = memory.site_memory_bytes(site)
    return Analysis(
        model=str(loaded.path), seq_len=seq_len, batch=batch, dtype=_dtype_name(loaded.dtype),
        device=device, sites=sites, flops=flops, weight_bytes=int(weight_bytes),
        peak_memory_bytes=peak, n_range=traced.n_range, guards=traced.guards,
        source=loaded.source, attn_implementation=loaded.attn_implementation,
        kv_cache=loaded.kv_cache, memory=memory, quadratic=quadratic_tensors(traced, sites),
        traced=traced, loaded=loaded)
