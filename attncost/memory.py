"""Peak memory of one forward pass without gradients, as an expression in N and B.

What is counted is what ``torch.cuda.max_memory_allocated()`` would report
after the model is loaded: weights and buffers, the inputs, and the largest
sum of intermediate tensors alive at once during the forward.

When a tensor dies decides the answer.  The graph alone says when a tensor is
last *used*, but eager PyTorch frees it when the last Python reference goes:
``attn = softmax(attn, dtype=float32).to(bf16)`` keeps the old bf16 scores
alive until the whole line is done, so the bf16 scores, the fp32 softmax and
its bf16 copy coexist; and a symbolic trace inserts copies that a concrete
run does not make (a ``clone`` before ``bmm`` where ``matmul`` would view).
So the forward is replayed once, eagerly, on fake tensors at the trace's
sizes (nothing is allocated), recording when each storage is created and
when Python frees it.  Each storage is matched to the graph node that made
it, whose shape gives its size as an expression; the eager order of
allocations and frees then holds for every N the trace holds for.  If the
replay cannot run, liveness falls back to last use in the graph.

The target device decides what attention kernels allocate (``device``):
on "cpu" the traced kernels' outputs; on "cuda" the backend that
``scaled_dot_product_attention`` would pick there (flash, memory-efficient or
math) and its outputs, and the fp16 softmax that upcasts inside its kernel.

Not modelled: the caching allocator rounding each block up to 512 bytes,
and workspaces of kernels other than attention (cuBLAS, a fused MHA's
projections).
"""
from __future__ import annotations

import math
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterable

import sympy
import torch
import torch.fx as fx
from torch.func import functional_call
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .symbolic import SDPA_OPS, is_view, schema_args
from .tracer import B, N, TracedModel, value_at

aten = torch.ops.aten

DEVICES = ("cuda", "cpu")

#: Softmax entry points whose fp16 -> fp32 upcast a CUDA kernel does in place
#: (``_softmax(x, dim, half_to_float=True)``); on a CPU it is a separate copy.
_SOFTMAX_FUNCTIONS = frozenset({torch.softmax, torch.nn.functional.softmax, torch.Tensor.softmax})

#: Head-dim alignment the memory-efficient kernel needs (elements), sm80+.
_MEM_EFF_HEAD_ALIGN = {True: 8, False: 4}  # half precision?
#: preprocess_mask pads an attn_mask whose strides are not multiples of this.
_MEM_EFF_MASK_ALIGN = 8
#: Flash pads the head dim to a multiple of this (pad_last_dim<8>).
_FLASH_HEAD_ALIGN = 8
_FLASH_MAX_HEAD_DIM = 256
#: Value head dims above this make the fp16/bf16 memory-efficient kernel keep
#: an fp32 output accumulator (more than one value iteration per block).
_MEM_EFF_SINGLE_ITERATION_HEAD_DIM = 128


# ----------------------------------------------------------------- results


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

    def __str__(self) -> str:
        where = f" in {self.module_path}" if self.module_path else ""
        of = f" of {self.shape}" if self.shape else ""
        dtype = f"{self.dtype} " if self.dtype else ""
        times = f" (×{self.count})" if self.count > 1 else ""
        return f"{dtype}{self.name}{of}{where}{times}: {self.share:.0%} of peak"


@dataclass
class _Candidate:
    """Live intermediate bytes right after one op allocated its outputs."""

    time: int
    terms: dict[sympy.Expr, sympy.Rational]
    layer: str


@dataclass
class _Profile:
    """Allocations and their peak, from one replay (one batch case)."""

    allocations: list[Allocation]
    front: list[_Candidate]
    layer_fronts: dict[str, list[_Candidate]]
    node_bytes: dict[str, sympy.Expr]

    @property
    def intermediates(self) -> sympy.Expr:
        return _max_expr([c.terms for c in self.front])

    def intermediate_at(self, n: int, b: int) -> int:
        return max((_eval_terms(c.terms, n, b) for c in self.front), default=0)


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
    #: weights + buffers + inputs + peak of live intermediates
    peak_bytes: sympy.Expr
    #: peak of live intermediates alone
    intermediate_bytes: sympy.Expr
    #: layer -> peak of live intermediates while that layer's ops run
    layer_peak_bytes: dict[str, sympy.Expr]
    #: "eager replay" or "graph last use"
    liveness: str
    n_range: tuple[int, int | None] = (1, None)
    notes: list[str] = field(default_factory=list)
    #: library workspaces held once the first kernel needing them ran (cuBLAS)
    workspace_bytes: int = 0
    _profiles: dict[int | None, _Profile] = field(default_factory=dict, repr=False)
    _traced: Any = field(default=None, repr=False)

    def _profile(self, b: int) -> _Profile:
        return self._profiles.get(b) or self._profiles[None]

    @property
    def allocations(self) -> list[Allocation]:
        """The tensors the forward allocates (for B > 1 where B = 1 differs)."""
        return self._profiles[None].allocations

    # ---------------------------------------------------------- numbers

    def intermediate_at(self, n: int, b: int = 1) -> int:
        """Peak of live intermediates at N=n, B=b (bytes)."""
        return self._profile(b).intermediate_at(n, b)

    def at(self, n: int, b: int = 1) -> int:
        """Peak bytes at N=n, B=b, exactly."""
        return (self.weight_bytes + self.workspace_bytes + value_at(self.input_bytes, n, b)
                + self.intermediate_at(n, b))

    def __call__(self, n: int, b: int = 1) -> int:
        return self.at(n, b)

    def layer_peaks_at(self, n: int, b: int = 1) -> dict[str, int]:
        """Layer -> peak of live intermediates while its ops run, at N=n, B=b."""
        fronts = self._profile(b).layer_fronts
        return {layer: max(_eval_terms(c.terms, n, b) for c in cs) for layer, cs in fronts.items()}

    # ------------------------------------------------------- explanation

    def peak_time(self, n: int, b: int = 1) -> int | None:
        """The op after which the peak is reached at N=n, B=b."""
        front = self._profile(b).front
        if not front:
            return None
        return max(front, key=lambda c: _eval_terms(c.terms, n, b)).time

    def breakdown(self, n: int, b: int = 1, top: int = 8) -> list[BreakdownEntry]:
        """What is alive at the peak for N=n, B=b: the largest tensors first,
        then weights, inputs and the rest, each with its share of the peak."""
        total = self.at(n, b)
        t = self.peak_time(n, b)
        live = [a for a in self._profile(b).allocations if t is not None and a.alive_at(t)]
        sized = sorted(((value_at(a.bytes, n, b), a) for a in live), key=lambda x: -x[0])
        sized = [x for x in sized if x[0] > 0]

        def share(x: int) -> float:
            return x / total if total else 0.0

        # Like tensors of different layers (a KV cache) are one entry.
        groups: dict[tuple, BreakdownEntry] = {}
        for nbytes, a in sized:
            e = self._entry(a, nbytes, share(nbytes))
            key = (e.name, e.dtype, e.shape, _any_layer(e.module_path))
            if key in groups:
                g = groups[key]
                g.bytes += nbytes
                g.share = share(g.bytes)
                g.count += 1
                g.module_path = key[3]
                g.layer = _any_layer(g.layer)
            else:
                groups[key] = e
        ranked = sorted(groups.values(), key=lambda e: -e.bytes)
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

    def _entry(self, a: Allocation, nbytes: int, share: float) -> BreakdownEntry:
        node = a.node
        path = self._traced.module_path(node) if (node is not None and self._traced) else ""
        shape = dtype = ""
        if node is not None and a.kind != "workspace":
            outs = _tensor_outputs(node)
            if a.output < len(outs):
                t = outs[a.output]
                dims = [self._traced.expr(s) for s in t.shape]
                shape = "×".join(str(d).replace("*", "·") for d in dims) or "scalar"
                dtype = _DTYPE_NAMES.get(t.dtype, str(t.dtype).replace("torch.", ""))
        name = a.label or (_op_label(node) if node is not None else "tensor")
        return BreakdownEntry(name, path, _layer_of(path), shape, dtype, nbytes, share,
                              node=node.name if node is not None else "")

    def describe(self, n: int, b: int = 1, top: int = 5) -> list[str]:
        """The breakdown as sentences: 'fp32 softmax of B×4×N×N in model.layers.0: 64% of peak'."""
        return [str(e) for e in self.breakdown(n, b, top)]

    def site_memory_bytes(self, site) -> sympy.Expr:
        """What an attention site allocates on the target device: the sum of
        the tensors its ops create (views and copies the eager run does not
        make count nothing; a fused kernel counts its outputs and workspace)."""
        def total(profile: _Profile) -> sympy.Expr:
            return sympy.expand(sum((profile.node_bytes.get(name, sympy.Integer(0))
                                     for name in site.nodes), sympy.Integer(0)))
        return _by_batch({b: total(p) for b, p in self._profiles.items()})


def _by_batch(values: dict[int | None, sympy.Expr]) -> sympy.Expr:
    """One expression from per-batch-case ones (Piecewise only where they differ)."""
    general = values[None]
    single = values.get(1)
    if single is None or sympy.expand(single - general) == 0:
        return general
    return sympy.Piecewise((single, sympy.Eq(B, 1)), (general, True))


_DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16",
                torch.float64: "fp64", torch.int64: "int64", torch.int32: "int32",
                torch.bool: "bool", torch.uint8: "uint8", torch.int8: "int8"}


def _op_label(node: fx.Node) -> str:
    packet = getattr(node.target, "overloadpacket", node.target)
    name = getattr(packet, "__name__", str(packet))
    return name.lstrip("_") or name


def _any_layer(path: str) -> str:
    """'model.layers.3.self_attn' -> 'model.layers.*.self_attn'."""
    return ".".join("*" if part.isdigit() else part for part in path.split("."))


def _layer_of(path: str) -> str:
    from .detect import layer_of
    return layer_of(path) if path else ""


# ------------------------------------------------------------- the engine


def peak_memory(traced: TracedModel, loaded=None, device: str = "cuda") -> MemoryModel:
    """Peak memory of one forward of ``traced`` on ``device`` ("cuda" or "cpu").

    With ``loaded`` the forward is replayed eagerly on fake tensors (at the
    trace's length, for a batch of one and for the trace's batch); without
    it, or if the replay fails, liveness is last use in the graph."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    notes: list[str] = []
    per_batch: dict[int | None, list[Allocation]] = {}
    liveness = "graph last use"
    if loaded is not None:
        for key, batch in ((None, traced.batch_hint), (1, 1)):
            try:
                per_batch[key] = _match_replay(traced, _replay(traced, loaded, batch), notes)
            except Exception as exc:  # the model cannot run eagerly on fake tensors
                notes.append(f"eager replay at B={batch} failed ({type(exc).__name__}: "
                             f"{_first_line(exc)})" + ("; liveness follows last use in the graph"
                                                      if key is None else ""))
                break
        if None in per_batch:
            liveness = "eager replay"
    if not per_batch:
        per_batch[None] = _graph_allocations(traced)

    lo = traced.n_range[0] if traced.n_range else 1
    profiles: dict[int | None, _Profile] = {}
    for key, allocations in per_batch.items():
        if device == "cuda":
            allocations = _on_cuda(traced, allocations)
        candidates = _candidates(traced, allocations)
        layer_fronts: dict[str, list[_Candidate]] = {}
        for c in candidates:
            if c.layer:
                layer_fronts.setdefault(c.layer, []).append(c)
        node_bytes: dict[str, sympy.Expr] = {}
        for a in allocations:
            if a.node is not None:
                node_bytes[a.node.name] = node_bytes.get(a.node.name, sympy.Integer(0)) + a.bytes
        profiles[key] = _Profile(allocations, _prune(candidates, lo),
                                 {layer: _prune(cs, lo) for layer, cs in layer_fronts.items()},
                                 node_bytes)

    weight_bytes = _weight_bytes(traced, loaded)
    input_bytes = _input_bytes(traced)
    intermediates = _by_batch({k: p.intermediates for k, p in profiles.items()})
    layer_peaks = {}
    for layer in dict.fromkeys(layer for p in profiles.values() for layer in p.layer_fronts):
        layer_peaks[layer] = _by_batch({k: _max_expr([c.terms for c in p.layer_fronts.get(layer, [])])
                                        for k, p in profiles.items()})
    workspace = CUBLAS_WORKSPACE_BYTES if device == "cuda" and _uses_cublas(traced) else 0
    return MemoryModel(device=device, weight_bytes=weight_bytes, input_bytes=input_bytes,
                       peak_bytes=sympy.Integer(weight_bytes + workspace) + input_bytes + intermediates,
                       workspace_bytes=workspace,
                       intermediate_bytes=intermediates, layer_peak_bytes=layer_peaks,
                       liveness=liveness, n_range=traced.n_range, notes=_unique(notes),
                       _profiles=profiles, _traced=traced)


#: The cuBLAS workspace PyTorch allocates through its caching allocator on the
#: first matrix product, and keeps: CUBLAS_WORKSPACE_CONFIG's default ":4096:8"
#: on Hopper (8 buffers of 4 MiB), measured as the constant offset between
#: prediction and max_memory_allocated on an H200 (docs/validation/).
CUBLAS_WORKSPACE_BYTES = 8 * 4096 * 1024


def _uses_cublas(traced: TracedModel) -> bool:
    from .symbolic import rule_for

    return any(n.op == "call_function" and rule_for(n.target) is not None
               for n in traced.graph_module.graph.nodes)


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""


# ------------------------------------------------------ weights and inputs


def _weight_bytes(traced: TracedModel, loaded) -> int:
    """Parameters and buffers, each tensor once (tied weights count once)."""
    if loaded is not None:
        seen: set[int] = set()
        total = 0
        for t in list(loaded.module.parameters()) + list(loaded.module.buffers()):
            if id(t) in seen:
                continue
            seen.add(id(t))
            total += t.numel() * t.element_size()
        return total
    total = 0
    for node in traced.graph_module.graph.nodes:
        if node.op == "placeholder" and traced.placeholder_kinds.get(node.name) in ("parameter", "buffer"):
            total += int(sum(_node_output_bytes(traced, node), sympy.Integer(0)))
    return total


def _input_bytes(traced: TracedModel) -> sympy.Expr:
    total = sympy.Integer(0)
    for node in traced.graph_module.graph.nodes:
        if node.op == "placeholder" and traced.placeholder_kinds.get(node.name) == "input":
            total += sum(_node_output_bytes(traced, node), sympy.Integer(0))
    return sympy.expand(total)


def _tensor_outputs(node: fx.Node) -> list:
    """A node's outputs as the flat list of tensors a dispatch mode sees."""
    val = node.meta.get("val")
    flat, _ = tree_flatten(val)
    return [v for v in flat if isinstance(v, torch.Tensor)]


def _node_output_bytes(traced: TracedModel, node: fx.Node) -> list[sympy.Expr]:
    out = []
    for t in _tensor_outputs(node):
        numel = sympy.Mul(*[traced.expr(s) for s in t.shape]) if t.dim() else sympy.Integer(1)
        out.append(sympy.expand(numel * t.element_size()))
    return out


# ------------------------------------------------------------ eager replay


@dataclass
class _Storage:
    op: int           # index of the op that created it
    output: int       # which tensor output of that op
    nbytes: int       # at the replay's sizes
    death: int | None = None


@dataclass
class _Op:
    func: Any
    new: list[int | None]       # per tensor output: index of a new storage, or None (alias)
    half_softmax: bool = False  # dispatched inside softmax(fp16 input, dtype=float32)


class _Recorder(TorchDispatchMode):
    """Records each op's new storages and when Python frees each one."""

    def __init__(self, existing: Iterable[int]):
        super().__init__()
        self.ops: list[_Op] = []
        self.storages: list[_Storage] = []
        self.half_softmax_depth = 0
        self._live: dict[int, int] = {key: -1 for key in existing}
        self._finalizers: list[weakref.finalize] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        index = len(self.ops)
        new: list[int | None] = []
        for k, t in enumerate(x for x in tree_flatten(out)[0] if isinstance(x, torch.Tensor)):
            storage = t.untyped_storage()
            key = storage._cdata
            if key in self._live:
                new.append(None)
                continue
            sid = len(self.storages)
            self.storages.append(_Storage(index, k, int(storage.nbytes())))
            self._live[key] = sid
            self._finalizers.append(weakref.finalize(storage, self._freed, key, sid))
            new.append(sid)
        self.ops.append(_Op(func, new, self.half_softmax_depth > 0))
        return out

    def _freed(self, key: int, sid: int) -> None:
        if self._live.get(key) == sid:
            del self._live[key]
        self.storages[sid].death = len(self.ops)

    def stop(self) -> None:
        """Storages still alive now stay alive to the end."""
        for f in self._finalizers:
            f.detach()


class _SoftmaxUpcasts(TorchFunctionMode):
    """Marks the ops dispatched inside ``softmax(fp16 x, dtype=torch.float32)``."""

    def __init__(self, recorder: _Recorder):
        super().__init__()
        self.recorder = recorder

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        mark = func in _SOFTMAX_FUNCTIONS and _is_half_upcast(args, kwargs)
        if mark:
            self.recorder.half_softmax_depth += 1
        try:
            return func(*args, **kwargs)
        finally:
            if mark:
                self.recorder.half_softmax_depth -= 1


def _is_half_upcast(args, kwargs) -> bool:
    x = args[0] if args and isinstance(args[0], torch.Tensor) else kwargs.get("input")
    dtypes = [a for a in list(args[1:]) + list(kwargs.values()) if isinstance(a, torch.dtype)]
    return isinstance(x, torch.Tensor) and x.dtype == torch.float16 and torch.float32 in dtypes


@dataclass
class _Replay:
    ops: list[_Op]
    storages: list[_Storage]
    end: int
    batch: int


def _replay(traced: TracedModel, loaded, batch: int) -> _Replay:
    """Run the forward eagerly on fake tensors at the trace's length."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    model = loaded.module
    mode = FakeTensorMode(allow_non_fake_inputs=False)
    fakes: dict[int, torch.Tensor] = {}
    params: dict[str, torch.Tensor] = {}
    with mode:
        for name, p in list(model.named_parameters(remove_duplicate=False)) + \
                list(model.named_buffers(remove_duplicate=False)):
            if id(p) not in fakes:
                fakes[id(p)] = torch.empty_strided(p.shape, p.stride(), dtype=p.dtype,
                                                   device=loaded.trace_device)
            params[name] = fakes[id(p)]
        inputs = loaded.example_inputs(traced.seq_len_hint, batch)
        inputs = _to_device(inputs, loaded.trace_device)
    existing = {t.untyped_storage()._cdata for t in params.values()}
    existing |= {t.untyped_storage()._cdata for t in tree_flatten(inputs)[0]
                 if isinstance(t, torch.Tensor)}
    if isinstance(inputs, dict):
        args, kwargs = (), inputs
    elif isinstance(inputs, (list, tuple)):
        args, kwargs = tuple(inputs), {}
    else:
        args, kwargs = inputs, {}

    recorder = _Recorder(existing)
    with torch.no_grad(), loaded.trace_context(), warnings.catch_warnings(), mode, recorder, \
            _SoftmaxUpcasts(recorder):
        # Warnings about running on fake data concern the replay, not the model.
        warnings.simplefilter("ignore")
        out = functional_call(model, params, args, kwargs)
        end = len(recorder.ops)
        recorder.stop()
    del out
    return _Replay(recorder.ops, recorder.storages, end, batch)


def _to_device(obj, device):
    return torch.utils._pytree.tree_map(
        lambda t: t.to(device) if isinstance(t, torch.Tensor) else t, obj)


def _allocating_nodes(traced: TracedModel) -> list[fx.Node]:
    """Graph nodes that may create storage: aten ops that neither view nor
    write into an input."""
    out = []
    for node in traced.graph_module.graph.nodes:
        if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
            continue
        if is_view(node) or _writes_input(node) or not _tensor_outputs(node):
            continue
        out.append(node)
    return out


def _writes_input(node: fx.Node) -> bool:
    schema = getattr(node.target, "_schema", None)
    return bool(schema is not None and schema.returns and
                any(r.alias_info is not None for r in schema.returns))


#: Ops one run may pick for another's (a 3-d matmul folds to mm when the
#: batch dims can be viewed as rows, else runs as bmm): aligned as one.
_ALIGN_AS = {str(op): "matmul" for op in (aten.mm.default, aten.bmm.default, aten.addmm.default,
                                          aten.baddbmm.default)}
#: Constants made by torch.tensor(...) in the forward: their size never depends on N.
_CONSTANT_OPS = {str(aten.lift_fresh.default), str(aten.lift_fresh_copy.default)}


def _align_key(op: Any) -> str:
    name = str(op)
    return _ALIGN_AS.get(name, name)


#: How far the alignment of replayed ops and graph nodes looks around its position.
_LOOK_AHEAD, _LOOK_BEHIND = 48, 8


def _match_replay(traced: TracedModel, replay: _Replay, notes: list[str]) -> list[Allocation]:
    """Give each replayed storage the graph node (and so the size expression)
    that made it: align the two sequences of allocating ops, then check that
    sizes agree at the replay's N and B."""
    alloc_ops = [i for i, op in enumerate(replay.ops) if any(s is not None for s in op.new)]
    nodes = _allocating_nodes(traced)
    hint = {N: sympy.Integer(traced.seq_len_hint), B: sympy.Integer(replay.batch)}
    node_of_op: dict[int, fx.Node] = {}
    used: set[int] = set()

    hinted: dict[fx.Node, list] = {}

    def fits(i: int, node: fx.Node) -> bool:
        op = replay.ops[i]
        if _align_key(op.func) != _align_key(node.target):
            return False
        if node not in hinted:
            hinted[node] = [x.xreplace(hint) for x in _node_output_bytes(traced, node)]
        sizes = hinted[node]
        for k, sid in enumerate(op.new):
            if sid is None:
                continue
            at_hint = sizes[k] if k < len(sizes) else None
            if at_hint is None or not at_hint.is_Integer or int(at_hint) != replay.storages[sid].nbytes:
                return False
        return True

    # Both sequences run the same program in the same order, so a greedy walk
    # with a small look-ahead aligns them in linear time (a generic diff is
    # quadratic on the repetitive op sequences of deep models).
    j = 0
    for i in alloc_ops:
        found = None
        for jj in range(max(0, j - _LOOK_BEHIND), min(len(nodes), j + _LOOK_AHEAD)):
            if jj not in used and fits(i, nodes[jj]):
                found = jj
                break
        if found is not None:
            node_of_op[i] = nodes[found]
            used.add(found)
            j = max(j, found + 1)

    allocations = []
    unmatched = []
    for i in alloc_ops:
        op = replay.ops[i]
        node = node_of_op.get(i)
        sizes = _node_output_bytes(traced, node) if node is not None else []
        for k, sid in enumerate(op.new):
            if sid is None:
                continue
            st = replay.storages[sid]
            if node is not None:
                nbytes = sizes[k]
            else:
                nbytes = sympy.Integer(st.nbytes)
                if str(op.func) not in _CONSTANT_OPS:
                    unmatched.append(str(op.func))
            allocations.append(Allocation(time=i, death=st.death, bytes=nbytes, node=node,
                                          output=k, half_softmax=op.half_softmax))
    if unmatched:
        notes.append(f"{len(unmatched)} tensors of the eager run (B={replay.batch}) had no graph "
                     f"node ({', '.join(sorted(set(unmatched))[:4])}); counted at their size at "
                     f"N={traced.seq_len_hint}")
    return allocations


# ------------------------------------------------------- graph fallback


def _graph_allocations(traced: TracedModel) -> list[Allocation]:
    """Liveness by last use in the graph: a view keeps its base alive, an
    in-place op allocates nothing, graph outputs live to the end."""
    nodes = list(traced.graph_module.graph.nodes)
    position = {n: i for i, n in enumerate(nodes)}
    base: dict[fx.Node, fx.Node] = {}
    for node in nodes:
        if node.op == "call_function" and (is_view(node) or _writes_input(node)):
            src = next((a for a in node.all_input_nodes), None)
            if src is not None:
                base[node] = base.get(src, src)
        elif node.op == "call_function" and node.target is __import__("operator").getitem:
            src = node.args[0]
            base[node] = base.get(src, src)
    last_use: dict[fx.Node, int | None] = {}
    for node in nodes:
        for inp in node.all_input_nodes:
            root = base.get(inp, inp)
            if node.op == "output":
                last_use[root] = None
            elif last_use.get(root, 0) is not None:
                last_use[root] = max(last_use.get(root, 0), position[node])
    allocations = []
    for node in nodes:
        if node.op != "call_function" or node in base or not isinstance(node.target, torch._ops.OpOverload):
            continue
        t = position[node]
        end = last_use.get(node, t)
        death = None if end is None else max(end, t) + 1
        for k, nbytes in enumerate(_node_output_bytes(traced, node)):
            allocations.append(Allocation(time=t, death=death, bytes=nbytes, node=node, output=k))
    return allocations


# ------------------------------------------------------------ CUDA kernels


def _on_cuda(traced: TracedModel, allocations: list[Allocation]) -> list[Allocation]:
    """What CUDA kernels allocate where they differ from the traced CPU ones."""
    out: list[Allocation] = []
    done: set[str] = set()
    for a in allocations:
        node = a.node
        if a.half_softmax and node is not None and \
                getattr(node.target, "overloadpacket", None) is aten._to_copy:
            # _softmax(x, dim, half_to_float=True) reads the fp16 input directly.
            continue
        if node is not None and _is_sdpa(node):
            if node.name not in done:
                done.add(node.name)
                backend, outputs, workspace = cuda_sdpa_allocations(traced, node)
                deaths = {x.output: x.death for x in allocations if x.node is node}
                for k, nbytes in enumerate(outputs):
                    if k in deaths or k == 0:
                        out.append(Allocation(a.time, deaths.get(k, a.death), nbytes, node, k,
                                              label=f"{backend} attention output" if k == 0
                                              else f"{backend} attention logsumexp"))
                for label, nbytes in workspace:
                    out.append(Allocation(a.time, a.time + 1, nbytes, node, len(outputs),
                                          kind="workspace", label=label))
            continue
        out.append(a)
    return out


def _is_sdpa(node: fx.Node) -> bool:
    return node.target in SDPA_OPS or getattr(node.target, "overloadpacket", None) in SDPA_OPS


def cuda_sdpa_backend(dtype: torch.dtype, head_dim_qk: int, head_dim_v: int, has_mask: bool) -> str:
    """The backend ``scaled_dot_product_attention`` picks on an sm80+ GPU
    (priority flash > memory-efficient > math, as torch's sdp_utils orders them)."""
    half = dtype in (torch.float16, torch.bfloat16)
    if half and not has_mask and head_dim_qk == head_dim_v and head_dim_qk <= _FLASH_MAX_HEAD_DIM:
        return "flash"
    align = _MEM_EFF_HEAD_ALIGN[half]
    if head_dim_qk % align == 0 and head_dim_v % align == 0:
        return "efficient"
    return "math"


def cuda_sdpa_allocations(traced: TracedModel, node: fx.Node):
    """(backend, output bytes, [(workspace label, bytes)]) of one SDPA call on
    CUDA under no_grad.

    flash: output (head dim padded to 8) and an fp32 logsumexp per query row,
    which the flash kernel always writes; q, k, v are copied when padded.
    efficient: output only (logsumexp has 0 columns when no gradient is
    needed); a mask whose strides are not multiples of 8 is copied padded;
    fp16/bf16 with a value head dim over 128 keeps an fp32 accumulator.
    math: the composite's N×N scores and softmax (fp32 for fp16/bf16 inputs).
    """
    args = schema_args(node)
    q, k, v = (args.get("query", node.args[0]), args.get("key", node.args[1]),
               args.get("value", node.args[2]))
    mask = args.get("attn_mask")
    qv, kv, vv = (x.meta["val"] for x in (q, k, v))
    qs, ks, vs = (tuple(traced.expr(s) for s in x.shape) for x in (qv, kv, vv))
    es = qv.element_size()
    d_qk, d_v = int(qs[-1]), int(vs[-1])
    backend = cuda_sdpa_backend(qv.dtype, d_qk, d_v, isinstance(mask, fx.Node))
    rows = sympy.Mul(*qs[:-1])  # B·H·N_q
    heads_rows_keys = rows * ks[-2]
    workspace: list[tuple[str, sympy.Expr]] = []
    if backend == "flash":
        pad = -(-d_v // _FLASH_HEAD_ALIGN) * _FLASH_HEAD_ALIGN
        outputs = [sympy.expand(rows * pad * es), sympy.expand(rows * 4)]
        if d_qk % _FLASH_HEAD_ALIGN:
            for name, shape in (("q", qs), ("k", ks), ("v", vs)):
                padded = sympy.Mul(*shape[:-1]) * (-(-int(shape[-1]) // _FLASH_HEAD_ALIGN) * _FLASH_HEAD_ALIGN)
                workspace.append((f"flash-padded {name}", sympy.expand(padded * es)))
    elif backend == "efficient":
        outputs = [sympy.expand(rows * d_v * es), sympy.Integer(0)]
        if qv.dtype != torch.float32 and d_v > _MEM_EFF_SINGLE_ITERATION_HEAD_DIM:
            workspace.append(("efficient-attention fp32 accumulator", sympy.expand(rows * d_v * 4)))
        if isinstance(mask, fx.Node):
            padded = _padded_mask_bytes(traced, mask)
            if padded != 0:
                workspace.append(("attn_mask padded to a multiple of 8", padded))
    else:
        outputs = [sympy.expand(rows * d_v * es), sympy.Integer(0)]
        cs = 4 if qv.dtype in (torch.float16, torch.bfloat16) else es
        workspace.append(("math-attention scores and softmax", sympy.expand(2 * heads_rows_keys * cs)))
        if cs != es:
            upcast = sum((sympy.Mul(*s) for s in (qs, ks, vs)), sympy.Integer(0)) * cs
            workspace.append(("math-attention fp32 q, k, v", sympy.expand(upcast)))
        if bool(args.get("is_causal", False)):
            workspace.append(("math-attention causal mask", sympy.expand(qs[-2] * ks[-2] * (1 + cs))))
    return backend, outputs, workspace


def _padded_mask_bytes(traced: TracedModel, mask: fx.Node) -> sympy.Expr:
    """Bytes of the padded copy preprocess_mask makes (0 when aligned)."""
    val = mask.meta["val"]
    shape = [traced.expr(s) for s in val.shape]
    strides = [traced.expr(s) for s in val.stride()]
    if not shape:
        return sympy.Integer(0)
    last = shape[-1]
    padded_last = last + _MEM_EFF_MASK_ALIGN - sympy.Mod(last, _MEM_EFF_MASK_ALIGN)
    nbytes = sympy.Mul(*shape[:-1]) * padded_last * val.element_size()
    if strides[-1] != 1:
        return sympy.expand(nbytes)
    aligned = sympy.And(*[sympy.Eq(sympy.Mod(s, _MEM_EFF_MASK_ALIGN), 0) for s in strides[:-1]])
    if aligned is sympy.true:
        return sympy.Integer(0)
    if aligned is sympy.false:
        return sympy.expand(nbytes)
    return sympy.Piecewise((0, aligned), (sympy.expand(nbytes), True))


# ------------------------------------------------------------ the maximum


def _candidates(traced: TracedModel, allocations: list[Allocation]) -> list[_Candidate]:
    """Live bytes right after each allocating op, as sums of terms."""
    births: dict[int, list[Allocation]] = {}
    deaths: dict[int, list[Allocation]] = {}
    for a in allocations:
        births.setdefault(a.time, []).append(a)
        if a.death is not None and a.kind != "workspace":
            deaths.setdefault(a.death, []).append(a)
    current: dict[sympy.Expr, sympy.Rational] = {}
    candidates = []
    layer = ""
    for t in sorted(set(births) | set(deaths)):
        for a in deaths.get(t, ()):
            _add_terms(current, a.bytes, -1)
        born = births.get(t)
        if not born:
            continue
        snapshot = dict(current)
        for a in born:
            _add_terms(snapshot, a.bytes, 1)
            if a.kind != "workspace":
                _add_terms(current, a.bytes, 1)
        node = next((a.node for a in born if a.node is not None), None)
        if node is not None:
            layer = _layer_of(traced.module_path(node))
        candidates.append(_Candidate(t, {k: v for k, v in snapshot.items() if v != 0}, layer))
    return candidates


def _add_terms(acc: dict, expr: sympy.Expr, sign: int) -> None:
    for term, coeff in sympy.expand(expr).as_coefficients_dict().items():
        acc[term] = acc.get(term, 0) + sign * coeff


def _terms_expr(terms: dict) -> sympy.Expr:
    return sympy.Add(*[c * t for t, c in terms.items()]) if terms else sympy.Integer(0)


def _max_expr(term_dicts: list[dict]) -> sympy.Expr:
    exprs = [_terms_expr(t) for t in term_dicts]
    if not exprs:
        return sympy.Integer(0)
    if len(exprs) == 1:
        return exprs[0]
    return sympy.Max(*exprs, evaluate=False)


def _dominates(a: dict, b: dict) -> bool:
    """a >= b for every N and B: every term is nonnegative, so it is enough
    that a has at least b's coefficient on each term."""
    return all(a.get(k, 0) >= v for k, v in b.items()) and \
        all(v >= 0 for k, v in a.items() if k not in b)


def _prune(candidates: list[_Candidate], lo: int = 1) -> list[_Candidate]:
    """Drop candidates that another one bounds for all N >= lo and B >= 1."""
    front: list[_Candidate] = []
    for c in candidates:
        if any(_dominates(f.terms, c.terms) for f in front):
            continue
        front = [f for f in front if not _dominates(c.terms, f.terms)]
        front.append(c)
    # A finer test on what is left: shift N = lo + n, B = 1 + b and compare
    # coefficients of the difference (it catches N**2 >= N).
    polys = [_as_poly(c.terms) for c in front]
    dropped = set()
    for i in range(len(front)):
        for j in range(len(front)):
            if j == i or j in dropped or polys[i] is None or polys[j] is None:
                continue
            if _shifted_nonnegative(polys[j], polys[i], lo):
                if j > i and _shifted_nonnegative(polys[i], polys[j], lo):
                    continue  # equal: keep the earlier one
                dropped.add(i)
                break
    return [c for i, c in enumerate(front) if i not in dropped]


def _as_poly(terms: dict) -> dict[tuple[int, int], sympy.Rational] | None:
    """{(i, j): c} for c·N**i·B**j, or None if a term is not such a monomial."""
    out: dict[tuple[int, int], Any] = {}
    for term, coeff in terms.items():
        powers = term.as_powers_dict()
        if any(s not in (N, B) for s in powers if s != 1) or \
                any(not (p.is_Integer and p >= 0) for s, p in powers.items() if s != 1):
            return None
        key = (int(powers.get(N, 0)), int(powers.get(B, 0)))
        out[key] = out.get(key, 0) + coeff
    return out


def _shifted_nonnegative(a: dict, b: dict, lo: int) -> bool:
    """Is a - b >= 0 for all N >= lo, B >= 1?  (Sufficient test: every
    coefficient of a - b in n = N - lo, b = B - 1 is nonnegative.)"""
    diff: dict[tuple[int, int], Any] = {}
    for sign, poly in ((1, a), (-1, b)):
        for (i, j), c in poly.items():
            for p in range(i + 1):
                cn = math.comb(i, p) * lo ** (i - p)
                for q in range(j + 1):
                    key = (p, q)
                    diff[key] = diff.get(key, 0) + sign * c * cn * math.comb(j, q)
    return all(v >= 0 for v in diff.values())


# ------------------------------------------------------------ evaluation


_MONOMIALS: dict[sympy.Expr, tuple[int, int] | None] = {}


def _eval_terms(terms: dict, n: int, b: int) -> int:
    total = 0
    for term, coeff in terms.items():
        mono = _MONOMIALS.get(term, False)
        if mono is False:
            powers = term.as_powers_dict()
            simple = all(s in (N, B) or s == 1 for s in powers) and \
                all(p.is_Integer and p >= 0 for p in powers.values())
            mono = (int(powers.get(N, 0)), int(powers.get(B, 0))) if simple else None
            _MONOMIALS[term] = mono
        value = n ** mono[0] * b ** mono[1] if mono is not None else \
            term.xreplace({N: sympy.Integer(n), B: sympy.Integer(b)})
        total += coeff * value
    return int(total)
