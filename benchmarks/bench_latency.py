"""Predicted against measured latency, from the measurements committed under
docs/validation/ (latency_<gpu>.json, written by benchmarks/measure_latency.py).

For every measured forward and decode, `attncost analyze --gpu` on the same
config, implementation and N (bf16, B=1; forward without a KV cache): its
prefill_seconds or decode_seconds_per_token, the measurement, and their
ratio.  The time model uses the card's calibration when one is shipped in
attncost/specs/calibration/, its datasheet otherwise (the table says which).

    python benchmarks/bench_latency.py [FILE.json ...]
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from attncost.analysis import analyze  # noqa: E402
from attncost.errors import AttncostError  # noqa: E402
from attncost.questions.latency import time_model  # noqa: E402
from attncost.units import human_seconds  # noqa: E402

HOW_TO = """no latency measurements are committed under docs/validation/ (latency_<gpu>.json).
To make them, on a machine with the CUDA GPU:
    python benchmarks/measure_latency.py                 # -> docs/validation/latency_<gpu>.json
    attncost calibrate --out attncost/specs/calibration/<gpu>.yaml
then commit both and run this script again."""


def _predict(config: dict, impl: str, n: int, gpu: str, kv_cache: bool, folder: Path,
             traces: dict):
    """The time model at n, from a trace of the same case when its range holds n."""
    path = folder / f"{config.get('model_type', 'model')}_{impl}"
    path.mkdir(exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    key = (str(path), kv_cache)
    analysis = traces.get(key)
    lo, hi = analysis.n_range if analysis is not None else (0, 0)
    if analysis is None or n < lo or (hi is not None and n > hi):
        analysis = analyze(path, n, dtype="bfloat16", attn_implementation=impl,
                           kv_cache=kv_cache)
        traces[key] = analysis
    return time_model(analysis, gpu, seq_len=n)


def _rows(data: dict, folder: Path) -> list[list[str]]:
    rows, traces = [], {}
    cases = [("forward", r, r["seq_len"], False) for r in data["forward"]] + \
            [("decode", r, r["context"], True) for r in data["decode"]]
    for kind, row, n, kv_cache in cases:
        config = data["configs"][row["model"]]
        try:
            t = _predict(config, row["attn_implementation"], n, data["gpu"], kv_cache, folder,
                         traces)
        except AttncostError as exc:
            rows.append([row["model"], row["attn_implementation"], kind, str(n), "-",
                         row.get("error", "-"), f"not predicted: {exc}"])
            continue
        predicted = t.prefill_seconds if kind == "forward" else t.decode_seconds_per_token
        measured = row.get("seconds")
        ratio = f"{predicted / measured:.2f}" if measured else "-"
        rows.append([row["model"], row["attn_implementation"], kind, str(n),
                     human_seconds(predicted),
                     human_seconds(measured) if measured else row.get("error", "-"),
                     f"{ratio} ({t.calibration})"])
    return rows


def report(path: Path) -> None:
    data = json.loads(path.read_text())
    print(f"{path.name}: {data['gpu']}, torch {data['torch']}, {data['date']}")
    header = ["model", "attention", "what", "N", "predicted", "measured", "predicted/measured"]
    with tempfile.TemporaryDirectory() as folder:
        rows = _rows(data, Path(folder))
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    for r in [header] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


def main(argv: list[str]) -> None:
    files = [Path(a) for a in argv] or sorted((ROOT / "docs" / "validation").glob("latency_*.json"))
    if not files:
        print(HOW_TO)
        return
    for path in files:
        report(path)


if __name__ == "__main__":
    main(sys.argv[1:])
