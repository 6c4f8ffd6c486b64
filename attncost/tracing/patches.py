"""Run attention code on fake tensors the way it runs on a GPU.

Each context here is entered while a model is traced (and while its memory
is replayed), and tells the code what real data or a real GPU would tell it:

* ``flex_uncompiled`` (every model): torch's ``flex_attention`` calls its
  HOP directly instead of through ``torch.compile`` (its eager path), which
  make_fx records as one op; through dynamo a second trace in the same
  process fails on dynamo's cache;
* ``inference_mode_as_no_grad`` (every model): ``torch.inference_mode``,
  entered inside the model (Meta's reference Llama decorates its
  ``forward``), runs composite ops (``aten.linear``) whole below autograd,
  so the eager replay of the memory model meets ops the graph has
  decomposed and cannot match them.  ``no_grad`` runs the same kernels,
  decomposed as the graph has them;
* ``one_hot_of_a_size`` (every model): ``F.one_hot`` takes its number of
  classes as a plain int, so a count of classes that grows with N (LongT5's
  one global token per block of the input) would fix N; given a size, the
  same tensor is built as a comparison with ``arange``;
* ``unpacked_sequences`` (transformers): no packed sequences, so SDPA runs
  its causal kernel with no mask;
* ``flex_without_compile`` (transformers): ``flex_attention`` is called
  directly instead of through transformers' ``torch.compile`` wrapper, which
  make_fx cannot trace; its block masks are built without the N×N element
  mask that eager ``create_block_mask`` materialises and the compiled one
  fuses away;
* ``experts_in_loop`` (transformers, weights not in bfloat16): the
  experts' products go through transformers' own loop over the experts (a
  custom op with a fake kernel) instead of ``torch._grouped_mm``, whose
  fake kernel takes bfloat16 only (the checks of its CUDA kernel), while
  the CPU kernel a real run calls takes float32 as well: the same products;
* ``flash_attention`` (transformers): ``flash_attention_2`` (the flash-attn
  package: CUDA-only, absent here) is modelled by aten's flash kernel,
  ``_flash_attention_forward``: no mask, the causal flag, the sliding window
  as flash-attn receives it, the output and a log-sum-exp per query row.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch

#: The name transformers gives the flash-attn 2 implementation.
FLASH_ATTENTION_2 = "flash_attention_2"


@contextlib.contextmanager
def patched(obj, name: str, value) -> Iterator[None]:
    """``obj.name = value`` for the duration; nothing when obj lacks it."""
    if obj is None or not hasattr(obj, name):
        yield
        return
    original = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, original)


def _import(module: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        return None


def flex_uncompiled():
    """FlexAttention's HOP called directly (see the module's docstring)."""
    return patched(_import("torch.nn.attention.flex_attention"),
                    "_FLEX_ATTENTION_DISABLE_COMPILE_DEBUG", True)


def _enter_as_no_grad(self) -> None:
    self._inference_mode_context = torch.no_grad() if self.mode else contextlib.nullcontext()
    self._inference_mode_context.__enter__()


def inference_mode_as_no_grad():
    """``torch.inference_mode`` (a reference model's decorated ``forward``)
    entered as ``torch.no_grad``: the same kernels, decomposed as the graph
    has them (see the module's docstring)."""
    return patched(torch.autograd.grad_mode.inference_mode, "__enter__", _enter_as_no_grad)


def _one_hot(original: Callable) -> Callable:
    def one_hot(tensor, num_classes=-1):
        if not isinstance(num_classes, torch.SymInt):
            return original(tensor, num_classes)
        classes = torch.arange(num_classes, device=tensor.device)
        return (tensor.unsqueeze(-1) == classes).to(torch.int64)
    return one_hot


def one_hot_of_a_size():
    """``F.one_hot`` with a count of classes that stays a size (see the
    module's docstring)."""
    functional = torch.nn.functional
    return patched(functional, "one_hot", _one_hot(functional.one_hot))


@contextlib.contextmanager
def any_model() -> Iterator[None]:
    """What every model is traced in, a file's or a config's."""
    with flex_uncompiled(), inference_mode_as_no_grad(), one_hot_of_a_size():
        yield


def unpacked_sequences():
    """Tell transformers' mask code what real data would tell it.

    On real ids, transformers checks the position ids for packed sequences,
    finds none and lets SDPA run its causal kernel with no mask.  On fake
    tensors it cannot read the data and builds an explicit N x N mask that a
    real run never allocates.  attncost's inputs are one unpadded sequence per
    row, so the answer on real data is known: no packing.
    """
    return patched(_import("transformers.masking_utils"), "find_packed_sequence_indices",
                    lambda position_ids: None)


def _call_flex_directly(query, key, value, training=False, **kwargs):
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention(query, key, value, **kwargs)


def _block_mask_like_compiled(original: Callable) -> Callable:
    """``create_block_mask`` that, when asked to compile, returns a BlockMask
    of the shapes the compiled one returns without building its N×N element
    mask: compiled, the mask_mod is fused into the per-block reduction.  The
    block contents are not computed (every block is partial); attncost reads
    the pattern from the mask_mod, and the cost of the attention from its
    operands."""
    def create_block_mask(mask_mod, B, H, Q_LEN, KV_LEN, device=None, BLOCK_SIZE=128,
                          _compile=False, separate_full_blocks=True, **kwargs):
        if not _compile:
            return original(mask_mod, B, H, Q_LEN, KV_LEN, device, BLOCK_SIZE, _compile,
                            separate_full_blocks, **kwargs)
        from torch.nn.attention.flex_attention import _create_sparse_block_from_block_mask

        q_block, kv_block = (BLOCK_SIZE, BLOCK_SIZE) if isinstance(BLOCK_SIZE, int) else BLOCK_SIZE
        shape = (B or 1, H or 1, -(-Q_LEN // q_block), -(-KV_LEN // kv_block))
        partial = torch.ones(shape, dtype=torch.bool, device=device)
        full = torch.zeros(shape, dtype=torch.bool, device=device) if separate_full_blocks else None
        return _create_sparse_block_from_block_mask((partial, full), mask_mod, (Q_LEN, KV_LEN),
                                                    q_block, kv_block)
    return create_block_mask


@contextlib.contextmanager
def flex_without_compile() -> Iterator[None]:
    """transformers' flex_attention path, traceable by make_fx."""
    integration = _import("transformers.integrations.flex_attention")
    masking = _import("transformers.masking_utils")
    with contextlib.ExitStack() as stack:
        stack.enter_context(patched(integration, "compile_friendly_flex_attention",
                                     _call_flex_directly))
        for module in (masking, integration):
            original = getattr(module, "create_block_mask", None)
            if original is not None:
                stack.enter_context(patched(module, "create_block_mask",
                                             _block_mask_like_compiled(original)))
        yield


def flash_attention_forward(module, query, key, value, attention_mask, dropout=0.0,
                            scaling=None, sliding_window=None, softcap=None, is_causal=None,
                            s_aux=None, **kwargs):
    """transformers' ``flash_attention_2`` as aten's flash kernel: (B, H, N, d)
    in, (B, N, H, d) out.  The window is what transformers hands flash-attn,
    (w - 1, w - 1) with causal capping the right side; K and V keep their own
    heads (flash-attn reads grouped heads without repeating them)."""
    is_causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    q, k, v = (x.transpose(1, 2) for x in (query, key, value))
    d_qk, d_v = q.shape[-1], v.shape[-1]
    if d_v != d_qk:  # flash-attn needs one head dim: transformers pads V (MLA)
        v = torch.nn.functional.pad(v, [0, d_qk - d_v])
    left = right = None
    if sliding_window is not None:
        left, right = sliding_window - 1, 0 if is_causal else sliding_window - 1
    out = torch.ops.aten._flash_attention_forward(
        q, k, v, None, None, q.shape[1], k.shape[1], 0.0, bool(is_causal), False,
        scale=scaling, window_size_left=left, window_size_right=right)[0]
    if d_v != d_qk:
        out = out[..., :d_v]
    return out, None


def _configs(model: torch.nn.Module) -> list:
    seen: dict[int, object] = {}
    for mod in model.modules():
        config = getattr(mod, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            seen.setdefault(id(config), config)
    return list(seen.values())


@contextlib.contextmanager
def flash_attention(model: torch.nn.Module) -> Iterator[None]:
    """Run ``model`` (built with another implementation) under
    ``flash_attention_2``, modelled by aten's flash kernel."""
    from transformers.modeling_utils import AttentionInterface

    configs = _configs(model)
    before = [c._attn_implementation_internal for c in configs]
    mapping = AttentionInterface._global_mapping
    original = mapping.get(FLASH_ATTENTION_2)
    mapping[FLASH_ATTENTION_2] = flash_attention_forward
    for c in configs:
        c._attn_implementation_internal = FLASH_ATTENTION_2
    try:
        yield
    finally:
        for c, impl in zip(configs, before):
            c._attn_implementation_internal = impl
        if original is None:
            mapping.pop(FLASH_ATTENTION_2, None)
        else:
            mapping[FLASH_ATTENTION_2] = original


def experts_in_loop(model: torch.nn.Module) -> contextlib.AbstractContextManager:
    """transformers' experts loop where torch._grouped_mm's fake kernel
    would refuse the weights' dtype (see the module's docstring)."""
    weight = next(model.parameters(), None)
    if weight is None or weight.dtype == torch.bfloat16:
        return contextlib.nullcontext()
    return patched(_import("transformers.integrations.moe"), "_can_use_grouped_mm",
                   lambda *args, **kwargs: False)


def trace_context(model: torch.nn.Module, impl: str) -> Callable[[], contextlib.AbstractContextManager]:
    """The context a transformers model of implementation ``impl`` is traced in."""
    @contextlib.contextmanager
    def context() -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            stack.enter_context(any_model())
            stack.enter_context(unpacked_sequences())
            stack.enter_context(experts_in_loop(model))
            if impl == "flex_attention":
                stack.enter_context(flex_without_compile())
            if impl == FLASH_ATTENTION_2:
                stack.enter_context(flash_attention(model))
            yield
    return context
