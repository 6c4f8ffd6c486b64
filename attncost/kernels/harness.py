"""Run the bundled kernels and compare what they cost with what the formulas predict.

For each variant the harness first checks the kernel against its naive
PyTorch reference (max absolute error on small shapes), then, on a GPU,
sweeps the sequence length N and records per point:

* ``seconds``: median time of one call (``triton.testing.do_bench``: CUDA
  events, warm-up first, L2 flushed between calls; autotuning happens in an
  untimed call before);
* ``peak_bytes``: q, k and v plus everything the call allocates (output,
  log-sum-exp, features, state), i.e. ``torch.cuda.max_memory_allocated()``
  during the call minus what was allocated before it, plus the bytes of q, k
  and v.  ``predicted_bytes`` is the variant's ``memory_bytes`` formula,
  which counts the same things, so the two compare directly;
* ``predicted_flops``: the formula's ``flops`` (FlopCounterMode convention);
  ``tflops`` is achieved throughput from the mask-aware ``useful_flops``.

``fitted_exponent`` is the least-squares slope of log(time) against log(N)
over the larger half of the points (at least three where there are three);
``formula_exponent`` is the degree in N of ``useful_flops``.  A variant is
``ok`` when it is correct, its fitted exponent is within 0.15 of the
formula's, and every point's peak bytes are within 5% of the prediction.

On ``device="cpu"`` the kernels run under the Triton interpreter
(TRITON_INTERPRET=1, fp32, tiny shapes): correctness only, no points.

This module answers "what does the whole validation say?": it runs every
variant in turn and is the command line (``python -m
attncost.kernels.harness``).  The parts live beside it: interpreter.py
chooses the kernel build, measure.py measures one call, and
variant_report.py builds and judges one variant's result.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from ..errors import AttncostError
from ..render.validation import plot_validation
from ..units import parse_length
from .interpreter import kernel_modules, triton_interpret_restored
from .measure import PEAK_BYTES_CONVENTION, fit_exponent
from .registry import REGISTRY, SPARSE_BLOCK, VARIANTS
from .variant_report import CPU_CHECK, TOLERANCE, failed_result, validate_variant

__all__ = ["VARIANTS", "fit_exponent", "gpu_slug", "main", "plot_validation", "run_validation"]


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------


def run_validation(variants=None, device="cuda", seq_lens=None, dtype="bfloat16", batch=1, heads=16,
                   head_dim=128, window=512, plot=None, progress=None) -> dict:
    """Check every kernel against its reference and, on a GPU, its cost against its formula.

    Returns ``{"device", "results": [...]}`` as DESIGN.md's ``attncost
    validate`` JSON (plus extra fields).  ``seq_lens`` replaces the default
    sweep of every variant; ``plot`` is a path for a figure of measured
    against predicted time and memory; ``progress`` gets one-line status
    messages.  On a CPU the check runs in fp32 at fixed tiny shapes, so
    ``seq_lens``, ``dtype`` and the shape arguments do not apply there.
    """
    variants = REGISTRY.check(variants)
    _check_device_and_dtype(device, dtype)
    say = progress or (lambda message: None)
    with triton_interpret_restored():
        mods = kernel_modules(interpret=device == "cpu")
        if mods is None:
            if device == "cpu":
                return _run_in_interpreter_process(variants, window, plot, say)
            raise RuntimeError("the kernels were imported under TRITON_INTERPRET=1; "
                               "run the GPU validation in a process without it")
        if device == "cpu":
            say("running under the Triton interpreter: fp32, tiny shapes, correctness only")
        results = _validate_each(variants, mods, device=device, dtype=dtype, seq_lens=seq_lens, batch=batch,
                                 heads=heads, head_dim=head_dim, window=window, say=say)
    report = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "results": results,
        "dtype": "float32" if device == "cpu" else dtype,
        "peak_bytes_convention": PEAK_BYTES_CONVENTION,
        "versions": _versions(),
    }
    if plot:
        plot_validation(report, plot)
        say(f"plot written to {plot}")
    return report


def _check_device_and_dtype(device: str, dtype: str) -> None:
    """ValueError, before any kernel is built, for a device or dtype the run cannot use."""
    if device not in ("cuda", "cpu"):
        raise ValueError(f"device must be 'cuda' or 'cpu', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("CUDA is not available here; use device='cpu' for an interpreter correctness check")
    if dtype not in TOLERANCE:
        raise ValueError(f"dtype must be one of {', '.join(TOLERANCE)}, got {dtype!r}")


def _validate_each(names: list[str], mods: dict, *, device: str, dtype: str, seq_lens, batch: int, heads: int,
                   head_dim: int, window: int, say: Callable[[str], None]) -> list[dict]:
    """Every variant in turn.  One that raises is reported as failed and the others still run;
    the interpreter gets fp32, a small window and small sparse blocks."""
    torch_dtype = torch.float32 if device == "cpu" else getattr(torch, dtype)
    window = window if device == "cuda" else min(window, CPU_CHECK["window"])
    sparse_block = SPARSE_BLOCK if device == "cuda" else CPU_CHECK["sparse_block"]
    results = []
    for name in names:
        variant = REGISTRY.create(name, mods, window, sparse_block, head_dim)
        lens = sorted(seq_lens) if seq_lens else list(variant.default_seq_lens)
        say(f"{name}: starting")
        started = time.perf_counter()
        try:
            res = validate_variant(variant, device=device, dtype=torch_dtype, batch=batch, heads=heads,
                                   head_dim=head_dim, seq_lens=lens, say=say)
        except Exception as exc:
            res = failed_result(name, exc)
            say(f"{name}: failed: {res['errors'][0]}")
        res["wall_seconds"] = time.perf_counter() - started
        results.append(res)
    return results


def _versions() -> dict:
    out = {"torch": torch.__version__}
    try:
        import triton

        out["triton"] = triton.__version__
    except ImportError:  # pragma: no cover
        out["triton"] = None
    return out


def _run_in_interpreter_process(variants, window, plot, say) -> dict:
    """CPU validation in a fresh process: the kernels here were built for a GPU."""
    say("kernels already built for a GPU in this process; running the interpreter check in a subprocess")
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, TRITON_INTERPRET="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", f"{__package__}.harness", "--device", "cpu", "--json", "-",
           "--window", str(window)]
    for v in variants:
        cmd += ["--variant", v]
    if plot:
        cmd += ["--plot", str(plot)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    for line in proc.stderr.splitlines():
        say(line)
    try:  # a non-zero status with a report only means some variant is not ok
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"interpreter validation failed: {tail[0]}") from None


# ---------------------------------------------------------------------------
# Command line (used by benchmarks/gpu_validate.sh)
# ---------------------------------------------------------------------------


def _seq_lens_arg(text: str) -> list[int]:
    """--seq-lens: comma-separated lengths such as 1k,4k,16k."""
    try:
        return [parse_length(x) for x in text.split(",") if x.strip()]
    except AttncostError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def gpu_slug() -> str:
    """A file-name-safe GPU name, e.g. 'h200' for 'NVIDIA H200'."""
    if not torch.cuda.is_available():
        return "cpu"
    name = torch.cuda.get_device_name().lower().replace("nvidia", "")
    return re.sub(r"[^a-z0-9]+", "_", name).strip("_") or "gpu"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m attncost.kernels.harness", description=__doc__.split("\n")[0])
    parser.add_argument("--variant", action="append", choices=VARIANTS)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--seq-lens", type=_seq_lens_arg)
    parser.add_argument("--dtype", default="bfloat16", choices=tuple(TOLERANCE))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--json", default="-", help="output path ('-' for stdout; {gpu} is replaced)")
    parser.add_argument("--plot", help="figure path ({gpu} is replaced)")
    return parser


def _write_json(report: dict, path: str) -> None:
    """Replace ``path`` whole, so a reader (or a timeout) never sees half a report."""
    tmp = Path(path + ".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(path)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    slug = gpu_slug() if args.device == "cuda" else "cpu"
    json_path = None if args.json == "-" else args.json.replace("{gpu}", slug)
    plot_path = args.plot.replace("{gpu}", slug) if args.plot else None

    def say(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    common = dict(device=args.device, seq_lens=args.seq_lens, dtype=args.dtype, batch=args.batch,
                  heads=args.heads, head_dim=args.head_dim, window=args.window, progress=say)
    report = None
    # One variant at a time, writing after each, so a timeout keeps what finished.
    for name in args.variant or list(VARIANTS):
        try:
            part = run_validation([name], **common)
        except (ValueError, RuntimeError) as exc:
            say(f"error: {exc}")
            return 2
        if report is None:
            report = part
        else:
            report["results"].extend(part["results"])
        if json_path:
            _write_json(report, json_path)
    if plot_path:
        plot_validation(report, plot_path)
        say(f"plot written to {plot_path}")
    if json_path:
        say(f"JSON written to {json_path}")
    else:
        from ..render import show_validation

        show_validation(report, "json")
    return 0 if all(r["ok"] for r in report["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
