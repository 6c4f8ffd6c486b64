"""What is alive: peak memory of one forward pass without gradients, as an
expression in N and B.

What is counted is what ``torch.cuda.max_memory_allocated()`` would report
after the model is loaded: weights and buffers, library workspaces, the
inputs, and the largest sum of intermediate tensors alive at once.

The flow: the forward is replayed eagerly on fake tensors (replay.py; a
repeated stack two periods deep, extended to every layer: periodic.py) for
the order in which Python creates and frees storages; each storage is
matched to the graph node that made it (align.py), whose shape gives its
size as an expression; the target device's allocation rules
(rules/allocation.py) replace what its kernels allocate differently; the
live bytes after each op become candidates for the peak, and the envelope
(envelope.py) keeps those that can be the largest.  If the replay cannot
run, liveness falls back to last use in the graph (liveness.py).

Not modelled: the caching allocator rounding each block up to 512 bytes,
and workspaces of kernels other than attention and cuBLAS.
"""
from __future__ import annotations

import sympy

from ..errors import first_line
from ..rules import DEVICES, on_device, workspace_bytes
from .align import match_replay
from .envelope import candidates, max_expr, prune
from .liveness import graph_allocations
from .model import Allocation, BreakdownEntry, MemoryModel, Profile, by_batch
from .quantized import quantize_cache, weight_bytes
from .replay import replay, same_lifetimes

__all__ = ["Allocation", "BreakdownEntry", "MemoryModel", "peak_memory"]


def peak_memory(traced, loaded=None, device: str = "cuda",
                allocation_rules=None) -> MemoryModel:
    """Peak memory of one forward of ``traced`` on ``device`` ("cuda" or "cpu").

    With ``loaded`` the forward is replayed eagerly on fake tensors (at the
    trace's length, for the trace's batch and for a batch of one); without
    it, or if the replay fails, liveness is last use in the graph.
    ``allocation_rules`` overrides the device's rules for this call.
    ``loaded.quantization`` (memory/quantized.py) sizes quantized weights
    and a quantized KV cache."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    notes: list[str] = []
    per_batch, liveness = _allocations(traced, loaded, notes)
    lo = traced.n_range[0] if traced.n_range else 1
    quant = getattr(loaded, "quantization", None)
    profiles = {key: _profile(traced, quantize_cache(
                    traced, on_device(traced, allocations, device, allocation_rules), quant, notes), lo)
                for key, allocations in per_batch.items()}
    notes.extend(_thread_notes(profiles))
    weights = weight_bytes(loaded.module, quant) if loaded is not None else _placeholder_bytes(
        traced, "parameter", "buffer")
    inputs = sympy.expand(_placeholder_bytes(traced, "input"))
    intermediates = by_batch({k: max_expr([c.terms for c in p.front]) for k, p in profiles.items()})
    workspace = workspace_bytes(traced, device)
    return MemoryModel(device=device, weight_bytes=int(weights), input_bytes=inputs,
                       peak_bytes=sympy.Integer(int(weights) + workspace) + inputs + intermediates,
                       workspace_bytes=workspace, liveness=liveness, n_range=traced.n_range,
                       notes=list(dict.fromkeys(notes)), _profiles=profiles, _traced=traced)


def _thread_notes(profiles) -> list[str]:
    """A kernel scratch sized by this machine's thread count says so."""
    from ..rules.cpu import SCRATCH_LABEL

    labels = {a.label for p in profiles.values() for a in p.allocations
              if a.label.startswith(SCRATCH_LABEL)}
    return [f"{label}: sized by this machine's thread count; another CPU's differs"
            for label in sorted(labels)]


def _allocations(traced, loaded, notes: list[str]):
    """Allocations per batch case (None: the trace's batch; 1: a batch of
    one, where eager PyTorch may view instead of copy), and the liveness used."""
    per_batch: dict[int | None, list[Allocation]] = {}
    replays = {}
    if loaded is not None:
        for key, batch in ((None, traced.batch_hint), (1, 1)):
            try:
                replays[key] = replay(traced, loaded, batch,
                                      checked=key == 1 and replays[None].extended)
                if key == 1 and same_lifetimes(replays[None], replays[1]):
                    break  # a batch of one keeps every tensor the general case keeps
                per_batch[key] = match_replay(traced, replays[key], notes)
            except Exception as exc:  # the model cannot run eagerly on fake tensors
                notes.append(f"eager replay at B={batch} failed ({type(exc).__name__}: "
                             f"{first_line(exc)})" + ("; liveness follows last use in the graph"
                                                     if key is None else ""))
                break
    if None in per_batch:
        return per_batch, "eager replay"
    return {None: graph_allocations(traced)}, "graph last use"


def _profile(traced, allocations: list[Allocation], lo: int) -> Profile:
    """The envelope of live bytes, overall and per layer, and each node's bytes."""
    found = candidates(traced, allocations)
    layer_fronts: dict[str, list] = {}
    for c in found:
        if c.layer:
            layer_fronts.setdefault(c.layer, []).append(c)
    node_bytes: dict[str, sympy.Expr] = {}
    for a in allocations:
        if a.node is not None:
            node_bytes[a.node.name] = node_bytes.get(a.node.name, sympy.Integer(0)) + a.bytes
    return Profile(allocations, prune(found, lo),
                   {layer: prune(cs, lo) for layer, cs in layer_fronts.items()}, node_bytes)


def _weight_bytes(module) -> int:
    """Parameters and buffers, each tensor once (tied weights count once)."""
    return weight_bytes(module)


def _placeholder_bytes(traced, *kinds: str) -> sympy.Expr:
    total = sympy.Integer(0)
    for kind in kinds:
        for node in traced.placeholders(kind):
            total += sum(traced.output_bytes(node), sympy.Integer(0))
    return total
