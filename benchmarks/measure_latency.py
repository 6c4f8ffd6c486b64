"""Measure forward and decode latency on a CUDA GPU, for `bench_latency.py`
to put beside what `attncost analyze --gpu` predicts.

Llama-, GPT-2- and Mistral-shaped transformers configs (built from the
configs below, random weights), bf16, B=1:

* forward: one forward without a KV cache (use_cache=False, logits for every
  position, as attncost traces it) at N = 1k .. 64k, eager and sdpa;
* decode: seconds per token at a context of 4k and 32k, sdpa: a prompt of N
  tokens fills the cache, then single tokens are fed one at a time.

Each time is the median of a few runs after a warm-up (CUDA synchronised
around each).  A length that runs out of memory is recorded as such.
Writes docs/validation/latency_<gpu>.json; on the same card, also run
`attncost calibrate --out attncost/specs/calibration/<gpu>.yaml`.

    python benchmarks/measure_latency.py [--out FILE] [--seconds 540]
"""
from __future__ import annotations

import argparse
import datetime
import json
import re
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
COMMON = dict(max_position_embeddings=1 << 17, tie_word_embeddings=False, use_cache=True)
CONFIGS = {
    "llama": dict(model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=2048,
                  intermediate_size=5632, num_attention_heads=32, num_key_value_heads=8,
                  num_hidden_layers=8, vocab_size=32000, rope_theta=10000.0, **COMMON),
    "gpt2": dict(model_type="gpt2", architectures=["GPT2LMHeadModel"], n_embd=1024, n_head=16,
                 n_layer=8, n_positions=1 << 17, vocab_size=50257, use_cache=True),
    "mistral": dict(model_type="mistral", architectures=["MistralForCausalLM"], hidden_size=2048,
                    intermediate_size=7168, num_attention_heads=32, num_key_value_heads=8,
                    num_hidden_layers=8, vocab_size=32000, sliding_window=4096,
                    rope_theta=10000.0, **COMMON),
}
FORWARD_LENGTHS = (1024, 2048, 4096, 8192, 16384, 32768, 65536)
DECODE_CONTEXTS = (4096, 32768)
DECODE_TOKENS = 32


def gpu_slug() -> str:
    name = torch.cuda.get_device_name().lower().replace("nvidia", "")
    return re.sub(r"[^a-z0-9]+", "_", name).strip("_") or "gpu"


def build(name: str, impl: str):
    import transformers

    config = transformers.AutoConfig.for_model(**CONFIGS[name])
    with torch.device("cuda"):
        model = transformers.AutoModelForCausalLM.from_config(
            config, attn_implementation=impl, dtype=torch.bfloat16)
    return model.eval()


def median_seconds(fn, repeats: int = 3) -> float:
    """Median wall time of ``fn`` after one warm-up, the GPU synchronised around each."""
    fn()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def forward_seconds(model, n: int) -> float:
    ids = torch.zeros(1, n, dtype=torch.long, device="cuda")
    with torch.no_grad():
        return median_seconds(lambda: model(input_ids=ids, use_cache=False))


def decode_seconds(model, context: int) -> float:
    """Seconds per token: DECODE_TOKENS single-token steps after a prompt of ``context``."""
    from transformers import DynamicCache

    ids = torch.zeros(1, context, dtype=torch.long, device="cuda")
    token = torch.zeros(1, 1, dtype=torch.long, device="cuda")

    def steps():
        cache = DynamicCache()
        model(input_ids=ids, past_key_values=cache, use_cache=True)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(DECODE_TOKENS):
            model(input_ids=token, past_key_values=cache, use_cache=True)
        torch.cuda.synchronize()
        return (time.perf_counter() - start) / DECODE_TOKENS

    with torch.no_grad():
        steps()  # warm-up
        return statistics.median(steps() for _ in range(3))


def attempt(fn, *args) -> dict:
    """{"seconds": x} or {"error": "out of memory"}."""
    try:
        return {"seconds": fn(*args)}
    except torch.cuda.OutOfMemoryError:
        return {"error": "out of memory"}
    finally:
        torch.cuda.empty_cache()


def measure(deadline: float, out: dict, save) -> None:
    for name in CONFIGS:
        for impl in ("sdpa", "eager"):
            model = build(name, impl)
            for n in FORWARD_LENGTHS:
                if time.time() > deadline:
                    return
                row = {"model": name, "attn_implementation": impl, "seq_len": n,
                       **attempt(forward_seconds, model, n)}
                out["forward"].append(row)
                print(json.dumps(row), flush=True)
                save()
                if "error" in row:
                    break  # longer lengths only need more
            if impl == "sdpa":
                for context in DECODE_CONTEXTS:
                    row = {"model": name, "attn_implementation": impl, "context": context,
                           **attempt(decode_seconds, model, context)}
                    out["decode"].append(row)
                    print(json.dumps(row), flush=True)
                    save()
            del model
            torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None, help="default: docs/validation/latency_<gpu>.json")
    ap.add_argument("--seconds", type=float, default=540.0, help="stop starting cases after this")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("measure_latency.py needs a CUDA GPU")
    import transformers

    path = Path(args.out or ROOT / "docs" / "validation" / f"latency_{gpu_slug()}.json")
    out = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
           "transformers": transformers.__version__, "date": datetime.date.today().isoformat(),
           "dtype": "bfloat16", "batch": 1, "decode_tokens": DECODE_TOKENS, "configs": CONFIGS,
           "forward": [], "decode": []}

    def save():
        path.write_text(json.dumps(out, indent=1))

    measure(time.time() + args.seconds, out, save)
    save()
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
