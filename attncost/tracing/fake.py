"""Fake parameters and inputs: shapes and dtypes without memory."""
from __future__ import annotations

import torch


def fake_parameters(module: torch.nn.Module, mode, device,
                    remove_duplicate: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A fake tensor (same shape, strides, dtype) for each parameter and
    buffer of ``module``, made under ``mode`` on ``device``; a tensor shared
    by two names (tied weights) gets one fake.  Returns the fakes by name
    (parameters first, then buffers) and each name's kind."""
    fakes: dict[int, torch.Tensor] = {}
    params: dict[str, torch.Tensor] = {}
    kinds: dict[str, str] = {}
    named = [(n, t, "parameter") for n, t in module.named_parameters(remove_duplicate=remove_duplicate)]
    named += [(n, t, "buffer") for n, t in module.named_buffers(remove_duplicate=remove_duplicate)]
    with mode:
        for name, t, kind in named:
            if id(t) not in fakes:
                fakes[id(t)] = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=device)
            params[name] = fakes[id(t)]
            kinds[name] = kind
    return params, kinds


def call_args(inputs) -> tuple[tuple, dict]:
    """(args, kwargs) for a forward from what example_inputs returned."""
    if isinstance(inputs, dict):
        return (), inputs
    if isinstance(inputs, (list, tuple)):
        return tuple(inputs), {}
    return inputs, {}
