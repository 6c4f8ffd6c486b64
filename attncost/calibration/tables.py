"""Achieved rates of one GPU, as `attncost calibrate` measures them: the YAML
file, its lookups and the interpolation between measured points.

A table is a few (size, rate) points: matmul FLOP/s by the FLOPs of one
product, attention FLOP/s by sequence length for each kernel, copy bandwidth
by bytes moved.  Between two points the rate is interpolated linearly in
log(size) and log(rate) (rates grow as a power of the size until the GPU
saturates); outside the measured sizes it is clamped to the nearest point,
never extrapolated.  The layout is documented in docs/design.md.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import yaml

from ..errors import SpecError
from ..units import dtype_name

#: Where calibrations measured on a card ship with attncost.
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "specs" / "calibration"

#: The kernels and masks an attention table is named by: ``flash_causal_d128``.
ATTENTION_KERNELS = ("flash", "efficient", "math", "flex")
ATTENTION_MASKS = ("full", "causal", "window")
_ATTENTION_KEY = re.compile(r"(flash|efficient|math|flex)_(full|causal|window)_d(\d+)")


def attention_key(kernel: str, mask: str, head_dim: int) -> str:
    """The name of one attention table: ``flash_causal_d128``."""
    return f"{kernel}_{mask}_d{head_dim}"


def interpolate(points: Iterable[tuple[float, float]], x: float) -> float:
    """The rate at size ``x``: linear in log-log between the two measured
    sizes around it, the nearest measured rate outside them."""
    pts = sorted((float(s), float(r)) for s, r in points)
    if not pts:
        raise ValueError("no points to interpolate")
    if x <= pts[0][0]:
        return pts[0][1]
    if x >= pts[-1][0]:
        return pts[-1][1]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            if x1 == x0:
                return y1
            t = (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return math.exp(math.log(y0) + t * (math.log(y1) - math.log(y0)))
    return pts[-1][1]  # pragma: no cover - the loop covers every x inside


@dataclass(frozen=True)
class Curve:
    """Measured (size, rate) points of one table."""

    points: tuple[tuple[float, float], ...]

    def at(self, size: float) -> float:
        return interpolate(self.points, size)

    @property
    def best(self) -> float:
        """The highest rate measured: what large work reaches."""
        return max(rate for _, rate in self.points)


@dataclass
class Calibration:
    """One GPU's measured rates in one dtype (a file `attncost calibrate` wrote)."""

    gpu: str
    dtype: str
    launch_overhead_seconds: float
    matmul: Curve | None = None
    bandwidth: Curve | None = None
    attention: dict[str, Curve] = field(default_factory=dict)
    torch_version: str = ""
    date: str = ""
    source: str = ""

    def attention_curve(self, kernel: str, masks: Iterable[str], head_dim: int) -> Curve | None:
        """The table of ``kernel`` for the first of ``masks`` measured, at the
        measured head dim nearest ``head_dim`` (in ratio); None if none."""
        for mask in masks:
            dims = [int(m.group(3)) for key in self.attention
                    if (m := _ATTENTION_KEY.fullmatch(key)) and m.group(1) == kernel
                    and m.group(2) == mask]
            if dims:
                best = min(dims, key=lambda d: (abs(math.log(d / max(head_dim, 1))), d))
                return self.attention[attention_key(kernel, mask, best)]
        return None


# ------------------------------------------------------------------ reading


def _curve(rows, size_key: str, rate_key: str, where: str) -> Curve | None:
    """A table from a list of {size_key, rate_key} rows (None when empty)."""
    if rows is None:
        return None
    if not isinstance(rows, list):
        raise SpecError(f"{where}: expected a list of {{{size_key}, {rate_key}}} rows")
    points = []
    for i, row in enumerate(rows):
        try:
            size, rate = float(row[size_key]), float(row[rate_key])
        except (TypeError, KeyError, ValueError):
            raise SpecError(f"{where}[{i}]: needs numbers {size_key} and {rate_key}") from None
        if size <= 0 or rate <= 0:
            raise SpecError(f"{where}[{i}]: {size_key} and {rate_key} must be positive")
        points.append((size, rate))
    return Curve(tuple(sorted(points))) if points else None


#: A product with a side shorter than this is bound by its bytes (the weight
#: read for a few rows), which the bandwidth table times: such rows stay in
#: the file as measurements but not in the FLOP/s curve.
MIN_COMPUTE_SIDE = 128


def _compute_bound(rows):
    """The matmul rows whose every side is at least MIN_COMPUTE_SIDE (rows
    without a shape are kept)."""
    if not isinstance(rows, list):
        return rows
    return [r for r in rows if not isinstance(r, dict)
            or min(r.get(k, MIN_COMPUTE_SIDE) for k in "mnk") >= MIN_COMPUTE_SIDE]


def calibration_from(data, source: str) -> Calibration:
    """A Calibration from the mapping a calibration YAML holds."""
    if not isinstance(data, dict) or "gpu" not in data:
        raise SpecError(f"{source}: not a calibration file (`attncost calibrate` writes one: "
                        "gpu, dtype, launch_overhead_seconds, matmul, attention, bandwidth)")
    try:
        overhead = float(data.get("launch_overhead_seconds"))
    except (TypeError, ValueError):
        raise SpecError(f"{source}: launch_overhead_seconds must be a number of seconds") from None
    attention = {}
    for key, rows in (data.get("attention") or {}).items():
        if not _ATTENTION_KEY.fullmatch(str(key)):
            raise SpecError(f"{source}: attention table {key!r} is not named "
                            "KERNEL_MASK_dHEADDIM (e.g. flash_causal_d128)")
        curve = _curve(rows, "seq_len", "flops_per_second", f"{source}: attention.{key}")
        if curve is not None:
            attention[str(key)] = curve
    return Calibration(
        gpu=str(data["gpu"]), dtype=dtype_name(data.get("dtype", "bfloat16")),
        launch_overhead_seconds=overhead,
        matmul=_curve(_compute_bound(data.get("matmul")), "flops", "flops_per_second",
                      f"{source}: matmul"),
        bandwidth=_curve(data.get("bandwidth"), "bytes", "bytes_per_second",
                         f"{source}: bandwidth"),
        attention=attention, torch_version=str(data.get("torch", "")),
        date=str(data.get("date", "")), source=source)


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration YAML (bad input: one clear line, exit status 2)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the calibration file "
                        f"({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise SpecError(f"{path}: malformed YAML{where}") from None
    return calibration_from(data, str(path))


def names_card(name: str, gpu) -> bool:
    """Does ``name`` (nvidia-smi's, a spec's or an alias) name the card ``gpu``?"""
    from ..gpus import get_gpu

    try:
        return get_gpu(name).name == gpu.name
    except SpecError:
        return False


def bundled_calibration(gpu, dtype, folder: str | Path | None = None) -> Calibration | None:
    """The calibration shipped for ``gpu`` (a gpus.GPU): a file in ``folder``
    (default BUNDLED_DIR) whose ``gpu`` (or file name) names that card, in
    ``dtype`` if one is, else any."""
    files = sorted(Path(BUNDLED_DIR if folder is None else folder).glob("*.yaml"))
    found = [c for c in map(load_calibration, files)
             if names_card(c.gpu, gpu) or names_card(Path(c.source).stem, gpu)]
    for calibration in found:
        if calibration.dtype == dtype_name(dtype):
            return calibration
    return found[0] if found else None


def calibration_yaml(data: dict) -> str:
    """The text of a calibration file: the header fields first, then the tables."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)
