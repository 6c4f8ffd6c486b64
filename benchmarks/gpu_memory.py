"""Predicted vs measured peak memory on a CUDA GPU, and the largest N that fits.

For a Llama-shaped transformers config in bf16, under eager and sdpa, with
and without the KV cache: attncost's `peak_memory_bytes` (one trace per case,
evaluated at each length) against `torch.cuda.max_memory_allocated()` after
one forward with the weights and inputs already on the GPU; then the largest
N that runs under `torch.cuda.set_per_process_memory_fraction`, found by
bisection, against attncost's `max_seq_len` for the same budget.

    python benchmarks/gpu_memory.py OUT.json [--seconds 200]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import attncost  # noqa: E402
from attncost.memory.reserved import reserved_peak  # noqa: E402
from attncost.questions.fits import check_fits, max_seq_len  # noqa: E402

CONFIG = dict(model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=2048,
              intermediate_size=5632, num_attention_heads=16, num_key_value_heads=4,
              num_hidden_layers=4, vocab_size=32000, max_position_embeddings=1 << 20,
              rope_theta=10000.0, tie_word_embeddings=False)
LENGTHS = {"eager": (1024, 4096, 8192), "sdpa": (4096, 16384, 65536)}
BUDGET = 12 << 30  # bytes the bisection may use
IMPLEMENTATIONS = ("sdpa", "eager")


def build(folder: Path, impl: str):
    import transformers

    config = transformers.AutoConfig.for_model(**json.loads((folder / "config.json").read_text()))
    with torch.device("cuda"):
        model = transformers.AutoModelForCausalLM.from_config(
            config, attn_implementation=impl, dtype=torch.bfloat16)
    return model.eval()


def measure(model, n: int, use_cache: bool) -> int:
    """max_memory_allocated of one forward, weights and inputs already there."""
    ids = torch.zeros(1, n, dtype=torch.long, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=use_cache)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del out, ids
    torch.cuda.empty_cache()
    return peak


def runs(model, n: int, use_cache: bool, budget: int | None = None) -> bool:
    """Does N run (under the allocator cap), or, with ``budget``, does its
    max_memory_allocated stay within it?"""
    try:
        peak = measure(model, n, use_cache)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return False
    return budget is None or peak <= budget


def largest_n(model, use_cache: bool, guess: int, deadline: float,
              budget: int | None = None) -> tuple[int | None, int]:
    """Bisection for the largest N that runs, to 0.5%."""
    lo, hi = None, None
    n = guess
    tries = 0
    while time.time() < deadline and tries < 24:
        tries += 1
        if runs(model, n, use_cache, budget):
            lo = n
        else:
            hi = n
        if lo is None:
            n = max(1, int(n * 0.9))
        elif hi is None:
            n = int(n * 1.1) + 1
        else:
            if hi - lo <= max(1, lo // 200):
                break
            n = (lo + hi) // 2
    return lo, tries


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seconds", type=float, default=200.0)
    ap.add_argument("--impl", action="append", default=None)
    ap.add_argument("--caps", default="12",
                    help="GiB the allocator may reserve, comma-separated (e.g. 8,12,24,80): "
                         "the largest N that runs under each, bisected, beside `fits`")
    args = ap.parse_args()
    global IMPLEMENTATIONS
    IMPLEMENTATIONS = tuple(args.impl or IMPLEMENTATIONS)
    start = time.time()
    device = torch.cuda.get_device_name()
    total = torch.cuda.get_device_properties(0).total_memory
    report = {"device": device, "torch": torch.__version__, "config": CONFIG, "budget_bytes": BUDGET,
              "cases": []}
    tmp = Path(tempfile.mkdtemp())
    folder = tmp / "llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(CONFIG))

    def save():
        Path(args.out).write_text(json.dumps(report, indent=2))

    for impl in IMPLEMENTATIONS:
        for use_cache in (False, True):
            case = {"attn_implementation": impl, "kv_cache": use_cache, "points": []}
            report["cases"].append(case)
            lengths = LENGTHS[impl]
            t0 = time.time()
            analysis = attncost.analyze(folder, seq_len=lengths[-1], attn_implementation=impl,
                                        kv_cache=use_cache, device="cuda")
            case["analyze_seconds"] = round(time.time() - t0, 2)
            case["peak_expr"] = str(analysis.peak_memory_bytes)
            torch.cuda.set_per_process_memory_fraction(1.0)
            model = build(folder, impl)
            for n in lengths:
                predicted = analysis.at(analysis.peak_memory_bytes, n, 1)
                measured = measure(model, n, use_cache)
                reserved = torch.cuda.max_memory_reserved()  # the peak survives empty_cache
                case["points"].append({"seq_len": n, "predicted_bytes": predicted,
                                       "measured_bytes": measured,
                                       "error": (predicted - measured) / measured,
                                       "predicted_reserved_bytes": reserved_peak(
                                           analysis.memory, n, 1),
                                       "measured_reserved_bytes": reserved})
                print(f"{impl} kv={use_cache} N={n}: predicted {predicted / 2**30:.3f} GiB, "
                      f"measured {measured / 2**30:.3f} GiB, error "
                      f"{case['points'][-1]['error']:+.2%}", flush=True)
            save()
            # The largest N under a budget: cap the allocator, bisect, compare.
            predicted_max = max_seq_len(analysis.memory, 1, BUDGET, lo=analysis.n_range[0])
            deadline = start + args.seconds
            if predicted_max and time.time() < deadline:
                # By the definition of peak_memory_bytes (docs/design.md): max_memory_allocated within the budget.
                by_allocated, tries_a = largest_n(model, use_cache, predicted_max, deadline, BUDGET)
                case["max_seq_len_allocated"] = {
                    "predicted": predicted_max, "measured": by_allocated, "tries": tries_a,
                    "error": (predicted_max - by_allocated) / by_allocated if by_allocated else None}
                print(f"{impl} kv={use_cache}: largest N with max_memory_allocated <= "
                      f"{BUDGET / 2**30:.0f} GiB: predicted {predicted_max:,}, measured {by_allocated}",
                      flush=True)
            case["caps"] = []
            for cap in [int(float(c) * 2**30) for c in args.caps.split(",")]:
                if time.time() >= deadline or cap > total:
                    continue
                # `fits --memory CAP`: the allocator modelled (attncost/memory/allocator.py)
                fit = check_fits(analysis.memory, lengths[-1], 1, cap, n_range=analysis.n_range,
                                 allocator=True)
                torch.cuda.empty_cache()
                torch.cuda.set_per_process_memory_fraction(cap / total)
                guess = fit.max_seq_len or predicted_max or lengths[0]
                found, tries = largest_n(model, use_cache, guess, deadline)
                torch.cuda.set_per_process_memory_fraction(1.0)
                point = {"cap_bytes": cap, "predicted": fit.max_seq_len,
                         "predicted_live_bytes": max_seq_len(analysis.memory, 1, cap,
                                                             lo=analysis.n_range[0]),
                         "measured": found, "tries": tries,
                         "error": (fit.max_seq_len - found) / found if found and fit.max_seq_len
                         else None}
                case["caps"].append(point)
                if cap == BUDGET:
                    case["max_seq_len"] = dict(point, predicted=predicted_max)
                print(f"{impl} kv={use_cache}: largest N under {cap / 2**30:.0f} GiB: predicted "
                      f"{fit.max_seq_len}, measured {found}", flush=True)
            del model
            torch.cuda.empty_cache()
            save()
    report["seconds"] = round(time.time() - start, 1)
    save()


if __name__ == "__main__":
    main()
