"""attncost: what the attention in a PyTorch model costs, before it runs.

    >>> import attncost
    >>> a = attncost.analyze("examples/dense_attention.py", seq_len=4096)
    >>> a.sites[0].flops          # a SymPy expression in N and B
    >>> a.at(a.flops, seq_len=10**6)

The flow: loader -> tracing -> detect -> rules -> memory -> questions ->
render -> cli (docs/design.md).

The names below are imported when first used, so that ``attncost --version``
and ``--help`` start without importing torch.
"""
from __future__ import annotations

import importlib

#: name -> the module that defines it
_EXPORTS = {
    "Analysis": ".analysis", "analyze": ".analysis", "AttentionSite": ".detect",
    "AttncostError": ".errors", "ModelError": ".errors", "SpecError": ".errors",
    "B": ".expr", "N": ".expr", "load": ".loader", "trace": ".tracing",
}

__all__ = ["Analysis", "AttentionSite", "AttncostError", "ModelError", "SpecError", "B", "N",
           "analyze", "load", "trace"]
__version__ = "0.1.0"


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'attncost' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
