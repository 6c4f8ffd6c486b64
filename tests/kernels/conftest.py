"""Run the kernel tests under the Triton interpreter when there is no GPU.

Triton chooses between compiling and interpreting when a kernel is
decorated, that is when its module is imported, so TRITON_INTERPRET is set
here, before any test module imports a kernel; kernel modules that something
imported earlier without it are re-imported.
"""
import importlib
import os
import sys

import torch

KERNEL_MODULES = ("dense", "local", "sparse", "linear")  # dependency order

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
    for _name in KERNEL_MODULES:
        _module = sys.modules.get(f"attncost.kernels.{_name}")
        if _module is not None:
            importlib.reload(_module)
