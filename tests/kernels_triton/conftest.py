"""Run the kernel tests under the Triton interpreter when there is no GPU.

Triton chooses between compiling and interpreting when a function is
decorated with @triton.jit, its own library functions included, so
TRITON_INTERPRET is set here, before this directory's test modules import
Triton.  If something imported Triton earlier in this process, the
interpreter cannot be switched on any more; ``interpreter_unavailable``
then says why, and the kernel tests skip with that reason (run them in a
pytest process of their own, or with TRITON_INTERPRET=1 set).
"""
import os
import sys

import torch

ON_GPU = torch.cuda.is_available()
_TRITON_IMPORTED_BEFORE = "triton" in sys.modules

if not ON_GPU:
    os.environ["TRITON_INTERPRET"] = "1"


def interpreter_unavailable() -> str | None:
    """Why the Triton interpreter cannot run here, or None when it can (or a GPU is used)."""
    if ON_GPU:
        return None
    try:
        import triton.language.standard as standard
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:
        return None  # no Triton: the test module skips on its own
    if isinstance(standard.cdiv, InterpretedFunction):
        return None
    where = "before tests/kernels_triton/conftest.py" if _TRITON_IMPORTED_BEFORE else "without TRITON_INTERPRET"
    return f"Triton was imported {where}; run the kernel tests in their own pytest process"
