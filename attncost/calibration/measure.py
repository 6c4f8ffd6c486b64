"""`attncost calibrate`: measure one CUDA GPU's achieved rates and write them
as a calibration file (docs/design.md gives its layout).

Measured, in one dtype, in under three minutes: matrix products of square
and skinny shapes (FLOP/s by the FLOPs of one product), SDPA's flash,
memory-efficient and math kernels causal and not at several N with head dims
64 and 128, FlexAttention with a causal and a sliding-window block mask when
torch has it (FLOP/s by N), copies of several sizes (bandwidth by bytes moved:
read plus write), and the cost of one eager launch (a stream of tiny ops).

Kernels that skip masked blocks (flash, memory-efficient and FlexAttention
given the mask) are timed against the FLOPs of the pairs the mask lets
through; math SDPA computes every score and is timed against all of them.

The tables are built by ``build_tables(cases, measure, prepare)``: the timer
``measure(op) -> seconds`` and the builder of each op are arguments, so the
table arithmetic is checked without a GPU.
"""
from __future__ import annotations

import datetime
import re
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

from ..errors import AttncostError, first_line
from ..units import dtype_name
from .tables import attention_key, calibration_yaml

#: Ops in the stream whose time per op is the launch overhead.
LAUNCH_STREAM = 200
#: Stop measuring after this long and say what was left out.
TIME_BUDGET_SECONDS = 160.0
#: The model width the attention cases keep (heads = width / head dim).
ATTENTION_WIDTH = 2048


@dataclass(frozen=True)
class Case:
    """One measurement: the table it fills and the work it does."""

    table: str  # "matmul", "bandwidth", "launch" or an attention table's name
    flops: float = 0.0
    bytes: float = 0.0
    #: what the row records besides the rate (m, n, k; seq_len, heads, window)
    shape: dict = field(default_factory=dict)
    #: ops one call launches (the launch stream)
    ops: int = 1


class Op:
    """A case ready to run: calling it launches the work once."""

    def __init__(self, case: Case, fn: Callable[[], object]):
        self.case, self._fn = case, fn

    @property
    def flops(self) -> float:
        return self.case.flops

    @property
    def bytes(self) -> float:
        return self.case.bytes

    def __call__(self):
        return self._fn()


# ------------------------------------------------------------------ cases


def attention_pairs(n: int, mask: str, window: int | None = None) -> int:
    """(query, key) pairs a mask lets through at length n: all, the causal
    triangle with its diagonal, or a causal window of ``window`` keys."""
    if mask == "full":
        return n * n
    if mask == "causal":
        return n * (n + 1) // 2
    w = min(int(window), n)
    return n * w - w * (w - 1) // 2


def matmul_cases(quick: bool) -> list[Case]:
    """Square products, and skinny ones (few rows against a 4096×4096 weight)."""
    square = (512, 2048, 8192) if quick else (256, 512, 1024, 2048, 4096, 8192)
    skinny = (1, 128) if quick else (1, 16, 128, 512)
    shapes = [(s, s, s) for s in square] + [(m, 4096, 4096) for m in skinny]
    return [Case("matmul", flops=2.0 * m * n * k, shape={"m": m, "n": n, "k": k})
            for m, n, k in shapes]


def attention_cases(quick: bool) -> list[Case]:
    """SDPA kernels at several N (head dims 64 and 128, causal and not), then
    FlexAttention with a causal and a sliding-window block mask."""
    lengths = (1024, 4096, 16384) if quick else (512, 1024, 2048, 4096, 8192, 16384)
    cases = []
    for kernel in ("flash", "efficient", "math"):
        for mask in ("causal", "full"):
            for head_dim in (64, 128):
                for n in lengths:
                    if kernel == "math" and n > 4096:
                        continue  # N×N scores: slow, and no different per FLOP
                    cases.append(_attention_case(kernel, mask, head_dim, n))
    for mask in ("causal", "window"):
        for n in ((4096,) if quick else (4096, 16384)):
            cases.append(_attention_case("flex", mask, 128, n, window=1024))
    return cases


def _attention_case(kernel: str, mask: str, head_dim: int, n: int,
                    window: int | None = None) -> Case:
    heads = ATTENTION_WIDTH // head_dim
    skips = kernel != "math"
    pairs = attention_pairs(n, mask if skips else "full", window)
    shape = {"seq_len": n, "heads": heads, "batch": 1}
    if mask == "window":
        shape["window"] = window
    return Case(attention_key(kernel, mask, head_dim), flops=4.0 * heads * head_dim * pairs,
                shape=shape)


def copy_cases(quick: bool) -> list[Case]:
    """Copies of 1 MiB to 1 GiB; a copy moves its size twice (read, write)."""
    sizes = (1 << 20, 1 << 24, 1 << 28, 1 << 30) if quick else \
        (1 << 20, 1 << 22, 1 << 24, 1 << 26, 1 << 28, 1 << 30)
    return [Case("bandwidth", bytes=2.0 * s, shape={"size": s}) for s in sizes]


def all_cases(quick: bool = False) -> list[Case]:
    return [Case("launch", ops=LAUNCH_STREAM)] + matmul_cases(quick) + copy_cases(quick) \
        + attention_cases(quick)


# ------------------------------------------------------------------ tables


def _row(case: Case, seconds: float) -> tuple[str, dict]:
    """The table a measurement goes to and its row."""
    if case.table == "matmul":
        return "matmul", {**case.shape, "flops": int(case.flops),
                          "flops_per_second": case.flops / seconds}
    if case.table == "bandwidth":
        return "bandwidth", {"bytes": int(case.bytes), "bytes_per_second": case.bytes / seconds}
    return case.table, {**case.shape, "flops_per_second": case.flops / seconds}


def build_tables(cases: list[Case], measure: Callable[[Op], float],
                 prepare: Callable[[Case], Callable[[], object]],
                 deadline: float | None = None,
                 progress: Callable[[str], None] | None = None) -> dict:
    """Time each case and fill the tables of a calibration file.  A case the
    GPU or torch cannot run is left out with a note; so are the cases left
    when ``deadline`` (time.monotonic()) passes."""
    tables: dict = {"launch_overhead_seconds": None, "matmul": [], "attention": {},
                    "bandwidth": [], "notes": []}
    for i, case in enumerate(cases):
        if deadline is not None and time.monotonic() > deadline:
            tables["notes"].append(f"time budget reached: {len(cases) - i} measurements left out")
            break
        if progress is not None:
            progress(f"measuring {case.table} {_label(case)} ({i + 1}/{len(cases)})")
        try:
            seconds = measure(Op(case, prepare(case)))
        except (RuntimeError, NotImplementedError, ValueError, ImportError) as exc:
            tables["notes"].append(f"{case.table} {_label(case)}: not measured ({first_line(exc)})")
            continue
        if case.table == "launch":
            tables["launch_overhead_seconds"] = seconds / case.ops
            continue
        table, row = _row(case, seconds)
        if table in ("matmul", "bandwidth"):
            tables[table].append(row)
        else:
            tables["attention"].setdefault(table, []).append(row)
    return tables


def _label(case: Case) -> str:
    return " ".join(f"{k}={v}" for k, v in case.shape.items()) or f"{case.ops} ops"


# ------------------------------------------------------------------ CUDA


def cuda_timer(repeats: int = 7, warmup: int = 2, flush_bytes: int = 256 << 20):
    """``measure(op) -> seconds``: the median of ``repeats`` calls timed with
    CUDA events after ``warmup`` calls, the L2 cache flushed and the GPU idle
    before each (so a stream of tiny ops is timed by its launches)."""
    import torch

    flush = torch.empty(flush_bytes, dtype=torch.uint8, device="cuda")

    def measure(op: Op) -> float:
        for _ in range(warmup):
            op()
        times = []
        for _ in range(repeats):
            flush.zero_()
            torch.cuda.synchronize()
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            op()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        return statistics.median(times)

    return measure


def run_calibration(dtype: str = "bfloat16", quick: bool = False,
                    measure: Callable[[Op], float] | None = None,
                    progress: Callable[[str], None] | None = None) -> dict:
    """Measure this machine's CUDA GPU: the calibration file's contents."""
    import torch

    if not torch.cuda.is_available():
        raise AttncostError("calibrate measures a CUDA GPU and none is available here; run it "
                            "on the machine whose GPU you want calibrated")
    from .cuda_ops import prepare

    torch_dtype = getattr(torch, dtype_name(dtype))
    deadline = time.monotonic() + TIME_BUDGET_SECONDS
    tables = build_tables(all_cases(quick), measure or cuda_timer(),
                          lambda case: prepare(case, torch_dtype), deadline, progress)
    header = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
              "date": datetime.date.today().isoformat(), "dtype": dtype_name(dtype)}
    return {**header, **tables}


def default_out(data: dict) -> str:
    """calibration_h100_80gb_hbm3_bfloat16.yaml for an H100 in bf16."""
    card = re.sub(r"[^a-z0-9]+", "_", data["gpu"].lower().replace("nvidia", "")).strip("_")
    return f"calibration_{card or 'gpu'}_{data['dtype']}.yaml"


def write_calibration(data: dict, path) -> None:
    """Write the calibration YAML (an unwritable path: exit status 2)."""
    from pathlib import Path

    try:
        Path(path).write_text(calibration_yaml(data), encoding="utf-8")
    except OSError as exc:
        raise AttncostError(f"{path}: cannot write the calibration ({exc.strerror or exc})") \
            from None
