"""Record what PyTorch's CUDA caching allocator does over one forward of a
small model, for tests/test_allocator.py to replay (run it on a GPU).

    python benchmarks/record_allocator_trace.py MODEL.py OUT.json
        [--seq-len N] [--batch B] [--expandable-segments]

e.g. ``tests/models/mha_causal.py tests/data/allocator/mha_causal_2048.json
--seq-len 2048 --batch 2``.

The model file follows tests/models/: ``build_model()`` and
``example_inputs(n, batch)``.  History is recorded from before the first
CUDA allocation, so the trace holds every request of the process (weights,
inputs, the cuBLAS workspace, the forward); the JSON keeps what the replay
needs: each trace entry's action, address, size and stream, the allocator
settings, and the process's ``max_memory_reserved`` and
``max_memory_allocated``.  It also prints attncost's prediction.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
KEPT = ("action", "addr", "size", "stream")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--expandable-segments", action="store_true")
    args = ap.parse_args()
    if args.expandable_segments:  # read when the allocator starts: before importing torch
        os.environ["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"
    import torch
    from attncost.loader.files import import_file

    torch.cuda.memory._record_memory_history(enabled="all", context=None, stacks="python",
                                             max_entries=1 << 22)
    module = import_file(args.model)
    model = module.build_model().eval().to("cuda")
    inputs = [x.to("cuda") if isinstance(x, torch.Tensor) else x
              for x in module.example_inputs(args.seq_len, args.batch)]
    with torch.no_grad():
        model(*inputs)
    torch.cuda.synchronize()
    snapshot = torch.cuda.memory._snapshot()
    torch.cuda.memory._record_memory_history(enabled=None)
    trace = snapshot["device_traces"][torch.cuda.current_device()]
    if len(trace) >= 1 << 22:
        sys.exit("the trace filled its ring buffer: record a smaller run")
    streams = {entry.get("stream") for entry in trace}
    if len(streams) > 1:
        print(f"note: {len(streams)} streams; the replay models one", file=sys.stderr)
    record = {
        "torch": torch.__version__, "device": torch.cuda.get_device_name(),
        "model": args.model.name, "seq_len": args.seq_len, "batch": args.batch,
        "expandable_segments": args.expandable_segments, "max_split_size": None,
        "max_memory_reserved": torch.cuda.max_memory_reserved(),
        "max_memory_allocated": torch.cuda.max_memory_allocated(),
        "device_traces": [[{k: entry[k] for k in KEPT if k in entry} for entry in trace]],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record))
    print(f"{len(trace)} trace entries -> {args.out}")
    report(args, record)


def report(args, record: dict) -> None:
    """Measured against attncost's simulation of the same forward."""
    import attncost
    from attncost.memory.reserved import simulate, events_at

    analysis = attncost.analyze(args.model, seq_len=args.seq_len, batch=args.batch,
                                device="cuda")
    run = simulate(events_at(analysis.memory, args.seq_len, args.batch),
                   expandable_segments=args.expandable_segments)
    for name, measured, predicted in (
            ("max_memory_reserved", record["max_memory_reserved"], run.reserved_peak_bytes),
            ("max_memory_allocated", record["max_memory_allocated"],
             run.allocated_peak_bytes)):
        print(f"{name}: measured {measured:,}, attncost {predicted:,} "
              f"({(predicted - measured) / measured:+.2%})")


if __name__ == "__main__":
    main()
