"""Inputs of a trace: which dims follow N and B, and symbolic tensors for them."""
from __future__ import annotations

from typing import Any

import sympy
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._pytree import tree_flatten

from ..errors import ModelError
from ..expr import B, N, value_at
from ..loader import LoadedModel

#: Sizes used to tell which input dims follow the length and which the batch.
_PROBES = ((11, 3), (13, 5))


class InputDims(list):
    """For each flattened input, its dims' expressions in N and B (None for
    a constant).  ``batch_in_structure``: the inputs hold a list as long as
    the batch (a pipeline's per-sample image shapes), so B cannot be a
    symbol: the dims were read at the batch asked, which is traced as it is."""

    batch_in_structure: bool = False


def _probe(loaded: LoadedModel, seq: int, batch: int):
    with FakeTensorMode(allow_non_fake_inputs=True):
        return tree_flatten(loaded.example_inputs(seq, batch))


def probe_dims(loaded: LoadedModel, batch: int = 1) -> InputDims:
    """Which input dims follow N and which B, found by calling the input
    builder at two small sizes under a fake mode (nothing is allocated)."""
    probes = _PROBES
    (flat0, spec0), (flat1, spec1) = (_probe(loaded, *p) for p in probes)
    per_sample = spec0 != spec1 or len(flat0) != len(flat1)
    if per_sample:  # a structure that follows the batch: read at the batch asked
        probes = tuple((seq, batch) for seq, _ in _PROBES)
        (flat0, spec0), (flat1, spec1) = (_probe(loaded, *p) for p in probes)
        if spec0 != spec1 or len(flat0) != len(flat1):
            raise ModelError("example_inputs returns a different structure for different lengths")
    dims = InputDims()
    dims.batch_in_structure = per_sample
    for a, b in zip(flat0, flat1):
        if _is_count(a) and _is_count(b):  # a number given beside the tensors (num_frames=N)
            dims.append([_count_expr(a, b, probes)])
            continue
        if not isinstance(a, torch.Tensor):
            dims.append(None)
            continue
        if a.dim() != b.dim():
            raise ModelError("example_inputs returns tensors whose rank depends on the length")
        dims.append([_dim_expr(int(x), int(y), probes) for x, y in zip(a.shape, b.shape)])
    return dims


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _count_expr(x: int, y: int, probes=_PROBES) -> sympy.Expr | None:
    """A number among the inputs that follows N or B (frames folded into the
    batch, and their count given: ``num_frames=N``) is traced as that; any
    other number stays the number it is."""
    try:
        return _dim_expr(x, y, probes)
    except ModelError:
        return None


def _dim_expr(x: int, y: int, probes=_PROBES) -> sympy.Expr | None:
    """The expression in N and B of an input dim seen as x at the first probe
    and y at the second; None for a constant dim."""
    (n0, b0), (n1, b1) = probes
    if x == y:
        return None
    for cand in (N, B, N * B) if b0 != b1 else (N,):
        if value_at(cand, n0, b0) == x and value_at(cand, n1, b1) == y:
            return cand
    # c*N + e (for example N + 1 tokens, or 2*N)
    c = sympy.Rational(y - x, n1 - n0)
    e = x - c * n0
    if c.is_integer and e.is_integer and c > 0:
        return c * N + e
    raise ModelError(
        f"an input dim is {x} at N={n0} and {y} at N={n1}: attncost follows dims that grow "
        "as N, B or a multiple of N; make example_inputs(seq_len, batch) build such shapes"
    )


def symbolic_inputs(loaded: LoadedModel, mode: FakeTensorMode, seq_len: int, batch: int,
                     dims: list) -> tuple[Any, dict[sympy.Symbol, sympy.Expr]]:
    """Inputs at the requested size whose length and batch dims are symbols."""
    with FakeTensorMode(allow_non_fake_inputs=True):
        concrete = loaded.example_inputs(seq_len, batch)
    flat, spec = tree_flatten(concrete)
    shape_env = mode.shape_env
    replacements: dict[sympy.Symbol, sympy.Expr] = {}
    made: dict[sympy.Expr, torch.SymInt] = {}
    out = []
    # Imported here: torch._dynamo imports Triton, which must not load before
    # `attncost validate` chooses the interpreter.
    from torch._dynamo.source import ConstantSource

    def symbolic(dexpr, hint: int, name: str) -> torch.SymInt:
        if dexpr not in made:
            sym = shape_env.create_symbol(hint, ConstantSource(name))
            made[dexpr] = shape_env.create_symintnode(sym, hint=hint)
            replacements[sym] = dexpr
        return made[dexpr]

    for idx, (t, tdims) in enumerate(zip(flat, dims)):
        if _is_count(t) and tdims and tdims[0] is not None:
            out.append(symbolic(tdims[0], t, f"attncost_in{idx}"))
            continue
        if not isinstance(t, torch.Tensor):
            out.append(t)
            continue
        sizes: list[Any] = []
        for j, (size, dexpr) in enumerate(zip(t.shape, tdims)):
            if dexpr is None:
                sizes.append(int(size))
                continue
            sizes.append(symbolic(dexpr, int(size), f"attncost_in{idx}_{j}"))
        with mode:
            out.append(torch.empty(sizes, dtype=t.dtype, device=loaded.trace_device))
    return spec.unflatten(out) if hasattr(spec, "unflatten") else out, replacements
