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
"""
from __future__ import annotations

import argparse
import gc
import importlib
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import sympy
import torch

from attncost.variants import formula

VARIANTS = ("dense", "causal_dense", "local", "sparse", "linear")

#: Default sweeps on a GPU (B=1, H=16, d=128, bf16 fit comfortably in 80 GB).
DEFAULT_SEQ_LENS = {
    "dense": [2048, 4096, 8192, 16384, 32768],
    "causal_dense": [2048, 4096, 8192, 16384, 32768, 65536],
    "local": [4096, 8192, 16384, 32768, 65536],
    "sparse": [4096, 8192, 16384, 32768, 65536],
    "linear": [16384, 65536, 262144, 1048576],
}

#: Max absolute error allowed against the fp32 reference, by input dtype.
TOLERANCE = {"float32": 2e-3, "float16": 1e-2, "bfloat16": 3e-2}
EXPONENT_TOLERANCE = 0.15
MEMORY_TOLERANCE = 0.05

#: Block size and BigBird pattern of the sparse sweep: a fixed number of
#: blocks per row, so the keys per query stay (nearly) constant as N grows.
SPARSE_BLOCK = 128
SPARSE_PATTERN = {"global_blocks": 1, "window_blocks": 3, "random_blocks": 2, "seed": 0}

#: Correctness shapes: a ragged length on a GPU, a tiny one under the interpreter.
CUDA_CHECK_LENGTHS = (1000, 1024)
CPU_CHECK = {"batch": 1, "heads": 2, "kv_heads": 1, "seq_len": 40, "head_dim": 16, "window": 16,
             "sparse_block": 16}

_KERNEL_MODULES = ("dense", "local", "sparse", "linear")

PEAK_BYTES_CONVENTION = ("q, k, v plus everything the kernel call allocates "
                         "(max_memory_allocated during the call - allocated before + bytes of q, k, v)")


# ---------------------------------------------------------------------------
# Kernel modules: compiled for the GPU or for the Triton interpreter
# ---------------------------------------------------------------------------


def _kernel_modules(interpret: bool):
    """The kernel modules, built for the interpreter iff ``interpret``.

    Triton decides at decoration time, so TRITON_INTERPRET must be set before
    the modules are first imported.  Returns None when they were already
    imported the other way.
    """
    names = [f"{__package__}.{m}" for m in _KERNEL_MODULES]
    if interpret and not any(name in sys.modules for name in names):
        os.environ["TRITON_INTERPRET"] = "1"
    mods = {m: importlib.import_module(name) for m, name in zip(_KERNEL_MODULES, names)}
    return mods if _is_interpreted(mods["dense"]) == interpret else None


def _is_interpreted(dense_module) -> bool:
    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:  # pragma: no cover
        return False
    return isinstance(dense_module._banded_attn_fwd, InterpretedFunction)


# ---------------------------------------------------------------------------
# Variants: how to build inputs, run the kernel and its reference
# ---------------------------------------------------------------------------


class _Variant:
    """One variant's kernel call, reference, settings and formula symbols."""

    #: Explicit launch config for ragged-length checks on a GPU (no autotuning).
    fixed_config: dict | None = None
    autotuned = True
    uses_tma = True

    def __init__(self, name: str, mods: dict, window: int, sparse_block: int, head_dim: int):
        self.name = name
        self.mods = mods
        self.window = window
        self.sparse_block = sparse_block
        self.head_dim = head_dim

    def settings(self) -> dict:
        return {}

    def prepare(self, n: int, device: str, check: bool = False) -> dict:
        return {}

    def symbols(self, n: int, extras: dict) -> dict:
        return {}

    def run(self, q, k, v, extras, use_tma=None, config=None):
        raise NotImplementedError

    def reference(self, q, k, v, extras):
        raise NotImplementedError


class _Dense(_Variant):
    fixed_config = {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3}

    @property
    def causal(self) -> bool:
        return self.name == "causal_dense"

    def settings(self):
        return {"causal": self.causal}

    def run(self, q, k, v, extras, use_tma=None, config=None):
        return self.mods["dense"].flash_attention(q, k, v, causal=self.causal, use_tma=use_tma, config=config)

    def reference(self, q, k, v, extras):
        return self.mods["dense"].dense_reference(q, k, v, causal=self.causal)


class _Local(_Dense):
    def settings(self):
        return {"window": self.window, "causal": True}

    def symbols(self, n, extras):
        return {"w": self.window}

    def run(self, q, k, v, extras, use_tma=None, config=None):
        return self.mods["local"].local_attention(q, k, v, self.window, causal=True, use_tma=use_tma, config=config)

    def reference(self, q, k, v, extras):
        return self.mods["local"].local_reference(q, k, v, self.window, causal=True)


class _Sparse(_Variant):
    fixed_config = {"num_warps": 4, "num_stages": 3}

    def settings(self):
        return {"layout": "bigbird", "block_size": self.sparse_block, **SPARSE_PATTERN}

    def prepare(self, n, device, check=False):
        sparse = self.mods["sparse"]
        nb = -(-n // self.sparse_block)
        layout = sparse.bigbird_layout(nb, **SPARSE_PATTERN)
        if check and nb > 2:
            layout[:, 1, :] = False  # an empty block row: its rows must come out as zeros
        lists = sparse.layout_to_block_lists(layout.to(device))
        k_per_query = sparse.keys_per_query(layout, n, self.sparse_block)
        return {"layout": layout, "lists": lists, "k": sympy.Rational(k_per_query.numerator, k_per_query.denominator)}

    def symbols(self, n, extras):
        return {"k": extras["k"]}

    def run(self, q, k, v, extras, use_tma=None, config=None):
        return self.mods["sparse"].block_sparse_attention(q, k, v, extras["lists"], self.sparse_block,
                                                          use_tma=use_tma, config=config)

    def reference(self, q, k, v, extras):
        return self.mods["sparse"].block_sparse_reference(q, k, v, extras["layout"], self.sparse_block)


class _Linear(_Variant):
    autotuned = False
    uses_tma = False

    def settings(self):
        return {"feature_map": "elu", "causal": False}

    def symbols(self, n, extras):
        return {"r": self.head_dim}  # elu + 1 keeps the head dimension

    def run(self, q, k, v, extras, use_tma=None, config=None):
        return self.mods["linear"].linear_attention(q, k, v, "elu", causal=False)

    def reference(self, q, k, v, extras):
        return self.mods["linear"].linear_reference(q, k, v, "elu", causal=False)


_VARIANT_CLASSES = {"dense": _Dense, "causal_dense": _Dense, "local": _Local, "sparse": _Sparse, "linear": _Linear}


# ---------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------


def _inputs(batch, heads, kv_heads, n, head_dim, dtype, device, seed=0):
    gen = torch.Generator(device=device).manual_seed(seed)
    q = torch.randn(batch, heads, n, head_dim, generator=gen, device=device, dtype=dtype)
    k = torch.randn(batch, kv_heads, n, head_dim, generator=gen, device=device, dtype=dtype)
    v = torch.randn(batch, kv_heads, n, head_dim, generator=gen, device=device, dtype=dtype)
    return q, k, v


def _synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _seconds(fn: Callable[[], object]) -> float:
    """Median seconds of one call: CUDA events, after warm-up, L2 flushed."""
    import triton.testing

    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median") / 1e3


def _peak_bytes(fn: Callable[[], object], input_bytes: int) -> int:
    """Bytes the call allocates at its peak, plus the bytes of its inputs."""
    gc.collect()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del out
    return int(peak - before + input_bytes)


def fit_exponent(seq_lens: list[int], seconds: list[float]) -> float | None:
    """Least-squares slope of log(seconds) vs log(N) over the larger points.

    Small N are dominated by launch overhead, so only the larger half (at
    least three points where there are three) enters the fit.
    """
    pts = sorted((n, t) for n, t in zip(seq_lens, seconds) if t and t > 0)
    if len(pts) < 2:
        return None
    use = pts[-max(min(3, len(pts)), math.ceil(len(pts) / 2)):]
    xs = [math.log(n) for n, _ in use]
    ys = [math.log(t) for _, t in use]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


# ---------------------------------------------------------------------------
# One variant
# ---------------------------------------------------------------------------


def _validate_variant(variant: _Variant, *, device: str, dtype: torch.dtype, batch: int, heads: int,
                      head_dim: int, seq_lens: list[int], say: Callable[[str], None],
                      timer: Callable | None = None, peak_meter: Callable | None = None) -> dict:
    """Correctness checks, then (on CUDA, or wherever a timer is given) the sweep over N."""
    name = variant.name
    timer = timer or (_seconds if device == "cuda" else None)
    peak_meter = peak_meter or (_peak_bytes if device == "cuda" else None)
    spec = formula(name)
    dtype_name = str(dtype).replace("torch.", "")
    elem = torch.empty((), dtype=dtype).element_size()
    base_symbols = {"B": batch, "H": heads, "H_kv": heads, "d": head_dim, "s": elem}
    result = {
        "variant": name,
        "correct": False,
        "max_abs_error": None,
        "formula": {"flops": str(spec.flops), "useful_flops": str(spec.useful_flops),
                    "memory_bytes": str(spec.memory_bytes)},
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
    use_tma = None
    if device == "cuda" and variant.uses_tma:
        dense = variant.mods["dense"]
        probe = torch.empty(16, device=device, dtype=dtype)
        result["settings"]["kv_fetch"] = "tma" if dense.tma_supported(probe) else "pointer"

    # --- correctness -------------------------------------------------------
    if device == "cpu":
        checks = [(CPU_CHECK["batch"], CPU_CHECK["heads"], CPU_CHECK["kv_heads"], CPU_CHECK["seq_len"],
                   CPU_CHECK["head_dim"], None)]
    else:
        check_heads = min(heads, 4)
        kv = max(1, check_heads // 2)
        checks = [(2, check_heads, kv, CUDA_CHECK_LENGTHS[0], head_dim, variant.fixed_config),
                  (1, check_heads, kv, CUDA_CHECK_LENGTHS[1], head_dim, None)]

    def run_checks(tma):
        errors = []
        for b, h, hk, n, d, config in checks:
            q, k, v = _inputs(b, h, hk, n, d, dtype, device, seed=1)
            extras = variant.prepare(n, device, check=True)
            out = variant.run(q, k, v, extras, use_tma=tma, config=config)
            ref = variant.reference(q, k, v, extras)
            err = float((out.float() - ref.float()).abs().max())
            errors.append({"seq_len": n, "batch": b, "heads": h, "kv_heads": hk, "head_dim": d,
                           "autotuned": variant.autotuned and config is None and device == "cuda",
                           "max_abs_error": err})
        return errors

    try:
        result["checks"] = run_checks(use_tma)
    except Exception as exc:  # a TMA compile failure must not hide the pointer path
        if result["settings"].get("kv_fetch") != "tma":
            raise
        result["errors"].append(f"TMA path failed, retrying with pointer loads: {type(exc).__name__}: {exc}")
        say(f"{name}: TMA path failed ({type(exc).__name__}); retrying with pointer loads")
        use_tma = False
        result["settings"]["kv_fetch"] = "pointer"
        result["checks"] = run_checks(use_tma)
    result["max_abs_error"] = max(c["max_abs_error"] for c in result["checks"])
    result["correct"] = bool(result["max_abs_error"] <= result["tolerance"])
    say(f"{name}: max abs error {result['max_abs_error']:.3g} (tolerance {result['tolerance']:g})"
        f" -> {'correct' if result['correct'] else 'WRONG'}")

    if timer is None:
        result["settings"].update({k: CPU_CHECK[k] for k in ("batch", "heads", "kv_heads", "head_dim")})
        result["ok"] = result["correct"]
        return result

    # --- sweep ----------------------------------------------------------------
    for n in seq_lens:
        point = {"seq_len": n}
        try:
            q, k, v = _inputs(batch, heads, heads, n, head_dim, dtype, device)
            extras = variant.prepare(n, device)
            values = {**base_symbols, **variant.symbols(n, extras), "N": n}
            call = lambda: variant.run(q, k, v, extras, use_tma=use_tma)  # noqa: E731
            call()  # autotune and compile outside the timing
            _synchronize(device)
            seconds = timer(call)
            peak = peak_meter(call, q.nbytes + k.nbytes + v.nbytes)
            flops = spec.evaluate("flops", **values)
            useful = spec.evaluate("useful_flops", **values)
            predicted_bytes = spec.evaluate("memory_bytes", **values)
            point.update({
                "seconds": seconds,
                "peak_bytes": peak,
                "predicted_flops": flops,
                "predicted_bytes": predicted_bytes,
                "tflops": useful / seconds / 1e12,
                "predicted_useful_flops": useful,
                "bytes_ratio": peak / predicted_bytes,
            })
            if "k" in values:
                point["keys_per_query"] = float(values["k"])
            say(f"{name}: N={n}: {seconds * 1e3:.3f} ms, {point['tflops']:.1f} TFLOP/s, peak {peak / 2**20:.1f} MiB"
                f" (predicted {predicted_bytes / 2**20:.1f} MiB)")
        except torch.cuda.OutOfMemoryError as exc:
            point["error"] = f"out of memory: {exc}".splitlines()[0]
            say(f"{name}: N={n}: out of memory")
        except Exception as exc:
            point["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
            say(f"{name}: N={n}: {point['error']}")
        finally:
            q = k = v = extras = call = None  # noqa: F841
            gc.collect()
            if device == "cuda":
                torch.cuda.empty_cache()
        result["points"].append(point)

    timed = [p for p in result["points"] if "seconds" in p]
    result["fitted_exponent"] = fit_exponent([p["seq_len"] for p in timed], [p["seconds"] for p in timed])
    if result["fitted_exponent"] is not None:
        result["exponent_ok"] = abs(result["fitted_exponent"] - result["formula_exponent"]) <= EXPONENT_TOLERANCE
    if timed:
        result["memory_ok"] = all(abs(p["bytes_ratio"] - 1) <= MEMORY_TOLERANCE for p in timed)
    # A length that does not fit this GPU is reported but does not fail the variant; other errors do.
    failed = [p for p in result["points"] if "error" in p and not p["error"].startswith("out of memory")]
    result["ok"] = bool(result["correct"] and result["exponent_ok"] is True and result["memory_ok"] is True
                        and not failed)
    return result


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
    variants = list(variants) if variants else list(VARIANTS)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    if device not in ("cuda", "cpu"):
        raise ValueError(f"device must be 'cuda' or 'cpu', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("CUDA is not available here; use device='cpu' for an interpreter correctness check")
    if dtype not in TOLERANCE:
        raise ValueError(f"dtype must be one of {', '.join(TOLERANCE)}, got {dtype!r}")
    say = progress or (lambda message: None)

    saved_env = os.environ.get("TRITON_INTERPRET")
    try:
        mods = _kernel_modules(interpret=device == "cpu")
        if mods is None:
            if device == "cpu":
                return _run_in_interpreter_process(variants, window, plot, say)
            raise RuntimeError("the kernels were imported under TRITON_INTERPRET=1; "
                               "run the GPU validation in a process without it")
        torch_dtype = torch.float32 if device == "cpu" else getattr(torch, dtype)
        if device == "cpu":
            say("running under the Triton interpreter: fp32, tiny shapes, correctness only")
        gpu_window = window if device == "cuda" else min(window, CPU_CHECK["window"])
        sparse_block = SPARSE_BLOCK if device == "cuda" else CPU_CHECK["sparse_block"]
        results = []
        for name in variants:
            variant = _VARIANT_CLASSES[name](name, mods, gpu_window, sparse_block, head_dim)
            lens = sorted(seq_lens) if seq_lens else DEFAULT_SEQ_LENS[name]
            say(f"{name}: starting")
            started = time.perf_counter()
            try:
                res = _validate_variant(variant, device=device, dtype=torch_dtype, batch=batch, heads=heads,
                                        head_dim=head_dim, seq_lens=lens, say=say)
            except Exception as exc:
                res = _failed_result(name, exc)
                say(f"{name}: failed: {res['errors'][0]}")
            res["wall_seconds"] = time.perf_counter() - started
            results.append(res)
    finally:
        if saved_env is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = saved_env

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


def _failed_result(name: str, exc: BaseException) -> dict:
    spec = formula(name)
    return {
        "variant": name, "correct": False, "max_abs_error": None,
        "formula": {"flops": str(spec.flops), "useful_flops": str(spec.useful_flops),
                    "memory_bytes": str(spec.memory_bytes)},
        "points": [], "fitted_exponent": None, "formula_exponent": spec.exponent_in_N("useful_flops"),
        "ok": False, "errors": [f"{type(exc).__name__}: {exc}".splitlines()[0]],
    }


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
# Plot
# ---------------------------------------------------------------------------


def plot_validation(report: dict, path) -> None:
    """One column per variant: time (top) and peak memory (bottom) against N, log-log.

    Measured points are markers; the predicted time is the formula's
    useful FLOPs scaled to the largest measured point (so the slope is the
    formula's), the predicted memory is the formula itself.  Without
    measurements (CPU) the panels show the formulas alone.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["results"]
    cols = max(1, len(results))
    fig, axes = plt.subplots(2, cols, figsize=(4.2 * cols, 7.5), squeeze=False)
    for col, res in enumerate(results):
        ax_t, ax_m = axes[0][col], axes[1][col]
        pts = [p for p in res.get("points", []) if "seconds" in p]
        spec = formula(res["variant"])
        settings = res.get("settings", {})
        status = "ok" if res.get("ok") else ("correct" if res.get("correct") else "FAILED")
        err = res.get("max_abs_error")
        title = f"{res['variant']} ({status})"
        if err is not None:
            title += f"\nmax |err| {err:.2g}"
        ax_t.set_title(title, fontsize=10)
        if pts:
            ns = [p["seq_len"] for p in pts]
            secs = [p["seconds"] for p in pts]
            useful = [p["predicted_useful_flops"] for p in pts]
            scale = secs[-1] / useful[-1]
            ax_t.loglog(ns, [u * scale for u in useful], "-", color="tab:gray",
                        label=f"formula, N^{res['formula_exponent']}")
            fit = res.get("fitted_exponent")
            ax_t.loglog(ns, secs, "o", color="tab:blue",
                        label="measured" + (f", fit N^{fit:.2f}" if fit is not None else ""))
            ax_t.set_ylabel("seconds per call")
            ax_m.loglog(ns, [p["predicted_bytes"] for p in pts], "-", color="tab:gray", label="formula")
            ax_m.loglog(ns, [p["peak_bytes"] for p in pts], "s", color="tab:orange", label="measured peak")
        else:
            ns = [2 ** i for i in range(10, 21)]
            values = _symbol_values(res, settings)
            ax_t.loglog(ns, [spec.evaluate("useful_flops", N=n, **values) for n in ns], "-", color="tab:gray",
                        label=f"formula useful FLOPs, N^{res['formula_exponent']}")
            ax_t.set_ylabel("FLOPs (no timing on this device)")
            ax_m.loglog(ns, [spec.evaluate("memory_bytes", N=n, **values) for n in ns], "-", color="tab:gray",
                        label="formula")
        ax_m.set_ylabel("peak memory")
        _human_axes(ax_t, ax_m, ns, timed=bool(pts))
        for ax in (ax_t, ax_m):
            ax.set_xlabel("sequence length N (tokens)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(f"attncost kernels on {report.get('device', '?')} ({report.get('dtype', '')}): "
                 "measured vs formula", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _human_axes(ax_t, ax_m, ns, timed: bool) -> None:
    """Tick labels a person reads: 4k/64k/1M tokens, ms, MiB/GiB."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    from ..report import human_bytes, human_seconds, human_tokens

    for ax in (ax_t, ax_m):
        ax.xaxis.set_major_locator(FixedLocator(sorted(set(ns))))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: human_tokens(int(round(x)))))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    ax_m.set_yscale("log", base=2)  # ticks at 64 MiB, 128 MiB, ...
    ax_m.yaxis.set_major_formatter(FuncFormatter(lambda y, _: human_bytes(y)))
    ax_m.yaxis.set_minor_formatter(NullFormatter())
    if timed:
        ax_t.yaxis.set_major_formatter(FuncFormatter(lambda y, _: human_seconds(y)))
        ax_t.yaxis.set_minor_formatter(NullFormatter())


def _symbol_values(res: dict, settings: dict) -> dict:
    """Formula symbols for a result without points (shape of the GPU sweep defaults)."""
    d = settings.get("head_dim", 128)
    values = {"B": settings.get("batch", 1), "H": settings.get("heads", 16), "d": d,
              "s": 4 if settings.get("dtype") == "float32" else 2,
              "w": settings.get("window", 512), "r": d}
    block = settings.get("block_size", SPARSE_BLOCK)
    values["k"] = block * (SPARSE_PATTERN["window_blocks"] + SPARSE_PATTERN["random_blocks"] + 2)
    return values


# ---------------------------------------------------------------------------
# Command line (used by benchmarks/gpu_validate.sh)
# ---------------------------------------------------------------------------


def _parse_len(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([kKmM]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"bad sequence length {text!r}")
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 ** 2}[m.group(2).lower()]


def gpu_slug() -> str:
    """A file-name-safe GPU name, e.g. 'h200' for 'NVIDIA H200'."""
    if not torch.cuda.is_available():
        return "cpu"
    name = torch.cuda.get_device_name().lower().replace("nvidia", "")
    return re.sub(r"[^a-z0-9]+", "_", name).strip("_") or "gpu"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attncost.kernels.harness", description=__doc__.split("\n")[0])
    parser.add_argument("--variant", action="append", choices=VARIANTS)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--seq-lens", type=lambda s: [_parse_len(x) for x in s.split(",") if x.strip()])
    parser.add_argument("--dtype", default="bfloat16", choices=tuple(TOLERANCE))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--json", default="-", help="output path ('-' for stdout; {gpu} is replaced)")
    parser.add_argument("--plot", help="figure path ({gpu} is replaced)")
    args = parser.parse_args(argv)

    slug = gpu_slug() if args.device == "cuda" else "cpu"
    json_path = None if args.json == "-" else args.json.replace("{gpu}", slug)
    plot_path = args.plot.replace("{gpu}", slug) if args.plot else None

    def say(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    variants = args.variant or list(VARIANTS)
    common = dict(device=args.device, seq_lens=args.seq_lens, dtype=args.dtype, batch=args.batch,
                  heads=args.heads, head_dim=args.head_dim, window=args.window, progress=say)
    report = None
    # One variant at a time, writing after each, so a timeout keeps what finished.
    for name in variants:
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
            tmp = Path(json_path + ".tmp")
            tmp.write_text(json.dumps(report, indent=2))
            tmp.replace(json_path)
    if plot_path:
        plot_validation(report, plot_path)
        say(f"plot written to {plot_path}")
    if json_path:
        say(f"JSON written to {json_path}")
    else:
        print(json.dumps(report, indent=2))
    return 0 if all(r["ok"] for r in report["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
