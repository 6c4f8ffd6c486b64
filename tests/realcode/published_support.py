"""What the published-code corpus (tests/realcode/published_*.py) shares.

The corpus runs attention code that nobody in this project wrote, installed
from PyPI at pinned versions (the ``realcode`` extra of pyproject.toml, put in
by .ci/run with ``--no-deps``).  A package that is missing or does not import
makes its tests skip: ``require`` raises pytest's Skipped when pytest runs it,
an ImportError otherwise (attncost's loader then reports the model file).

Two packages need help to import on a CPU-only torch, and get the least that
makes their own code importable, nothing that changes what it computes:

- timm imports torchvision at import time (a FrozenBatchNorm2d, transforms,
  datasets), and the only torchvision built for torch 2.13 on PyPI links
  libtorch_cuda, which the CPU build of torch does not have.  ``import_timm``
  imports timm against a stand-in torchvision whose every name is an empty
  class, and removes the stand-in from ``sys.modules`` afterwards, so nothing
  else in the process sees a torchvision.  None of the models built here
  (VisionTransformer, SwinTransformer) calls torchvision.
- flash-linear-attention's package __init__ imports its Triton kernels and
  every model (15 s).  Its naive references (fla/ops/linear_attn/naive.py)
  import only torch and einops; ``fla_linear_attn_naive`` loads that one file.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types

import torch
from torch import nn

#: The packages of the corpus and the version each test was written against
#: (pyproject.toml's ``realcode`` extra pins the same).
PINNED = {
    "x_transformers": "2.31.10",
    "local_attention": "1.11.2",
    "performer_pytorch": "1.1.4",
    "timm": "1.0.31",
    "fla": "0.6.0",
    "labml_nn": "0.5.1",
    "diffusers": "0.42.1",
}


def _skip(message: str):
    if "pytest" in sys.modules:
        import pytest

        pytest.skip(message)
    raise ImportError(message)


def require(name: str):
    """Import ``name`` or skip (under pytest) / raise ImportError."""
    try:
        return importlib.import_module(name)
    except Exception as exc:  # an installed package that fails to import skips too
        _skip(f"{name} is not importable here ({type(exc).__name__}: {exc}); "
              "install the realcode extra (.ci/run)")


# ------------------------------------------------------------------ timm


class _Anything(type):
    """A class whose every attribute is another empty class."""

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        made = _Anything(name, (), {})
        setattr(cls, name, made)
        return made


class _StandInModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        made = _Anything(name, (), {"__module__": self.__name__})
        setattr(self, name, made)
        return made


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StandInModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        module.__version__ = "0.0+stand-in"


def _torchvision_importable() -> bool:
    try:
        importlib.import_module("torchvision")
    except Exception:
        sys.modules.pop("torchvision", None)
        return False
    return True


def import_timm():
    """timm, imported against a stand-in torchvision when the real one does not load."""
    if "timm" in sys.modules:
        return sys.modules["timm"]
    if importlib.util.find_spec("timm") is None:
        _skip("timm is not installed; install the realcode extra (.ci/run)")
    if _torchvision_importable():
        return require("timm")
    finder = _StandInFinder()
    sys.meta_path.insert(0, finder)
    try:
        import timm
    except Exception as exc:
        for name in [m for m in sys.modules if m == "timm" or m.startswith("timm.")]:
            del sys.modules[name]
        _skip(f"timm does not import against a stand-in torchvision ({type(exc).__name__}: {exc})")
    finally:
        sys.meta_path.remove(finder)
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
    return timm


# ------------------------------------------------------------------ fla


def fla_linear_attn_naive():
    """flash-linear-attention's fla/ops/linear_attn/naive.py, loaded alone."""
    return fla_naive("linear_attn")


def fla_naive(op: str):
    """flash-linear-attention's fla/ops/<op>/naive.py, loaded alone (the
    package's own __init__ wants Triton)."""
    name = f"published_fla_{op}_naive"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec("fla")
    if spec is None or not spec.submodule_search_locations:
        _skip("flash-linear-attention (fla) is not installed; install the realcode extra (.ci/run)")
    from pathlib import Path

    path = Path(list(spec.submodule_search_locations)[0]) / "ops" / op / "naive.py"
    if not path.exists():
        _skip(f"{path} is not in this flash-linear-attention")
    file_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(file_spec)
    try:
        file_spec.loader.exec_module(module)
    except Exception as exc:
        _skip(f"{path} does not import ({type(exc).__name__}: {exc})")
    sys.modules[name] = module
    return module


# ------------------------------------------------------------------ a layer around a kernel


class HeadsAround(nn.Module):
    """Projections around a published attention function, as its README shows
    it used: x -> q, k, v (``heads`` of ``dim_head``) -> ``attend`` -> out.

    ``layout`` is where the heads go in what ``attend`` takes:
    "bhnd" (batch, heads, length, dim) or "bnhd" (batch, length, heads, dim).
    """

    def __init__(self, attend, dim: int, heads: int, dim_head: int, layout: str = "bhnd"):
        super().__init__()
        self.attend, self.heads, self.dim_head, self.layout = attend, heads, dim_head, layout
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.to_qkv(x).view(b, n, 3, self.heads, self.dim_head).unbind(2)
        if self.layout == "bhnd":
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        out = self.attend(q, k, v)
        if isinstance(out, tuple):
            out = out[0]
        if self.layout == "bhnd":
            out = out.transpose(1, 2)
        return self.to_out(out.reshape(b, n, self.heads * self.dim_head))


class Stack(nn.Module):
    """``depth`` pre-norm residual layers, each ``make()`` then an MLP."""

    def __init__(self, make, dim: int, depth: int):
        super().__init__()
        self.layers = nn.ModuleList(nn.ModuleDict(dict(
            norm1=nn.LayerNorm(dim), attn=make(), norm2=nn.LayerNorm(dim),
            mlp=nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))))
            for _ in range(depth))

    def forward(self, x):
        for layer in self.layers:
            x = x + layer["attn"](layer["norm1"](x))
            x = x + layer["mlp"](layer["norm2"](x))
        return x


def tokens(seq_len: int, batch: int = 1, dim: int = 32) -> tuple[torch.Tensor]:
    """Example activations (batch, seq_len, dim)."""
    return (torch.randn(batch, seq_len, dim),)
