"""What does one kernel call cost on a device, and how does that cost grow with N?

* ``seconds``: median time of one call (``triton.testing.do_bench``: CUDA
  events, warm-up first, L2 flushed between calls; autotuning happens in an
  untimed call before);
* ``peak_bytes``: q, k and v plus everything the call allocates, i.e.
  ``torch.cuda.max_memory_allocated()`` during the call minus what was
  allocated before it, plus the bytes of q, k and v;
* ``fit_exponent``: the least-squares slope of log(time) against log(N)
  over the larger points.

``Sweep`` measures one variant over N and puts each point beside what its
formulas predict.  Triton is imported only when a call is timed.
"""
from __future__ import annotations

import gc
import math
from dataclasses import dataclass
from typing import Callable

import torch

from ..patterns.formulas import VariantFormula
from .registry import KernelVariant

PEAK_BYTES_CONVENTION = ("q, k, v plus everything the kernel call allocates "
                         "(max_memory_allocated during the call - allocated before + bytes of q, k, v)")


def random_inputs(batch, heads, kv_heads, n, head_dim, dtype, device, seed=0):
    """Seeded q of shape (batch, heads, n, head_dim) and k, v of shape (batch, kv_heads, n, head_dim)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    q = torch.randn(batch, heads, n, head_dim, generator=gen, device=device, dtype=dtype)
    k = torch.randn(batch, kv_heads, n, head_dim, generator=gen, device=device, dtype=dtype)
    v = torch.randn(batch, kv_heads, n, head_dim, generator=gen, device=device, dtype=dtype)
    return q, k, v


def _synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def median_seconds(fn: Callable[[], object]) -> float:
    """Median seconds of one call: CUDA events, after warm-up, L2 flushed."""
    import triton.testing

    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median") / 1e3


def peak_bytes(fn: Callable[[], object], input_bytes: int) -> int:
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


@dataclass
class Sweep:
    """One variant's measurements over N, at one shape and dtype, on the K/V path its checks used."""

    variant: KernelVariant
    spec: VariantFormula
    device: str
    dtype: torch.dtype
    batch: int
    heads: int
    head_dim: int
    use_tma: bool | None
    timer: Callable
    peak_meter: Callable
    say: Callable[[str], None]

    def point(self, n: int) -> dict:
        """The point at length ``n``.  An error is recorded in it rather than raised, so one
        length that fails (or does not fit the GPU) leaves the other lengths measured."""
        point = {"seq_len": n}
        name = self.variant.name
        try:
            point.update(self._measure(n))
        except torch.cuda.OutOfMemoryError as exc:
            point["error"] = f"out of memory: {exc}".splitlines()[0]
            self.say(f"{name}: N={n}: out of memory")
        except Exception as exc:
            point["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
            self.say(f"{name}: N={n}: {point['error']}")
        finally:
            gc.collect()  # the inputs of this length are gone before the next length allocates
            if self.device == "cuda":
                torch.cuda.empty_cache()
        return point

    def _measure(self, n: int) -> dict:
        """Time and peak memory of one call at length ``n``, beside what the formulas predict."""
        variant, spec = self.variant, self.spec
        q, k, v = random_inputs(self.batch, self.heads, self.heads, n, self.head_dim, self.dtype, self.device)
        extras = variant.prepare(n, self.device)
        elem = torch.empty((), dtype=self.dtype).element_size()
        values = {"B": self.batch, "H": self.heads, "H_kv": self.heads, "d": self.head_dim, "s": elem,
                  **variant.symbols(n, extras), "N": n}
        call = lambda: variant.run(q, k, v, extras, use_tma=self.use_tma)  # noqa: E731
        call()  # autotune and compile outside the timing
        _synchronize(self.device)
        seconds = self.timer(call)
        peak = self.peak_meter(call, q.nbytes + k.nbytes + v.nbytes)
        useful = spec.evaluate("useful_flops", **values)
        predicted_bytes = spec.evaluate("memory_bytes", **values)
        point = {
            "seconds": seconds,
            "peak_bytes": peak,
            "predicted_flops": spec.evaluate("flops", **values),
            "predicted_bytes": predicted_bytes,
            "tflops": useful / seconds / 1e12,
            "predicted_useful_flops": useful,
            "bytes_ratio": peak / predicted_bytes,
        }
        if "k" in values:
            point["keys_per_query"] = float(values["k"])
        self.say(f"{variant.name}: N={n}: {seconds * 1e3:.3f} ms, {point['tflops']:.1f} TFLOP/s, "
                 f"peak {peak / 2**20:.1f} MiB (predicted {predicted_bytes / 2**20:.1f} MiB)")
        return point
