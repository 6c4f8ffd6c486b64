"""What a mask lets through, and which attention variant a site therefore is.

* mask.py: a named pattern read off a boolean (queries × keys) matrix;
* formulas.py: the canonical cost formulas of each variant (specs/variants.yaml);
* classify.py: pattern + lengths -> variant, useful FLOPs, complexity.
"""
from .classify import Classification, classify, matches_formula, subquadratic, waste_factor
from .formulas import SYMBOLS, formula, variant_formulas
from .mask import MaskPattern, classify_allowed

__all__ = ["Classification", "MaskPattern", "SYMBOLS", "classify", "classify_allowed",
           "formula", "matches_formula", "subquadratic", "variant_formulas",
           "waste_factor"]
