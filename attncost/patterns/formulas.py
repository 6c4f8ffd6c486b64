"""The canonical cost formulas of each attention variant (specs/variants.yaml).

One formula lives in one place: classification checks traced sites against
these, the report names their complexity class, and the bundled kernels
predict their FLOPs and bytes from them.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import sympy
import yaml

from ..expr import evaluate

SPEC_PATH = Path(__file__).resolve().parent.parent / "specs" / "variants.yaml"

#: Symbols of the canonical formulas, by name.
SYMBOLS: dict[str, sympy.Symbol] = {
    name: sympy.Symbol(name, positive=True, integer=True)
    for name in ("B", "H", "H_kv", "N", "M", "d", "d_v", "w", "k", "r", "s")
}


@dataclass(frozen=True)
class VariantFormula:
    """Cost formulas of one attention variant, as sympy expressions."""

    name: str
    description: str
    complexity: str
    flops: sympy.Expr
    useful_flops: sympy.Expr
    #: what a flash-style kernel holds: Q, K, V, the output and its log-sum-exp
    #: (never the N×M scores); the bundled kernels are measured against it
    memory_bytes: sympy.Expr

    def evaluate(self, field: str, **values: int) -> int:
        """One formula at concrete values; M defaults to N, H_kv to H, d_v to d."""
        values = dict(values)
        values.setdefault("M", values.get("N"))
        values.setdefault("H_kv", values.get("H"))
        values.setdefault("d_v", values.get("d"))
        subs = {SYMBOLS[k]: v for k, v in values.items() if k in SYMBOLS and v is not None}
        try:
            return evaluate(getattr(self, field), subs)
        except ValueError as exc:
            raise ValueError(f"{self.name}.{field}: {exc}") from None

    def at(self, field: str, values: Mapping[sympy.Symbol, sympy.Expr]) -> sympy.Expr:
        """One formula with its symbols replaced by a site's values (expressions
        in N, B); d_v defaults to d."""
        values = dict(values)
        if SYMBOLS["d"] in values:
            values.setdefault(SYMBOLS["d_v"], values[SYMBOLS["d"]])
        return sympy.expand(getattr(self, field).xreplace(values))

    def exponent_in_N(self, field: str = "useful_flops") -> int:
        """Degree of the formula in N once M = N (2 for dense, 1 for the rest)."""
        expr = getattr(self, field).xreplace({SYMBOLS["M"]: SYMBOLS["N"]})
        return int(sympy.Poly(sympy.expand(expr), SYMBOLS["N"]).degree())


def _parse(text: str) -> sympy.Expr:
    return sympy.sympify(str(text), locals=SYMBOLS)


@functools.lru_cache(maxsize=None)
def _load(path: str) -> Mapping[str, VariantFormula]:
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    out = {}
    for name, spec in data["variants"].items():
        out[name] = VariantFormula(
            name=name,
            description=str(spec.get("description", "")),
            complexity=str(spec["complexity"]),
            flops=_parse(spec["flops"]),
            useful_flops=_parse(spec["useful_flops"]),
            memory_bytes=_parse(spec["memory_bytes"]),
        )
    return out


def variant_formulas(path: str | Path | None = None) -> Mapping[str, VariantFormula]:
    """All variants' formulas, loaded once from the bundled (or a given) YAML."""
    return _load(str(path or SPEC_PATH))


def formula(variant: str) -> VariantFormula:
    """The formulas of one variant: dense, causal_dense, local, sparse, linear."""
    formulas = variant_formulas()
    if variant not in formulas:
        raise KeyError(f"unknown variant {variant!r}; known: {', '.join(formulas)}")
    return formulas[variant]
