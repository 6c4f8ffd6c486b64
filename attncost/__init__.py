"""attncost: what the attention in a PyTorch model costs, before it runs.

    >>> import attncost
    >>> a = attncost.analyze("examples/dense_attention.py", seq_len=4096)
    >>> a.sites[0].flops          # a SymPy expression in N and B
    >>> a.at(a.flops, seq_len=10**6)

The flow: loader -> tracing -> detect -> rules -> memory -> questions ->
render -> cli (docs/design.md).
"""
from .analysis import Analysis, analyze
from .detect import AttentionSite
from .errors import AttncostError, ModelError, SpecError
from .expr import B, N
from .loader import load
from .tracing import trace

__all__ = ["Analysis", "AttentionSite", "AttncostError", "ModelError", "SpecError", "B", "N",
           "analyze", "load", "trace"]
__version__ = "0.1.0"
