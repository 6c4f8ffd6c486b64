"""How long `attncost --version` and `attncost --help` take, each in a fresh
process (the target is under 0.5 s: the command line imports neither torch
nor sympy until a command needs them).

    python benchmarks/bench_startup.py [--repeat 5]

Prints the best and the median wall time of each command, and of a bare
`python -c pass` for reference.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 0.5


def timed(argv: list[str], repeat: int) -> list[float]:
    """Wall seconds of ``argv`` run ``repeat`` times (after one warm-up run)."""
    subprocess.run(argv, cwd=ROOT, capture_output=True, check=True)
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, capture_output=True, check=True)
        out.append(time.perf_counter() - start)
    return out


def commands() -> dict[str, list[str]]:
    """The commands to time: the installed script when there is one, and `python -m`."""
    out = {"python -c pass": [sys.executable, "-c", "pass"]}
    script = shutil.which("attncost")
    for flag in ("--version", "--help"):
        if script:
            out[f"attncost {flag}"] = [script, flag]
        out[f"python -m attncost {flag}"] = [sys.executable, "-m", "attncost", flag]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    slow = []
    print(f"{'command':<32} {'best':>8} {'median':>8}")
    for name, argv in commands().items():
        times = timed(argv, max(1, args.repeat))
        best, median = min(times), statistics.median(times)
        print(f"{name:<32} {best:>7.3f}s {median:>7.3f}s")
        if name.startswith(("attncost", "python -m")) and median > TARGET_SECONDS:
            slow.append(name)
    if slow:
        print(f"over {TARGET_SECONDS} s: {', '.join(slow)}")
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
