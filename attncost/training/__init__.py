"""A training step: forward and backward FLOPs from one joint trace, and the
step's peak memory (parameters, gradients, optimizer state, activations
saved for backward, transients), as expressions in N and B.

``train_step`` is what ``analyze(..., mode="train")`` calls; ``StepMemory``
(memory.py) is the step's memory in parts.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy

from ..errors import AttncostError
from ..rules import node_flops
from ..tracing import trace as trace_model
from .lora import add_lora, parse_trainable
from .memory import StepMemory, TrainingMemory, training_memory
from .sites import site_backward_flops
from .optimizers import OPTIMIZERS, TrainableParameter, optimizer_memory
from .trace import (CHECKPOINTING, MIXED_DTYPES, tidy_for_liveness, is_backward,
                    label_backward, step_program)

__all__ = ["CHECKPOINTING", "MIXED_PRECISIONS", "MODES", "OPTIMIZERS", "StepMemory",
           "TrainingOptions", "TrainingStep", "TrainingMemory", "train_step",
           "training_load_options", "with_training"]

MODES = ("infer", "train")
MIXED_PRECISIONS = tuple(MIXED_DTYPES)


@dataclass(frozen=True)
class TrainingOptions:
    """How the step is run: --optimizer, --mixed-precision, --checkpointing, --trainable."""

    optimizer: str = "adamw"
    mixed_precision: str | None = None
    checkpointing: str = "none"
    trainable: str = "all"

    def check(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise AttncostError(f"--optimizer {self.optimizer}: use one of {', '.join(OPTIMIZERS)}")
        if self.mixed_precision is not None and self.mixed_precision not in MIXED_DTYPES:
            raise AttncostError(f"--mixed-precision {self.mixed_precision}: use one of "
                                f"{', '.join(MIXED_DTYPES)}")
        if self.checkpointing not in CHECKPOINTING:
            raise AttncostError(f"--checkpointing {self.checkpointing}: use one of "
                                f"{', '.join(CHECKPOINTING)}")
        parse_trainable(self.trainable)


@dataclass
class TrainingStep:
    """One steady-state training step of a model, for every N in ``traced.n_range``."""

    forward_flops: sympy.Expr
    backward_flops: sympy.Expr
    memory: TrainingMemory
    traced: object
    options: TrainingOptions

    @property
    def flops(self) -> sympy.Expr:
        return sympy.expand(self.forward_flops + self.backward_flops)

    @property
    def step(self) -> StepMemory:
        return self.memory.step


def train_step(loaded, seq_len: int, batch: int, device: str, options: TrainingOptions,
               rules, sites=(), allocation_rules=None, progress=None) -> TrainingStep:
    """Trace forward + backward of ``loaded`` once; FLOPs split by phase and
    the step's memory.  ``sites`` (the forward's attention sites) say where
    LoRA adapters go."""
    options.check()
    rank = parse_trainable(options.trainable)
    adapters = add_lora(loaded.module, sites, rank) if rank else None

    def trainable(name: str) -> bool:
        return adapters is None or name in adapters

    grad_names: list[str] = []
    program = step_program(trainable, grad_names, options.mixed_precision, options.checkpointing)
    traced = trace_model(loaded, seq_len, batch, progress=progress, program=program)
    label_backward(traced.graph_module)
    tidy_for_liveness(traced.graph_module)
    forward = sympy.Integer(0)
    backward = sympy.Integer(0)
    for node in traced.nodes:
        cost = node_flops(traced, node, rules)
        if is_backward(node):
            backward += cost
        else:
            forward += cost
    grads = _gradient_nodes(traced, grad_names)
    params = [TrainableParameter(name, tuple(int(s) for s in node.meta["val"].shape),
                                 node.meta["val"].element_size()) for name, node in grads]
    optimizer = optimizer_memory(options.optimizer, params, device)
    memory = training_memory(traced, loaded, grads, optimizer, device, allocation_rules)
    return TrainingStep(sympy.expand(forward), sympy.expand(backward), memory, traced, options)


def _gradient_nodes(traced, grad_names: list[str]):
    """(parameter, graph value of its gradient): the step's last outputs."""
    output = next(n for n in traced.nodes if n.op == "output")
    values = list(output.args[0])
    return list(zip(grad_names, values[len(values) - len(grad_names):]))


def training_load_options(model, mode: str, dtype, kv_cache, mixed_precision):
    """(dtype, kv_cache) to load ``model`` with for ``mode``: a training step
    of a transformers config builds no KV cache unless asked; mixed
    precision keeps fp32 weights."""
    if mode not in MODES:
        raise AttncostError(f"--mode {mode}: use one of {', '.join(MODES)}")
    if mixed_precision is not None:
        if dtype not in (None, "float32", "fp32"):
            raise AttncostError(f"--mixed-precision {mixed_precision} keeps float32 master weights "
                                f"and computes in {mixed_precision}: leave --dtype unset or float32")
        dtype = "float32"
    if kv_cache is None and not str(getattr(model, "path", model)).endswith(".py"):
        kv_cache = False
    return dtype, kv_cache


def with_training(analysis, options: TrainingOptions, rules, allocation_rules=None, progress=None):
    """``analysis`` (the forward's) with its FLOPs and memory those of a training step."""
    step = train_step(analysis.loaded, analysis.seq_len, analysis.batch, analysis.device, options,
                      rules, sites=analysis.sites, allocation_rules=allocation_rules,
                      progress=progress)
    lo = max(analysis.n_range[0], step.traced.n_range[0])
    highs = [h for h in (analysis.n_range[1], step.traced.n_range[1]) if h is not None]
    analysis.mode = "train"
    analysis.forward_flops, analysis.backward_flops = step.forward_flops, step.backward_flops
    analysis.flops = step.flops
    for site in analysis.sites:
        site.backward_flops = None
    for name, flops in site_backward_flops(analysis.sites, analysis.traced, step.traced,
                                           rules).items():
        next(s for s in analysis.sites if s.name == name).backward_flops = flops
    analysis.memory = step.memory
    analysis.peak_memory_bytes = step.memory.peak_bytes
    analysis.n_range = (lo, min(highs) if highs else None)
    analysis.memory.n_range = analysis.n_range
    analysis.notes.append(_step_note(options, analysis.device))
    return analysis


def _step_note(options: TrainingOptions, device: str) -> str:
    """What the step modelled, in one line."""
    parts = [f"optimizer {options.optimizer}"]
    if options.optimizer != "none":
        parts[0] += f" ({'foreach' if device == 'cuda' else 'single-tensor'} step)"
    if options.mixed_precision:
        parts.append(f"autocast {options.mixed_precision} over float32 weights")
    if options.checkpointing != "none":
        parts.append("each layer checkpointed")
    if options.trainable != "all":
        parts.append(f"LoRA rank {parse_trainable(options.trainable)} on the attention projections")
    return ("train mode: one steady-state step, loss = first output summed in float32; "
            + ", ".join(parts))
