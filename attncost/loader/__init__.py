"""Build the model and its example inputs from what the user points at.

A Python file (``build_model()`` or ``model``, optional ``example_inputs``) or
a transformers config.  Modules are built on the meta device, so a
70B-parameter config costs no memory: only shapes and dtypes are needed.
"""
from __future__ import annotations

import contextlib
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
    #: context entered while tracing (library patches that mimic real data)
    trace_context: Callable[[], Any] = contextlib.nullcontext
    #: one-line remarks for the report (what N means, defaults a config relies on)
    notes: list[str] = field(default_factory=list)


def load(path: str | Path, dtype: str | torch.dtype | None = None,
         attn_implementation: str | None = None, kv_cache: bool | None = None,
         last_logits_only: bool = False) -> LoadedModel:
    """Load a Python model file or a transformers config (file or directory).

    ``last_logits_only`` (configs) computes the LM head for the last position
    only (transformers' ``logits_to_keep=1``), as generation does.
    """
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
        return load_python(p, str(path), dtype)
    raise ModelError(f"{path}: expected a .py model file or a transformers config.json")


from .files import load_python  # noqa: E402  (they build LoadedModel)
from .hf import load_config  # noqa: E402
