"""Time `attncost analyze` against FlopCounterMode under FakeTensorMode.

Both run as whole processes (imports included), alternating, on the
22-layer TinyLlama-shaped config in examples/tinyllama, at one length.
Prints each run and the median ratio attncost / FlopCounterMode.

    python benchmarks/bench_analyze.py [--repeats 5] [--seq-len 4k]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "tinyllama"

#: FlopCounterMode over one forward on fake tensors: argv = config folder, N, implementation.
FLOPCOUNTER = r"""
import sys, json, torch, transformers
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode
raw = json.load(open(sys.argv[1] + "/config.json"))
config = transformers.AutoConfig.for_model(**raw)
n, impl = int(sys.argv[2]), sys.argv[3]
with FakeTensorMode():
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation=impl,
                                                          dtype=torch.bfloat16).eval()
    ids = torch.zeros(1, n, dtype=torch.long)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(input_ids=ids, use_cache=False)
print(fc.get_total_flops())
"""


def run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def bench(name: str, folder: Path, impl: str, n: str, repeats: int, target: float) -> float:
    """Alternate whole-process runs; print each and the median ratio attncost / FlopCounterMode."""
    n_int = int(n[:-1]) * 1024 if n.endswith("k") else int(n)
    ours = [sys.executable, "-m", "attncost.cli", "analyze", str(folder), "--seq-len", n,
            "--format", "json", "--no-kv-cache", "--attn-implementation", impl]
    theirs = [sys.executable, "-c", FLOPCOUNTER, str(folder), str(n_int), impl]
    t_ours, t_theirs = [], []
    for i in range(repeats):
        t_theirs.append(run(theirs))
        t_ours.append(run(ours))
        print(f"{name} run {i + 1}: attncost {t_ours[-1]:.2f} s, FlopCounterMode "
              f"{t_theirs[-1]:.2f} s, ratio {t_ours[-1] / t_theirs[-1]:.2f}", flush=True)
    ratio = statistics.median(a / b for a, b in zip(t_ours, t_theirs))
    print(f"{name} median: attncost {statistics.median(t_ours):.2f} s, FlopCounterMode "
          f"{statistics.median(t_theirs):.2f} s, ratio {ratio:.2f} (target <= {target:g})",
          flush=True)
    return ratio


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seq-len", default="4096")
    args = ap.parse_args()
    bench("tinyllama", CONFIG, "sdpa", args.seq_len, args.repeats, target=2)


if __name__ == "__main__":
    main()
