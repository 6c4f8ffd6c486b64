"""What is alive: the memory model's data (allocations, the peak and what
makes it up), evaluated exactly at any N and B."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sympy
import torch.fx as fx

from ..expr import B, shape_text, value_at
from ..paths import any_index, layer_or_path
from ..rules.ops import op_name
from ..tracing.graph import tensor_outputs
from ..units import short_dtype


@dataclass
class Allocation:
    """One storage the forward allocates: when it is created and freed."""

    time: int                  # position in the forward's order of ops
    death: int | None          # first time it is no longer alive; None: alive at the end
    bytes: sympy.Expr
    node: fx.Node | None       # the graph node that produced it
    output: int = 0            # which of the node's tensor outputs
    kind: str = "tensor"       # tensor | workspace (alive only inside its op)
    label: str = ""
    #: made inside softmax(fp16, dtype=float32): a CUDA kernel upcasts in place
    half_softmax: bool = False

    def alive_at(self, t: int) -> bool:
        return self.time <= t and (self.death is None or t < self.death)


@dataclass
class BreakdownEntry:
    """One tensor at the peak, or a group of like tensors (one per layer),
    with its share of the peak."""

    name: str
    module_path: str
    layer: str
    shape: str
    dtype: str
    bytes: int
    share: float
    count: int = 1
    node: str = ""  # the fx node that made it (the first one of a group)


@dataclass
class Candidate:
    """Live intermediate bytes right after one op allocated its outputs."""

    time: int
    terms: dict[sympy.Expr, sympy.Rational]
    layer: str


@dataclass
class Profile:
    """Allocations and their peak, from one replay (one batch case)."""

    allocations: list[Allocation]
    front: list[Candidate]
    layer_fronts: dict[str, list[Candidate]]
    node_bytes: dict[str, sympy.Expr]

    def intermediate_at(self, n: int, b: int) -> int:
        return max((value_at(c.terms, n, b) for c in self.front), default=0)


@dataclass
class MemoryModel:
    """Peak memory of one no-grad forward on ``device``, in N and B.

    Eager PyTorch views where it would copy for a batch of one (merging a
    size-1 batch dim into the rows of a matmul), so B = 1 may have a profile
    of its own; expressions then read ``Piecewise((at B=1, Eq(B, 1)), (else, True))``.
    """

    device: str
    weight_bytes: int
    input_bytes: sympy.Expr
    #: weights + buffers + workspaces + inputs + peak of live intermediates
    peak_bytes: sympy.Expr
    #: "eager replay" or "graph last use"
    liveness: str
    n_range: tuple[int, int | None] = (1, None)
    notes: list[str] = field(default_factory=list)
    #: library workspaces held once the first kernel needing them ran (cuBLAS)
    workspace_bytes: int = 0
    _profiles: dict[int | None, Profile] = field(default_factory=dict, repr=False)
    _traced: Any = field(default=None, repr=False)

    def _profile(self, b: int) -> Profile:
        return self._profiles.get(b) or self._profiles[None]

    def intermediate_at(self, n: int, b: int = 1) -> int:
        """Peak of live intermediates at N=n, B=b (bytes)."""
        return self._profile(b).intermediate_at(n, b)

    def at(self, n: int, b: int = 1) -> int:
        """Peak bytes at N=n, B=b, exactly."""
        return (self.weight_bytes + self.workspace_bytes + value_at(self.input_bytes, n, b)
                + self.intermediate_at(n, b))

    def layer_peaks_at(self, n: int, b: int = 1) -> dict[str, int]:
        """Layer -> peak of live intermediates while its ops run, at N=n, B=b."""
        fronts = self._profile(b).layer_fronts
        return {layer: max(value_at(c.terms, n, b) for c in cs) for layer, cs in fronts.items()}

    def peak_time(self, n: int, b: int = 1) -> int | None:
        """The op after which the peak is reached at N=n, B=b."""
        front = self._profile(b).front
        if not front:
            return None
        return max(front, key=lambda c: value_at(c.terms, n, b)).time

    def breakdown(self, n: int, b: int = 1, top: int = 8) -> list[BreakdownEntry]:
        """What is alive at the peak for N=n, B=b: the largest tensors first,
        then weights, inputs and the rest, each with its share of the peak."""
        total = self.at(n, b)

        def share(x: int) -> float:
            return x / total if total else 0.0

        ranked = self._live_groups(n, b, share)
        entries = ranked[:top]
        entries.append(BreakdownEntry("weights and buffers", "", "", "", "", self.weight_bytes,
                                      share(self.weight_bytes)))
        inputs = value_at(self.input_bytes, n, b)
        entries.append(BreakdownEntry("inputs", "", "", "", "", inputs, share(inputs)))
        rest = ranked[top:]
        if rest:
            rest_bytes = sum(e.bytes for e in rest)
            entries.append(BreakdownEntry("smaller tensors", "", "", "", "", rest_bytes,
                                          share(rest_bytes), sum(e.count for e in rest)))
        return entries

    def _live_groups(self, n: int, b: int, share) -> list[BreakdownEntry]:
        """Tensors alive at the peak, like tensors of different layers (a KV
        cache) grouped as one entry, largest first."""
        t = self.peak_time(n, b)
        live = [a for a in self._profile(b).allocations if t is not None and a.alive_at(t)]
        sized = sorted(((value_at(a.bytes, n, b), a) for a in live), key=lambda x: -x[0])
        groups: dict[tuple, BreakdownEntry] = {}
        for nbytes, a in sized:
            if nbytes <= 0:
                continue
            e = self._entry(a, nbytes, share(nbytes))
            key = (e.name, e.dtype, e.shape, any_index(e.module_path))
            if key in groups:
                g = groups[key]
                g.bytes += nbytes
                g.share = share(g.bytes)
                g.count += 1
                g.module_path = key[3]
                g.layer = any_index(g.layer)
            else:
                groups[key] = e
        return sorted(groups.values(), key=lambda e: -e.bytes)

    def _entry(self, a: Allocation, nbytes: int, share: float) -> BreakdownEntry:
        node = a.node
        path = self._traced.module_path(node) if (node is not None and self._traced) else ""
        shape = dtype = ""
        if node is not None and a.kind != "workspace":
            outs = tensor_outputs(node)
            if a.output < len(outs):
                t = outs[a.output]
                dims = [self._traced.expr(s) for s in t.shape]
                shape = shape_text(dims)
                dtype = short_dtype(t.dtype)
        name = a.label or (op_name(node).lstrip("_") or op_name(node) if node is not None else "tensor")
        return BreakdownEntry(name, path, layer_or_path(path), shape, dtype, nbytes, share,
                              node=node.name if node is not None else "")

    def site_allocated_bytes(self, site) -> sympy.Expr:
        """What an attention site allocates on the target device: the sum of
        the tensors its ops create (views and copies the eager run does not
        make count nothing; a fused kernel counts its outputs and workspace)."""
        def total(profile: Profile) -> sympy.Expr:
            return sympy.expand(sum((profile.node_bytes.get(name, sympy.Integer(0))
                                     for name in site.nodes), sympy.Integer(0)))
        return by_batch({b: total(p) for b, p in self._profiles.items()})


def by_batch(values: dict[int | None, sympy.Expr]) -> sympy.Expr:
    """One expression from per-batch-case ones (Piecewise only where they differ)."""
    general = values[None]
    single = values.get(1)
    if single is None or sympy.expand(single - general) == 0:
        return general
    return sympy.Piecewise((single, sympy.Eq(B, 1)), (general, True))
