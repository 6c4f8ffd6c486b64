"""Time `attncost analyze` on models that loop over the sequence: a Mamba
config (transformers' slow path loops over the tokens without its CUDA
kernels) and a Jamba-style hybrid (attention + Mamba layers).

A ratio against FlopCounterMode would mean running the Python loop N times
under FakeTensorMode (minutes at 32k), so the target is absolute: each
analysis, as a whole process (imports included), under 30 s at N = 32k.

    python benchmarks/bench_recurrent.py [--repeats 3] [--seq-len 32k]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 30
SHAPES = {
    "mamba": dict(model_type="mamba", architectures=["MambaForCausalLM"], num_hidden_layers=2,
                  hidden_size=64, state_size=8, vocab_size=256),
    "jamba-hybrid": dict(model_type="jamba", architectures=["JambaForCausalLM"],
                         num_hidden_layers=4, hidden_size=64, intermediate_size=128,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=256,
                         mamba_d_state=8, num_experts=2, num_experts_per_tok=1,
                         attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2,
                         expert_layer_offset=1, use_mamba_kernels=False),
}


def run(folder: Path, seq_len: str) -> float:
    cmd = [sys.executable, "-m", "attncost.cli", "analyze", str(folder), "--seq-len", seq_len,
           "--attn-implementation", "eager", "--format", "json"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seq-len", default="32k")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name, fields in SHAPES.items():
            folder = Path(tmp) / name
            folder.mkdir()
            (folder / "config.json").write_text(json.dumps(fields))
            times = [run(folder, args.seq_len) for _ in range(args.repeats)]
            print(f"{name} at N={args.seq_len}: " + ", ".join(f"{t:.1f} s" for t in times)
                  + f"; median {statistics.median(times):.1f} s (target <= {TARGET_S} s)",
                  flush=True)


if __name__ == "__main__":
    main()
