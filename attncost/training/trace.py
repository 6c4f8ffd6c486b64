"""The joint trace of a training step: forward, the loss, and the gradients
of the trainable parameters, in one aten graph with N and B symbolic.

The step is traced with make_fx through ``torch.autograd.grad``: autograd
runs above the dispatcher, so the backward's aten ops are recorded after
the forward's.  Every op dispatched inside the grad call is tagged
``backward`` (``node.meta["custom"]``) and given the module path of the
forward op it differentiates (autograd's sequence numbers pair them).

The loss is ``outputs[0].float().sum()``: the first floating-point tensor
the model returns (logits), summed in fp32.  The forward's outputs are
returned by the traced step, so they stay alive to its end, as they do in
a training loop that holds ``outputs`` while it calls backward().
"""
from __future__ import annotations

import contextlib
import functools
from typing import Callable

import torch
import torch.fx as fx
import torch.fx.traceback as fx_traceback
from torch.nn.utils.stateless import _reparametrize_module

from ..errors import ModelError
from ..paths import layer_of
from ..rules.ops import is_view
from ..tracing import Program, tensors_of

#: node.meta["custom"][PHASE] is "backward" for ops of the gradient computation.
PHASE = "attncost_phase"


def is_backward(node: fx.Node) -> bool:
    """Was this node dispatched while autograd computed gradients?"""
    custom = node.meta.get("custom")
    return isinstance(custom, dict) and custom.get(PHASE) == "backward"


def loss_of(outputs: list[torch.Tensor]) -> torch.Tensor:
    """The scalar a step differentiates: the first floating output, summed in fp32."""
    for t in outputs:
        if t.is_floating_point() and t.requires_grad:
            return t.float().sum()
    raise ModelError("--mode train: the model returns no floating-point tensor that depends on "
                     "its trainable parameters, so there is no loss to differentiate")


#: node.meta["custom"][GRAD_FN]: which autograd node's backward dispatched the op
#: (its sequence number, the seq_nr of the forward op it differentiates).
GRAD_FN = "attncost_grad_fn"


@contextlib.contextmanager
def _backward_phase(loss: torch.Tensor):
    """Tag every node made inside the block as part of the backward, and
    each with the autograd node whose backward made it (hooks on every
    node of the loss's autograd graph, as AOT autograd's stack-trace hooks)."""
    meta = fx_traceback.current_meta
    saved = meta.get("custom")
    phase = {**(saved or {}), PHASE: "backward"}
    meta["custom"] = phase

    def prehook(seq: int):
        def hook(grad_outputs):
            meta["custom"] = {**phase, GRAD_FN: seq}
        return hook

    def posthook(grad_inputs, grad_outputs):
        meta["custom"] = phase

    for fn in _autograd_nodes(loss.grad_fn):
        fn.register_prehook(prehook(fn._sequence_nr()))
        fn.register_hook(posthook)
    try:
        yield
    finally:
        if saved is None:
            meta.pop("custom", None)
        else:
            meta["custom"] = saved


def _autograd_nodes(root) -> list:
    """Every node of an autograd graph reachable from ``root``."""
    seen, stack = set(), [root] if root is not None else []
    while stack:
        fn = stack.pop()
        if fn in seen:
            continue
        seen.add(fn)
        stack.extend(f for f, _ in fn.next_functions if f is not None)
    return list(seen)


def grad_fn_of(node: fx.Node) -> int | None:
    """The sequence number of the autograd node whose backward made ``node``."""
    custom = node.meta.get("custom")
    return custom.get(GRAD_FN) if isinstance(custom, dict) else None


def _step_function(model: torch.nn.Module, params: dict, grad_names: list[str],
                   forward_context: Callable[[], contextlib.AbstractContextManager]) -> Callable:
    """Forward (inside ``forward_context``: autocast, checkpointed layers),
    loss, gradients of the parameters that require grad.  ``grad_names``
    receives the names whose gradients the step returns, in order."""
    names = [name for name, t in params.items() if t.requires_grad]
    if not names:
        raise ModelError("--mode train: the model has no trainable parameters")

    def step(params, args, kwargs):
        # The module holds the fake parameters through backward too: a
        # checkpointed layer runs its forward again there.
        with _reparametrize_module(model, params, tie_weights=True):
            with forward_context():
                outputs = tensors_of(model(*args, **kwargs))
                loss = loss_of(outputs)
            with _backward_phase(loss):
                grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
        grad_names[:] = [n for n, g in zip(names, grads) if g is not None]
        return [*outputs, *[g for g in grads if g is not None]]

    return step


def step_program(trainable: Callable[[str], bool], grad_names: list[str],
                 mixed_precision: str | None = None, checkpointing: str = "none") -> Program:
    """The tracing program of one training step; ``grad_names`` is filled
    with the parameters whose gradients the graph's last outputs are."""
    def forward_context():
        stack = contextlib.ExitStack()
        if mixed_precision is not None:
            stack.enter_context(torch.autocast(device_type="cpu", dtype=MIXED_DTYPES[mixed_precision]))
        return stack

    def build(model, params):
        def context():
            stack = forward_context()
            if checkpointing == "full":
                stack.enter_context(checkpointed_layers(model))
            return stack
        return _step_function(model, params, grad_names, context)

    return Program(build, grad=True, trainable=trainable)


#: --mixed-precision: the dtype autocast computes in.
MIXED_DTYPES = {"bf16": torch.bfloat16}
CHECKPOINTING = ("none", "full")


@contextlib.contextmanager
def checkpointed_layers(model: torch.nn.Module):
    """Each layer (paths.layer_of) runs under torch.utils.checkpoint
    (non-reentrant): only its inputs are saved, its forward is run again
    inside backward."""
    from torch.utils.checkpoint import checkpoint

    layers = [m for name, m in model.named_modules() if name and layer_of(name) == name]
    if not layers:
        raise ModelError("--checkpointing full: the model has no numbered layers "
                         "(an nn.ModuleList or nn.Sequential of blocks) to checkpoint")
    for m in layers:
        m.forward = functools.partial(checkpoint, type(m).forward.__get__(m), use_reentrant=False)
    try:
        yield
    finally:
        for m in layers:
            del m.forward


def label_backward(graph_module: fx.GraphModule) -> None:
    """Give each backward node the module stack of the forward op it
    differentiates (autograd's sequence number pairs them).  A backward
    node that already has a stack is a forward op run again inside backward
    (a checkpointed layer): it is marked ``recompute``."""
    stacks = {}
    for node in graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        if not is_backward(node):
            seq = node.meta.get("seq_nr")
            if seq is not None and node.meta.get("nn_module_stack"):
                stacks.setdefault(seq, node.meta["nn_module_stack"])
        elif node.meta.get("nn_module_stack"):
            node.meta["custom"] = {**node.meta["custom"], "recompute": True}
        elif grad_fn_of(node) in stacks:
            node.meta["nn_module_stack"] = stacks[grad_fn_of(node)]


def is_recompute(node: fx.Node) -> bool:
    """A forward op run again inside backward (checkpointing)."""
    custom = node.meta.get("custom")
    return isinstance(custom, dict) and bool(custom.get("recompute"))


#: Ops that read a tensor's metadata only (autograd saves sizes, not tensors).
_METADATA_OPS = tuple(op for op in (getattr(torch.ops.aten, "sym_size", None),
                                    getattr(torch.ops.aten, "sym_stride", None),
                                    getattr(torch.ops.aten, "sym_numel", None),
                                    getattr(torch.ops.aten, "sym_storage_offset", None))
                      if op is not None)


def tidy_for_liveness(graph_module: fx.GraphModule) -> None:
    """Make last use in the graph mean what keeps a tensor alive in eager
    autograd.  A size read in backward (autograd keeps sizes as SymInts,
    not the tensor) moves next to its tensor; views nobody reads go (they
    allocate nothing and would hold their base to their place)."""
    graph = graph_module.graph
    for node in list(graph.nodes):
        if node.op == "call_function" and getattr(node.target, "overloadpacket", None) in \
                _METADATA_OPS and isinstance(node.args[0], fx.Node):
            node.args[0].append(node)
    changed = True
    while changed:
        changed = False
        for node in reversed(list(graph.nodes)):
            if node.op == "call_function" and not node.users and is_view(node):
                graph.erase_node(node)
                changed = True
