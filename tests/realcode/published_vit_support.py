"""vit-pytorch (lucidrains) 1.26.14 for the corpus: one model file of the
package imported without the package's __init__, which imports every model
and torchvision with them (the only torchvision for this torch links
libtorch_cuda, which a CPU build lacks).  The files themselves import only
torch and einops.  Without the package, ``require`` skips (or raises
ImportError outside pytest)."""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types

from published_support import require


def vit_module(name: str):
    """``vit_pytorch.<name>``, its package a bare one over the real files."""
    if "vit_pytorch" not in sys.modules:
        spec = importlib.util.find_spec("vit_pytorch")  # finds, does not import
        if spec is None or not spec.submodule_search_locations:
            require("vit_pytorch")  # skips, saying what to install
        require("einops")
        package = types.ModuleType("vit_pytorch")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["vit_pytorch"] = package
    return importlib.import_module(f"vit_pytorch.{name}")
