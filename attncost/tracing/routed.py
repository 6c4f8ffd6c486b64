"""Sizes read from the input's values that split a tensor into pieces.

A mixture of experts written without a grouped product (JetMoE's
``expert_size.tolist()`` then ``inputs.split(expert_size)``) sizes each
expert's rows by how many tokens the router sent it: values, not shapes,
so the trace holds them as unbacked symbols and every cost that depends on
them is a formula in them.  What is known is their sum: the pieces cover
the tensor they split.  Each size is taken as an equal share of it (as if
the router spread the tokens evenly): exact for a cost that is the same per
row in every piece (experts of one shape: their FLOPs), an assumption for
the rest (the peak, where one expert's rows may outnumber another's), which
the notes say.
"""
from __future__ import annotations

import sympy
import torch
import torch.fx as fx
from torch.fx.experimental.symbolic_shapes import free_unbacked_symbols

from ..rules.ops import packet

aten = torch.ops.aten


def even_split_sizes(traced) -> dict[sympy.Symbol, sympy.Expr]:
    """{unbacked size symbol: its equal share of the axis its pieces split}."""
    shares: dict[sympy.Symbol, sympy.Expr] = {}
    for node in traced.nodes:
        if node.op != "call_function" or packet(node) is not aten.split_with_sizes:
            continue
        sizes = node.args[1]
        dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
        values = [s.meta.get("val") if isinstance(s, fx.Node) else s for s in sizes]
        symbols = [v.node.expr for v in values if isinstance(v, torch.SymInt)]
        if len(symbols) != len(sizes) or not all(_unbacked(s) for s in symbols):
            continue
        shape = traced.shape(node.args[0])
        if shape is None:
            continue
        whole = shape[dim]
        if any(_unbacked(s) for s in sympy.sympify(whole).free_symbols):
            continue
        for symbol in symbols:
            shares.setdefault(symbol, whole / len(sizes))
    return shares


def _unbacked(expr) -> bool:
    """A symbol the trace made for a value read from data (torch's unbacked int)."""
    return isinstance(expr, sympy.Symbol) and bool(free_unbacked_symbols(expr))


def split_note(count: int) -> str:
    return (f"{count} sizes are read from the input's values (tokens routed to experts, "
            "splitting a tensor into pieces): each is taken as an equal share of what they "
            "split, exact for work the same per row in every piece (the FLOPs), an "
            "assumption for the peak memory")
