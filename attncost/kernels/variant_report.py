"""Is one variant's kernel correct, and does its measured cost follow its formulas?

Builds one variant's entry of the validation report: the kernel against
its naive PyTorch reference (max absolute error on small shapes), then, on
a GPU, the sweep over N (measure.py) judged against the formulas of
specs/variants.yaml.  A variant is ``ok`` when it is correct, its fitted
exponent is within 0.15 of the formula's, and every point's peak bytes are
within 5% of the prediction.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..patterns.formulas import VariantFormula, formula
from .measure import Sweep, fit_exponent, median_seconds, peak_bytes, random_inputs
from .registry import KernelVariant

#: Max absolute error allowed against the fp32 reference, by input dtype.
TOLERANCE = {"float32": 2e-3, "float16": 1e-2, "bfloat16": 3e-2}
EXPONENT_TOLERANCE = 0.15
MEMORY_TOLERANCE = 0.05

#: Correctness shapes: a ragged length on a GPU, a tiny one under the interpreter.
CUDA_CHECK_LENGTHS = (1000, 1024)
CPU_CHECK = {"batch": 1, "heads": 2, "kv_heads": 1, "seq_len": 40, "head_dim": 16, "window": 16,
             "sparse_block": 16}


def _formula_fields(spec: VariantFormula) -> dict:
    """The formulas a result quotes, as text, so a reader sees what was compared."""
    return {"flops": str(spec.flops), "useful_flops": str(spec.useful_flops),
            "memory_bytes": str(spec.memory_bytes)}


def _new_result(variant: KernelVariant, spec: VariantFormula, dtype: torch.dtype, batch: int, heads: int,
                head_dim: int) -> dict:
    """A result that says "not correct, not ok" until the checks and the sweep show otherwise."""
    dtype_name = str(dtype).replace("torch.", "")
    return {
        "variant": variant.name,
        "correct": False,
        "max_abs_error": None,
        "formula": _formula_fields(spec),
        "points": [],
        "fitted_exponent": None,
        "formula_exponent": spec.exponent_in_N("useful_flops"),
        "ok": False,
        "tolerance": TOLERANCE[dtype_name],
        "exponent_ok": None,
        "memory_ok": None,
        "settings": {"batch": batch, "heads": heads, "kv_heads": heads, "head_dim": head_dim,
                     "dtype": dtype_name, **variant.settings()},
        "checks": [],
        "errors": [],
    }


def _record_kv_fetch(variant: KernelVariant, result: dict, device: str, dtype: torch.dtype) -> None:
    """On a GPU, note how the kernels will fetch K/V (TMA descriptors on sm90+), since speed depends on it."""
    if device == "cuda" and variant.uses_tma:
        probe = torch.empty(16, device=device, dtype=dtype)
        result["settings"]["kv_fetch"] = "tma" if variant.mods["blocks"].tma_supported(probe) else "pointer"


def _check_shapes(variant: KernelVariant, device: str, heads: int, head_dim: int) -> list[tuple]:
    """(batch, heads, kv_heads, N, d, config) of each correctness check.

    On a GPU a ragged length with the fixed config reaches the masked paths
    and a round one runs autotuned, both with grouped key/value heads; the
    interpreter is slow, so there one tiny shape.
    """
    if device == "cpu":
        return [(CPU_CHECK["batch"], CPU_CHECK["heads"], CPU_CHECK["kv_heads"], CPU_CHECK["seq_len"],
                 CPU_CHECK["head_dim"], None)]
    check_heads = min(heads, 4)
    kv = max(1, check_heads // 2)
    return [(2, check_heads, kv, CUDA_CHECK_LENGTHS[0], head_dim, variant.fixed_config),
            (1, check_heads, kv, CUDA_CHECK_LENGTHS[1], head_dim, None)]


def _run_checks(variant: KernelVariant, shapes: list[tuple], dtype: torch.dtype, device: str,
                use_tma: bool | None) -> list[dict]:
    """The kernel against its reference at each shape: one max absolute error each."""
    errors = []
    for b, h, hk, n, d, config in shapes:
        q, k, v = random_inputs(b, h, hk, n, d, dtype, device, seed=1)
        extras = variant.prepare(n, device, check=True)
        out = variant.run(q, k, v, extras, use_tma=use_tma, config=config)
        ref = variant.reference(q, k, v, extras)
        err = float((out.float() - ref.float()).abs().max())
        errors.append({"seq_len": n, "batch": b, "heads": h, "kv_heads": hk, "head_dim": d,
                       "autotuned": variant.autotuned and config is None and device == "cuda",
                       "max_abs_error": err})
    return errors


def _check_correctness(variant: KernelVariant, result: dict, shapes: list[tuple], dtype: torch.dtype,
                       device: str, say: Callable[[str], None]) -> bool | None:
    """Fill the result's checks, max_abs_error and correct; return the K/V fetch path for the sweep.

    A TMA compile failure must not hide the pointer path: after one the
    checks run again with pointer loads (False), and so does the sweep.
    """
    use_tma = None
    try:
        result["checks"] = _run_checks(variant, shapes, dtype, device, use_tma)
    except Exception as exc:
        if result["settings"].get("kv_fetch") != "tma":
            raise
        result["errors"].append(f"TMA path failed, retrying with pointer loads: {type(exc).__name__}: {exc}")
        say(f"{variant.name}: TMA path failed ({type(exc).__name__}); retrying with pointer loads")
        use_tma = False
        result["settings"]["kv_fetch"] = "pointer"
        result["checks"] = _run_checks(variant, shapes, dtype, device, use_tma)
    result["max_abs_error"] = max(c["max_abs_error"] for c in result["checks"])
    result["correct"] = bool(result["max_abs_error"] <= result["tolerance"])
    say(f"{variant.name}: max abs error {result['max_abs_error']:.3g} (tolerance {result['tolerance']:g})"
        f" -> {'correct' if result['correct'] else 'WRONG'}")
    return use_tma



def _judge_sweep(result: dict) -> None:
    """Set fitted_exponent, exponent_ok, memory_ok and ok from the points.

    A length that does not fit this GPU is reported but does not fail the
    variant; any other error does.
    """
    timed = [p for p in result["points"] if "seconds" in p]
    result["fitted_exponent"] = fit_exponent([p["seq_len"] for p in timed], [p["seconds"] for p in timed])
    if result["fitted_exponent"] is not None:
        result["exponent_ok"] = abs(result["fitted_exponent"] - result["formula_exponent"]) <= EXPONENT_TOLERANCE
    if timed:
        result["memory_ok"] = all(abs(p["bytes_ratio"] - 1) <= MEMORY_TOLERANCE for p in timed)
    failed = [p for p in result["points"] if "error" in p and not p["error"].startswith("out of memory")]
    result["ok"] = bool(result["correct"] and result["exponent_ok"] is True and result["memory_ok"] is True
                        and not failed)


def validate_variant(variant: KernelVariant, *, device: str, dtype: torch.dtype, batch: int, heads: int,
                     head_dim: int, seq_lens: list[int], say: Callable[[str], None],
                     timer: Callable | None = None, peak_meter: Callable | None = None) -> dict:
    """Correctness checks, then (on CUDA, or wherever a timer is given) the sweep over N.

    The checks come first because they also settle the K/V fetch path the
    sweep measures.  Without a timer (the interpreter) correct means ok.
    """
    timer = timer or (median_seconds if device == "cuda" else None)
    peak_meter = peak_meter or (peak_bytes if device == "cuda" else None)
    spec = formula(variant.name)
    result = _new_result(variant, spec, dtype, batch, heads, head_dim)
    _record_kv_fetch(variant, result, device, dtype)
    use_tma = _check_correctness(variant, result, _check_shapes(variant, device, heads, head_dim), dtype,
                                 device, say)
    if timer is None:
        result["settings"].update({k: CPU_CHECK[k] for k in ("batch", "heads", "kv_heads", "head_dim")})
        result["ok"] = result["correct"]
        return result
    sweep = Sweep(variant, spec, device, dtype, batch, heads, head_dim, use_tma, timer, peak_meter, say)
    result["points"] = [sweep.point(n) for n in seq_lens]
    _judge_sweep(result)
    return result


def failed_result(name: str, exc: BaseException) -> dict:
    """The result of a variant whose validation raised: not ok, with the first line of why."""
    spec = formula(name)
    return {
        "variant": name, "correct": False, "max_abs_error": None,
        "formula": _formula_fields(spec),
        "points": [], "fitted_exponent": None, "formula_exponent": spec.exponent_in_N("useful_flops"),
        "ok": False, "errors": [f"{type(exc).__name__}: {exc}".splitlines()[0]],
    }
