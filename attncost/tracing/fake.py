"""Fake parameters and inputs: shapes and dtypes without memory."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


def fake_parameters(module: torch.nn.Module, mode, device, remove_duplicate: bool = True,
                    mirror_requires_grad: bool = True
                    ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A fake tensor (same shape, strides, dtype) for each parameter and
    buffer of ``module``, made under ``mode`` on ``device``; a tensor shared
    by two names (tied weights) gets one fake.  Returns the fakes by name
    (parameters first, then buffers) and each name's kind.

    With ``mirror_requires_grad`` a fake parameter requires grad as the real
    one does: eager ``matmul`` folds a batched product into ``mm`` (or
    ``mv``) depending on it, even under no_grad, so the graph then makes the
    calls the real forward makes.  A training trace sets its own."""
    fakes: dict[int, torch.Tensor] = {}
    params: dict[str, torch.Tensor] = {}
    kinds: dict[str, str] = {}
    named = [(n, t, "parameter") for n, t in module.named_parameters(remove_duplicate=remove_duplicate)]
    named += [(n, t, "buffer") for n, t in module.named_buffers(remove_duplicate=remove_duplicate)]
    with mode:
        for name, t, kind in named:
            if id(t) not in fakes:
                fakes[id(t)] = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=device)
                if mirror_requires_grad and kind == "parameter" and t.requires_grad \
                        and t.is_floating_point():
                    fakes[id(t)].requires_grad_(True)
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


@contextlib.contextmanager
def module_state_kept(module: torch.nn.Module) -> Iterator[None]:
    """Undo what a forward stores on the model while it runs on fake tensors.

    Code that caches a tensor on first use (x-transformers' ALiBi bias,
    ``register_buffer`` inside forward) would otherwise keep a fake tensor
    of one trace's sizes, which the next trace or replay reads as if it
    were real.  Code that swaps a submodule for another on some lengths
    (BigBird falls back to full attention for a short sequence, for good)
    would keep the swap for every later trace.  The buffers, parameters,
    submodules and plain attributes of every module are put back as they
    were."""
    saved = [(m, dict(m._buffers), dict(m._parameters), dict(m._modules), dict(vars(m)))
             for m in module.modules()]
    caches = _caches(saved)
    try:
        yield
    finally:
        for entry in saved:
            _restore(*entry)
        for cache, before in caches:
            if cache.keys() != before.keys() or any(cache[k] is not v for k, v in before.items()):
                cache.clear()
                cache.update(before)


def _caches(saved) -> list[tuple[dict, dict]]:
    """Each plain dict a module holds as an attribute, with its entries:
    a cache filled in place on first use (timm's LeViT keeps its attention
    biases in one, by device), which would keep a fake tensor."""
    return [(value, dict(value)) for _, _, _, _, attributes in saved
            for key, value in attributes.items()
            if key not in _OWN_STORES and type(value) is dict]


_OWN_STORES = ("_buffers", "_parameters", "_modules")


def _restore(m: torch.nn.Module, buffers: dict, parameters: dict, modules: dict,
             attributes: dict) -> None:
    for store, before in ((m._buffers, buffers), (m._parameters, parameters),
                          (m._modules, modules)):
        if store.keys() != before.keys() or any(store[k] is not v for k, v in before.items()):
            store.clear()
            store.update(before)
    now = vars(m)
    for key in [k for k in now if k not in attributes]:
        del now[key]
    for key, value in attributes.items():
        if key not in _OWN_STORES and now.get(key) is not value:
            now[key] = value
