"""Which build of the kernel modules does this process get: compiled for the GPU, or for the Triton interpreter?

Triton decides at decoration time, so TRITON_INTERPRET must be chosen
before the kernel modules are first imported.  This module imports no
Triton at import time (attncost.kernels.harness imports it, and the
choice must still be open then); it only looks at Triton once asked.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys

#: The kernel modules a variant reaches through its ``mods``.
KERNEL_MODULES = ("blocks", "dense", "local", "sparse", "linear")


def kernel_modules(interpret: bool):
    """The kernel modules, built for the interpreter iff ``interpret``.

    Triton decides at decoration time, so TRITON_INTERPRET must be set before
    the modules are first imported.  Returns None when they, or Triton's own
    library, were already imported the other way.
    """
    names = [f"{__package__}.{m}" for m in KERNEL_MODULES]
    if interpret and not any(name in sys.modules for name in names):
        if _triton_built_for_gpu():
            return None
        os.environ["TRITON_INTERPRET"] = "1"
    mods = {m: importlib.import_module(name) for m, name in zip(KERNEL_MODULES, names)}
    return mods if _is_interpreted(mods["dense"]) == interpret else None


def _triton_built_for_gpu() -> bool:
    """Whether Triton was imported without the interpreter (torch._dynamo imports it, for one).

    Its own library functions (tl.cdiv, tl.max, ...) are then compiled-only,
    and kernels built for the interpreter now would fail inside them.
    """
    if "triton" not in sys.modules:
        return False
    try:
        import triton.language.standard as standard
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:  # pragma: no cover
        return False
    return not isinstance(standard.cdiv, InterpretedFunction)


def _is_interpreted(dense_module) -> bool:
    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:  # pragma: no cover
        return False
    return isinstance(dense_module._banded_attn_fwd, InterpretedFunction)


@contextlib.contextmanager
def triton_interpret_restored():
    """TRITON_INTERPRET as it was once the block ends: choosing the interpreter is for this run only."""
    saved = os.environ.get("TRITON_INTERPRET")
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = saved
