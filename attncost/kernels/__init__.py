"""Reference Triton kernels for each attention variant, each beside a naive PyTorch reference.

* blocks.py - what the kernels share: the online-softmax Triton functions, input checks,
  the K/V fetch path and the naive references' masked attention
* dense.py  - flash-style dense attention (causal or not), and the banded kernel it is built on
* local.py  - sliding-window attention (causal or symmetric window)
* sparse.py - block-sparse attention and layout builders (strided, BigBird, sliding-block)
* linear.py - kernelized linear attention (elu + 1, FAVOR+), causal and non-causal
* registry.py - the variants `attncost validate` runs, registered once (``VARIANTS``)
* harness.py - runs them on a GPU (or the Triton interpreter) and compares measured
  time and memory with the formulas of specs/variants.yaml; its command line
* interpreter.py - whether the kernel modules get built for the GPU or the Triton interpreter
* measure.py - one kernel call on a device: time, peak bytes, the fitted exponent in N
* variant_report.py - one variant's result: correctness checks, the sweep, the verdict

Importing this package does not import Triton: the kernel submodules do, and the
Triton interpreter (TRITON_INTERPRET=1) must be chosen before they are
imported.  ``VARIANTS`` comes from registry.py, which imports no Triton; the
other names below load their submodule on first use.
"""
from __future__ import annotations

import importlib

from .registry import VARIANTS

_EXPORTS = {
    "flash_attention": "dense",
    "banded_attention": "dense",
    "dense_reference": "dense",
    "local_attention": "local",
    "local_reference": "local",
    "block_sparse_attention": "sparse",
    "block_sparse_reference": "sparse",
    "bigbird_layout": "sparse",
    "strided_layout": "sparse",
    "sliding_block_layout": "sparse",
    "layout_to_block_lists": "sparse",
    "linear_attention": "linear",
    "linear_reference": "linear",
    "random_projection": "linear",
    "run_validation": "harness",
}

__all__ = ["VARIANTS", *sorted(_EXPORTS)]


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
