"""Measure what the CUDA context takes on this card, for specs/gpus.yaml.

Run on the GPU (nothing else running on it):

    python benchmarks/measure_cuda_context.py

It prints the YAML lines to add under the card's entry: ``cuda_context`` is
total minus free device memory right after CUDA initialises and cuBLAS has
run once (the state `fits` assumes: a model is about to be loaded), less
what PyTorch's allocator itself reserved by then.
"""
from __future__ import annotations

import datetime
import json

import torch


def measure() -> dict:
    torch.cuda.init()
    a = torch.ones(64, 64, device="cuda")
    (a @ a).sum().item()  # cuBLAS handle and workspace, as a model's first matmul makes them
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    reserved = torch.cuda.memory_reserved()
    props = torch.cuda.get_device_properties(0)
    return {"card": props.name, "total_bytes": total, "free_bytes": free,
            "allocator_reserved_bytes": reserved,
            "cuda_context_bytes": total - free - reserved,
            "driver": torch.cuda.driver_version() if hasattr(torch.cuda, "driver_version") else None,
            "cuda": torch.version.cuda, "torch": torch.__version__,
            "date": datetime.date.today().isoformat()}


def main() -> None:
    m = measure()
    print(json.dumps(m, indent=2))
    mib = m["cuda_context_bytes"] / 2**20
    print(f"\n    cuda_context: {mib:.0f}MiB\n    cuda_context_source: measured on {m['card']}, "
          f"CUDA {m['cuda']}, torch {m['torch']}, {m['date']} (benchmarks/measure_cuda_context.py)")


if __name__ == "__main__":
    main()
