"""How long attention takes at best: the roofline of each site on a GPU.

The larger of a site's FLOPs at the dtype's dense peak and its bytes at the
memory bandwidth.  A lower bound in practice (no kernel reaches peak); the
bytes are what the site allocates, standing in for what it moves.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..gpus import GPU


@dataclass
class SiteTime:
    site: str
    seconds: float
    bound: str  # compute | memory


def roofline(site_flops: float, site_bytes: float, gpu: GPU, dtype) -> float:
    """Seconds at the dtype's dense peak FLOP/s or at the bandwidth, whichever is longer."""
    compute = float(site_flops) / gpu.flops_for(dtype)
    memory = float(site_bytes) / gpu.memory_bandwidth
    return max(compute, memory)


def site_times(analysis, gpu: GPU) -> list[SiteTime]:
    """Roofline estimate of each attention site on ``gpu`` at the requested N."""
    out = []
    for site in analysis.sites:
        flops = analysis.at(site.flops)
        seconds = roofline(flops, analysis.at(site.allocated_bytes), gpu, analysis.dtype)
        compute = flops / gpu.flops_for(analysis.dtype)
        out.append(SiteTime(site.name, seconds, "compute" if compute >= seconds else "memory"))
    return out
