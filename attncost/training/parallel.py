"""A training step's memory and communication per GPU under FSDP, tensor
and context parallelism (``--fsdp N``, ``--tp N``, ``--cp N``).

A step's memory (its persistent parts, each parameter's size, activations
as a function of N and B) is divided over ``fsdp × tp × cp`` GPUs by the
rules of FSDP2 (``fully_shard`` per layer, then the root), Megatron's
column/row tensor parallelism and ring attention.  Every figure is for
the busiest GPU (FSDP's rank 0, whose shards are never shorter).  The
rules and their sources are in docs/design.md, "Parallel training".
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Mapping, Protocol

import sympy

from ..errors import AttncostError
from ..expr import Terms, value_at
from ..memory.envelope import prune
from ..memory.model import Candidate
from ..paths import layer_of
from ..questions.fits import max_seq_len
from ..questions.search import max_batch
from . import comm

#: Gathered layers FSDP2 holds by default: the one computing and the next, prefetched.
GATHERED_LAYERS = 2


class StepMemoryLike(Protocol):
    """What is read of a training step (``training.memory.StepMemory``).

    Optional, read when present: ``shapes`` ({name: shape});
    ``activation_parts(n, b)`` ({module path that produced it: bytes},
    summing to ``activations(n, b)``; None where the step does not know
    them); ``moments``, each moment that can be the busiest once split with
    its ``parts`` ({module path: terms in N and B}), preferred to
    ``activation_parts`` as the split can move the busiest moment.
    """

    parameter_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    #: (name, numel, bytes per element, trainable) per parameter tensor
    parameters: list[tuple[str, int, int, bool]]

    def activations(self, n: int, b: int = 1) -> int: ...


@dataclass(frozen=True)
class Plan:
    """How many GPUs shard each axis; the world is their product."""

    fsdp: int = 1
    tp: int = 1
    cp: int = 1

    def __post_init__(self):
        for axis in ("fsdp", "tp", "cp"):
            value = getattr(self, axis)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise AttncostError(f"--{axis} must be a positive integer, not {value!r}")

    @property
    def world_size(self) -> int:
        return self.fsdp * self.tp * self.cp


@dataclass(frozen=True)
class LayerShape:
    """The repeated layer's shape: what tensor and context parallelism split
    and what they send.  ``activation_bytes`` is the compute dtype's width."""

    count: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    mlp_width: int
    activation_bytes: int = 2

    @classmethod
    def from_config(cls, config, activation_bytes: int = 2) -> "LayerShape":
        """From a transformers config (object or dict; Llama or GPT-2 naming)."""
        get = config.get if isinstance(config, Mapping) else \
            (lambda key, default=None: getattr(config, key, default))

        def first(*keys):
            for key in keys:
                if get(key) is not None:
                    return int(get(key))
            return None
        hidden = first("hidden_size", "n_embd", "d_model")
        heads = first("num_attention_heads", "n_head")
        count = first("num_hidden_layers", "n_layer")
        if None in (hidden, heads, count):
            raise AttncostError("the config gives no hidden size, head count or layer count: "
                                "tensor and context parallelism need all three")
        return cls(count=count, hidden=hidden, heads=heads,
                   kv_heads=first("num_key_value_heads") or heads,
                   head_dim=first("head_dim") or hidden // heads,
                   mlp_width=first("intermediate_size", "n_inner", "ffn_dim") or 4 * hidden,
                   activation_bytes=activation_bytes)


def check_plan(plan: Plan, layers: LayerShape | None) -> list[str]:
    """Refuse a plan the model cannot be split by; notes on what is replicated."""
    if plan.tp == 1 and plan.cp == 1:
        return []
    if layers is None:
        raise AttncostError("--tp and --cp need the layer's shape (hidden size, heads, "
                            "kv heads, head dim, MLP width, layer count)")
    tp, notes = plan.tp, []
    if layers.heads % tp:
        raise AttncostError(f"--tp {tp} does not divide the {layers.heads} attention heads")
    if layers.mlp_width % tp:
        raise AttncostError(f"--tp {tp} does not divide the MLP width {layers.mlp_width}")
    if layers.kv_heads % tp:
        if tp % layers.kv_heads:
            raise AttncostError(f"--tp {tp} and the {layers.kv_heads} kv heads do not divide "
                                "one another: use a tp that divides them or that they divide")
        notes.append(f"kv heads replicated: {tp} tensor-parallel GPUs share {layers.kv_heads} "
                     "kv heads, each holding one (as Megatron does)")
    return notes

# ------------------------------------------------- tensor-parallel parameters


#: Megatron's split of each transformers module name.
COLUMN = frozenset({"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "c_attn", "c_fc"})
ROW = frozenset({"o_proj", "down_proj", "c_proj"})
VOCAB = frozenset({"embed_tokens", "lm_head", "wte"})
#: GPT-2's Conv1D stores its weight as (in, out), transposed from nn.Linear.
CONV1D = frozenset({"c_attn", "c_fc", "c_proj"})
#: Replicated on purpose (Megatron keeps position embeddings whole).
KNOWN_REPLICATED = frozenset({"wpe", "embed_positions"})
#: Blocks whose inner activations tensor parallelism splits.
SPLIT_BLOCKS = frozenset({"self_attn", "attn", "attention", "mlp"})


def tp_rule(name: str) -> str:
    """'column', 'row', 'vocab', 'replicated' (norms, biases after a row
    split, position embeddings) or 'unknown' (kept whole, and said)."""
    parts = name.split(".")
    module, leaf = (parts[-2] if len(parts) > 1 else ""), parts[-1]
    if module in COLUMN:
        return "column"
    if module in ROW:
        return "row" if leaf != "bias" else "replicated"
    if module in VOCAB:
        return "vocab"
    if module in KNOWN_REPLICATED or "norm" in module or module.startswith("ln"):
        return "replicated"
    return "unknown"


def tp_local_shape(name: str, shape: tuple[int, ...], tp: int,
                   layers: LayerShape | None) -> tuple[int, ...]:
    """The part of one parameter a tensor-parallel GPU holds."""
    rule = tp_rule(name)
    if tp == 1 or rule in ("replicated", "unknown"):
        return tuple(shape)
    module, leaf = name.split(".")[-2:]
    divisor = tp
    if module in ("k_proj", "v_proj") and layers is not None and layers.kv_heads < tp:
        divisor = layers.kv_heads  # one kv head per GPU
    dim = 0
    if leaf != "bias" and rule in ("column", "row"):
        dim = int((rule == "column") == (module in CONV1D))
    dim = dim if dim < len(shape) else 0
    out = list(shape) or [1]
    out[dim] = -(-out[dim] // divisor)
    return tuple(out)


def fsdp_shard_numel(shape: tuple[int, ...], fsdp: int) -> int:
    """FSDP2's shard of one parameter: dim 0 cut in ``fsdp`` chunks
    (``torch.chunk``), every shard padded to the first chunk's rows
    (``_fsdp_param.py``: ``padded_sharded_size = chunks[0].size()``)."""
    shape = tuple(shape) or (1,)
    return -(-shape[0] // fsdp) * math.prod(shape[1:])


@dataclass(frozen=True)
class ParameterShard:
    """One parameter on the busiest GPU: ``local`` after the tensor-parallel
    split, ``shard`` after FSDP's, ``gathered`` what FSDP's all-gather makes
    (``fsdp × shard``, padding included)."""

    name: str
    numel: int
    local: int
    shard: int
    gathered: int
    element_bytes: int
    trainable: bool
    rule: str


def shard_parameters(step: StepMemoryLike, plan: Plan, layers: LayerShape | None,
                     shapes: Mapping[str, tuple[int, ...]] | None) -> list[ParameterShard]:
    """Every parameter of ``step`` split by ``plan``.  A name ``shapes``
    does not know is a buffer: neither FSDP nor tensor parallelism splits it."""
    out = []
    for name, numel, element_bytes, trainable in step.parameters:
        if shapes and name not in shapes:
            out.append(ParameterShard(name, int(numel), int(numel), int(numel), 0,
                                      int(element_bytes), bool(trainable), "buffer"))
            continue
        shape = tuple(shapes[name]) if shapes else (int(numel),)
        local = tp_local_shape(name, shape, plan.tp, layers)
        shard = fsdp_shard_numel(local, plan.fsdp)
        out.append(ParameterShard(name, int(numel), math.prod(local), shard, shard * plan.fsdp,
                                  int(element_bytes), bool(trainable), tp_rule(name)))
    return out

# ------------------------------------------------------------ the result


@dataclass
class PerGpuMemory:
    """The busiest GPU of a plan at one N and B: memory by part, bytes sent."""

    plan: Plan
    seq_len: int
    batch: int
    parameters: int
    gradients: int
    optimizer: int
    activations: int
    #: FSDP's gathered parameters and unsharded gradients, ring attention's K/V blocks
    in_flight: int
    #: bytes this GPU sends in one step, by collective
    comm: dict[str, int] = field(default_factory=dict)
    #: parameters no tensor-parallel rule knows: whole on every GPU
    replicated: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.optimizer + self.activations + \
            self.in_flight

    @property
    def comm_bytes_per_step(self) -> int:
        return sum(self.comm.values())


def _scaled(total: int, full: int, local: int) -> int:
    """``total`` bytes of a part that shards like a weighted count of
    elements: ``full`` of them on one GPU, ``local`` on the busiest."""
    return math.ceil(Fraction(total * local, full)) if full else int(total)


def _grad_ratio(step: StepMemoryLike, shards: list[ParameterShard]) -> Fraction:
    """Gradient bytes per byte of trainable parameter (1 when grads share its dtype)."""
    full = sum(p.numel * p.element_bytes for p in shards if p.trainable)
    return Fraction(step.gradient_bytes, full) if full else Fraction(0)


def _fsdp_in_flight(shards: list[ParameterShard], plan: Plan, ratio: Fraction,
                    gathered_layers: int) -> tuple[int, dict[str, int], list[str]]:
    """FSDP2's buffers (the root's gathered parameters and unsharded
    gradients for the whole step, ``gathered_layers`` layers gathered, one
    layer's unsharded gradients and its reduce-scatter input) and traffic
    (layers gathered in forward and again in backward, the root once)."""
    if plan.fsdp == 1:
        return 0, {}, []
    groups: dict[str | None, list[ParameterShard]] = {}
    for p in shards:
        groups.setdefault(layer_of(p.name), []).append(p)
    root = groups.pop(None, [])

    def gathered(ps):
        return sum(p.gathered * p.element_bytes for p in ps)

    def grads(ps, attr):
        return math.ceil(ratio * sum(getattr(p, attr) * p.element_bytes
                                     for p in ps if p.trainable))
    layer_params = max((gathered(ps) for ps in groups.values()), default=0)
    layer_grads = max((grads(ps, "local") + grads(ps, "gathered") for ps in groups.values()),
                      default=0)
    in_flight = gathered(root) + grads(root, "local") + \
        min(gathered_layers, len(groups)) * layer_params + layer_grads
    traffic = comm.all_gather_bytes(gathered(root), plan.fsdp) + \
        sum(2 * comm.all_gather_bytes(gathered(ps), plan.fsdp) for ps in groups.values())
    scatter = comm.reduce_scatter_bytes(grads(shards, "gathered"), plan.fsdp)
    notes = [f"FSDP holds {min(gathered_layers, len(groups))} layers gathered (computing and "
             "prefetched) and the root's parameters for the whole step"]
    return in_flight, {"fsdp_all_gather": traffic, "fsdp_reduce_scatter": scatter}, notes


def _fixed(step: StepMemoryLike, plan: Plan, layers: LayerShape | None,
           shapes: Mapping[str, tuple[int, ...]] | None,
           gathered_layers: int) -> tuple[PerGpuMemory, bool]:
    """What does not depend on N and B (the sharded state, FSDP's buffers
    and traffic), and whether an embedding or head is split by vocabulary."""
    notes = check_plan(plan, layers)
    shapes = shapes if shapes is not None else getattr(step, "shapes", None)
    if not shapes and plan.world_size > 1:
        notes.append("parameter shapes not given: each parameter split as a flat tensor")
    shards = shard_parameters(step, plan, layers, shapes)
    every = sum(p.numel * p.element_bytes for p in shards)
    trainable = sum(p.numel * p.element_bytes for p in shards if p.trainable)
    local = sum(p.shard * p.element_bytes for p in shards)
    local_trainable = sum(p.shard * p.element_bytes for p in shards if p.trainable)
    gradients = _scaled(step.gradient_bytes, trainable, local_trainable)
    in_flight, traffic, fsdp_notes = _fsdp_in_flight(shards, plan, _grad_ratio(step, shards),
                                                     gathered_layers)
    if plan.cp > 1:
        traffic["cp_gradient_all_reduce"] = comm.all_reduce_bytes(gradients, plan.cp)
    fixed = PerGpuMemory(
        plan=plan, seq_len=0, batch=0, parameters=_scaled(step.parameter_bytes, every, local),
        gradients=gradients, optimizer=_scaled(step.optimizer_bytes, trainable, local_trainable),
        activations=0, in_flight=in_flight, comm=traffic, notes=notes + fsdp_notes,
        replicated=[p.name for p in shards if p.rule == "unknown"] if plan.tp > 1 else [])
    return fixed, any(p.rule == "vocab" for p in shards)

# ------------------------------------------------------- activations, N, B


def splits_activation(path: str) -> bool:
    """Is a tensor made by module ``path`` split by tensor parallelism: made
    inside an attention or MLP block, between its column split and its row
    split (the row-split projection's output is whole again)."""
    parts = path.split(".")
    return any(p in SPLIT_BLOCKS for p in parts) and not any(p in ROW for p in parts)


def activation_shares(step: StepMemoryLike, tp: int) -> list[tuple[Terms, Terms]] | None:
    """(whole, divided by tp) activations of the step's ``moments`` that can
    be the busiest under ``tp``, or None where the step gives none.  One
    moment bounds another when its whole bytes plus its divided bytes over
    tp do: between whole numbers of bytes, that bounds the division rounded
    up as well."""
    moments = getattr(step, "moments", None)
    if not moments:
        return None
    shares, per_gpu = [], []
    for i, moment in enumerate(moments):
        whole: dict = {}
        divided: dict = {}
        for path, terms in moment.parts.items():
            share = divided if splits_activation(path) else whole
            for term, coeff in terms.items():
                share[term] = share.get(term, 0) + coeff
        held = dict(whole)
        for term, coeff in divided.items():
            held[term] = held.get(term, 0) + sympy.Rational(coeff, tp)
        shares.append((whole, divided))
        per_gpu.append(Candidate(i, held, ""))
    return [shares[c.time] for c in prune(per_gpu, 1)]


def _activations(step: StepMemoryLike, plan: Plan, n_local: int, b: int,
                 shares: list[tuple[Terms, Terms]] | None) -> tuple[int, list[str]]:
    """Activations of ``n_local`` tokens, the attention and MLP blocks' split
    by tp: the largest over the moments that can be the busiest."""
    if plan.tp == 1:
        return int(step.activations(n_local, b)), []
    if shares:
        return max(value_at(whole, n_local, b) + -(-value_at(divided, n_local, b) // plan.tp)
                   for whole, divided in shares), []
    parts_at = getattr(step, "activation_parts", None)
    parts = parts_at(n_local, b) if parts_at is not None else None
    if parts is None:
        return int(step.activations(n_local, b)), [
            "activations not split by block: counted whole on every tensor-parallel GPU "
            "(an upper bound)"]
    split = sum(int(v) for k, v in parts.items() if splits_activation(k))
    return sum(int(v) for v in parts.values()) - split + -(-split // plan.tp), []


def kv_block_bytes(layers: LayerShape, plan: Plan, n_local: int, b: int) -> int:
    """K and V of ``n_local`` tokens on one tensor-parallel GPU, one layer."""
    kv_local = max(layers.kv_heads // plan.tp, 1)
    return 2 * b * n_local * kv_local * layers.head_dim * layers.activation_bytes


class ShardedStep:
    """A step split by a plan; ``at(n, b)`` is the busiest GPU at N and B."""

    def __init__(self, step: StepMemoryLike, plan: Plan, layers: LayerShape | None = None,
                 shapes: Mapping[str, tuple[int, ...]] | None = None,
                 gathered_layers: int = GATHERED_LAYERS):
        self.step, self.plan, self.layers = step, plan, layers
        self.fixed, self.vocab_split = _fixed(step, plan, layers, shapes, gathered_layers)
        self.shares = activation_shares(step, plan.tp) if plan.tp > 1 else None

    def at(self, n: int, b: int = 1) -> PerGpuMemory:
        plan, layers = self.plan, self.layers
        if n < plan.cp:
            raise AttncostError(f"--cp {plan.cp} needs at least {plan.cp} tokens, not {n}")
        n_local = -(-n // plan.cp)
        activations, notes = _activations(self.step, plan, n_local, b, self.shares)
        in_flight, traffic = self.fixed.in_flight, dict(self.fixed.comm)
        if plan.tp > 1:
            reductions = 4 * layers.count + (2 if self.vocab_split else 0)
            size = b * n_local * layers.hidden * layers.activation_bytes
            traffic["tp_all_reduce"] = reductions * comm.all_reduce_bytes(size, plan.tp)
            notes.append("no sequence parallelism: norms, residuals and the blocks' inputs "
                         "are whole on every tensor-parallel GPU")
        if plan.cp > 1:
            block = kv_block_bytes(layers, plan, n_local, b)
            in_flight += 2 * block
            traffic["cp_kv_ring"] = 3 * layers.count * comm.ring_pass_bytes(block, plan.cp)
            notes.append(f"{n_local} tokens per GPU; a fused attention kernel assumed (an eager "
                         "one holds N/cp x N scores, not N/cp x N/cp)")
        return replace(self.fixed, seq_len=int(n), batch=int(b), activations=activations,
                       in_flight=in_flight, comm=traffic, replicated=list(self.fixed.replicated),
                       notes=self.fixed.notes + notes)


def per_gpu(step: StepMemoryLike, plan: Plan, n: int, b: int = 1,
            layers: LayerShape | None = None,
            shapes: Mapping[str, tuple[int, ...]] | None = None,
            gathered_layers: int = GATHERED_LAYERS) -> PerGpuMemory:
    """The busiest GPU's memory and traffic for one step at N=n, B=b."""
    return ShardedStep(step, plan, layers, shapes, gathered_layers).at(n, b)


def largest_seq_len(step: StepMemoryLike, plan: Plan, budget: int, batch: int = 1,
                    layers: LayerShape | None = None,
                    shapes: Mapping[str, tuple[int, ...]] | None = None,
                    lo: int = 1, hi: int | None = None) -> int | None:
    """The largest N whose busiest GPU fits ``budget`` bytes (None: not even ``lo``)."""
    sharded = ShardedStep(step, plan, layers, shapes)
    return max_seq_len(lambda n, b: sharded.at(n, b).total, batch, budget,
                       lo=max(lo, plan.cp), hi=hi)


def largest_batch(step: StepMemoryLike, plan: Plan, budget: int, seq_len: int,
                  layers: LayerShape | None = None,
                  shapes: Mapping[str, tuple[int, ...]] | None = None) -> int | None:
    """The largest batch per data-parallel rank that fits ``budget`` at ``seq_len``."""
    sharded = ShardedStep(step, plan, layers, shapes)
    return max_batch(lambda n, b: sharded.at(n, b).total <= budget, seq_len)


def parameter_shapes(module) -> dict[str, tuple[int, ...]]:
    """{name: shape} of a module's parameters (meta or real), as ``shapes`` takes them."""
    return {name: tuple(p.shape) for name, p in module.named_parameters()}


def parallel_dict(result: PerGpuMemory) -> dict:
    """The JSON ``"parallel"`` object: the plan, bytes sent per step, the
    busiest GPU's memory by part, what stays whole, and notes."""
    return {
        "fsdp": result.plan.fsdp, "tp": result.plan.tp, "cp": result.plan.cp,
        "world_size": result.plan.world_size,
        "comm_bytes_per_step": result.comm_bytes_per_step,
        "comm": dict(result.comm),
        "per_gpu": {"parameter_bytes": result.parameters, "gradient_bytes": result.gradients,
                    "optimizer_bytes": result.optimizer,
                    "activation_bytes": result.activations,
                    "in_flight_bytes": result.in_flight, "total_bytes": result.total},
        "replicated_parameters": list(result.replicated),
        "notes": list(result.notes),
    }
