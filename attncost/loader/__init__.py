"""Build the model and its example inputs from what the user points at.

A Python file (``build_model()`` or ``model``, optional ``example_inputs``) or
a transformers config.  Modules are built on the meta device, so a
70B-parameter config costs no memory: only shapes and dtypes are needed.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import ModelError


#: Attention implementations of a transformers config.  ``flash_attention_2``
#: is modelled (flash-attn is CUDA-only): aten's flash kernel, no mask, the
#: causal flag and the sliding window as transformers hands them to flash-attn.
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flex_attention", "flash_attention_2")
FLASH_ATTENTION_2 = "flash_attention_2"


@dataclass
class LoadedModel:
    """A module (weights on the meta device) and a builder of its inputs."""

    module: torch.nn.Module
    example_inputs: Callable[[int, int], Any]
    source: str  # "file" or "config"
    path: str
    dtype: torch.dtype
    config: Any = None
    attn_implementation: str | None = None
    kv_cache: bool = False
    #: device the fake tensors claim during tracing (decides aten dispatch)
    trace_device: str = "cpu"
    #: device whose kernels the trace follows where torch runs other ops on
    #: each (nn.MultiheadAttention's fused path: tracing/fast_paths.py)
    kernel_device: str = "cuda"
    #: context entered while tracing (library patches that mimic real data)
    trace_context: Callable[[], Any] = contextlib.nullcontext
    #: one-line remarks for the report (what N means, defaults a config relies on)
    notes: list[str] = field(default_factory=list)
    #: quantized weights or KV cache to count (memory/quantized.py); None: as built
    quantization: Any = None


def load(path: str | Path, dtype: str | torch.dtype | None = None,
         attn_implementation: str | None = None, kv_cache: bool | None = None,
         last_logits_only: bool = False, weight_dtype: str | None = None,
         group_size: int | None = None, kv_cache_dtype: str | None = None) -> LoadedModel:
    """Load a Python model file or a transformers config (file or directory).

    ``last_logits_only`` (configs) computes the LM head for the last position
    only (transformers' ``logits_to_keep=1``), as generation does.
    ``weight_dtype``, ``group_size`` and ``kv_cache_dtype`` say what is
    counted quantized (memory/quantized.py).
    """
    from ..memory.quantized import quantization

    quant = quantization(weight_dtype, group_size, kv_cache_dtype)
    loaded = _load(path, dtype, attn_implementation, kv_cache, last_logits_only)
    return with_quantization(loaded, quant)


def with_quantization(loaded: LoadedModel, quant) -> LoadedModel:
    """``loaded`` with ``quant`` (a memory.quantized.Quantization) to count,
    checked against what the model is."""
    if quant is None:
        return loaded
    if quant.kv_cache is not None and not loaded.kv_cache:
        raise ModelError("--kv-cache-dtype sizes the KV cache a transformers config's forward "
                         "returns: " + ("pass --kv-cache" if loaded.source == "config" else
                                        "a .py file's cache is not told apart from its outputs"))
    if quant.weights is not None and any(isinstance(m, DynamicQuantizedLinearStandIn)
                                         for m in loaded.module.modules()):
        raise ModelError("--weight-dtype: the model is already quantized (quantize_dynamic); "
                         "its packed weights are counted as they are")
    from ..memory.quantized import quantization_notes

    return dataclasses.replace(loaded, quantization=quant,
                               notes=loaded.notes + quantization_notes(loaded.module, quant))


def _load(path, dtype, attn_implementation, kv_cache, last_logits_only) -> LoadedModel:
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{path}: no such file or directory; give a model .py file or a "
                         "transformers config.json (or its folder)")
    if p.is_dir():
        cfg = p / "config.json"
        if not cfg.exists():
            raise ModelError(f"{path}: a directory without config.json; point at a transformers "
                             "config folder or a model .py file")
        return load_config(cfg, str(path), dtype, attn_implementation, kv_cache, last_logits_only)
    if p.suffix == ".json":
        return load_config(p, str(path), dtype, attn_implementation, kv_cache, last_logits_only)
    if p.suffix == ".py":
        if attn_implementation is not None:
            raise ModelError("--attn-implementation applies to transformers configs, not to a .py file")
        if kv_cache is not None:
            raise ModelError("--kv-cache/--no-kv-cache applies to transformers configs, not to a "
                             ".py file: return the cache from forward() to count it")
        with quantize_dynamic_on_meta() as notes:
            loaded = load_python(p, str(path), dtype)
        loaded.notes.extend(notes + swap_dynamic_linears(loaded.module))
        return loaded
    raise ModelError(f"{path}: expected a .py model file or a transformers config.json")


from .files import load_python  # noqa: E402  (they build LoadedModel)
from .quantized import (DynamicQuantizedLinearStandIn, quantize_dynamic_on_meta,  # noqa: E402
                        swap_dynamic_linears)
from .hf import load_config  # noqa: E402
