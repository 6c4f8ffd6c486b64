"""Achieved rates for the time model: a calibration's tables where it has
them, the datasheet's peak otherwise (and which pieces fell back is kept)."""
from __future__ import annotations

from ..errors import SpecError
from ..gpus import GPU
from ..units import dtype_name
from .tables import Calibration

#: Seconds eager PyTorch spends launching one op when no calibration says:
#: the Python dispatch plus the CUDA launch, several µs on current CPUs.
DEFAULT_LAUNCH_OVERHEAD = 5e-6


class Rates:
    """Achieved FLOP/s, bandwidth and launch overhead: measured where a
    calibration has the table, the datasheet's peak otherwise (and said so)."""

    def __init__(self, gpu: GPU, dtype: str, calibration: Calibration | None):
        self.gpu, self.dtype, self.calibration = gpu, dtype_name(dtype), calibration
        self.fallbacks: set[str] = set()

    @property
    def kind(self) -> str:
        return "measured" if self.calibration is not None else "datasheet"

    @property
    def launch_overhead(self) -> float:
        c = self.calibration
        if c is None or c.launch_overhead_seconds is None:
            return DEFAULT_LAUNCH_OVERHEAD
        return c.launch_overhead_seconds

    def _measured(self, dtype) -> Calibration | None:
        c = self.calibration
        return c if c is not None and c.dtype == dtype_name(dtype) else None

    def peak(self, dtype) -> float:
        try:
            return self.gpu.flops_for(dtype)
        except SpecError:
            return self.gpu.flops_for(self.dtype)

    def matmul(self, flops: float, dtype) -> float:
        c = self._measured(dtype)
        if c is not None and c.matmul is not None:
            return c.matmul.at(flops)
        self._fell_back(f"matmul in {dtype_name(dtype)}")
        return self.peak(dtype)

    def attention(self, kernel: str, masks: tuple[str, ...], head_dim: int, seq_len: int,
                  dtype) -> float:
        c = self._measured(dtype)
        curve = c.attention_curve(kernel, masks, head_dim) if c is not None else None
        if curve is not None:
            return curve.at(seq_len)
        self._fell_back(f"{kernel} attention ({masks[0]}, d={head_dim}) in {dtype_name(dtype)}")
        return self.peak(dtype)

    def bandwidth(self, nbytes: float) -> float:
        c = self.calibration
        if c is not None and c.bandwidth is not None:
            return c.bandwidth.at(nbytes)
        self._fell_back("bandwidth")
        return self.gpu.memory_bandwidth

    def _fell_back(self, what: str) -> None:
        if self.calibration is not None:
            self.fallbacks.add(what)
