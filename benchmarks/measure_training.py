"""A training step's peak memory on a CUDA GPU against `--mode train`.

A Llama-shaped transformers config (random weights) in bf16 with AdamW, at
several N, with and without activation checkpointing: the steady-state step
(`zero_grad(set_to_none=True)`, forward, loss = the logits summed in
float32, backward, `optimizer.step()`; one step first so the optimizer's
state exists) measured with `torch.cuda.max_memory_allocated()`, beside
attncost's `peak_memory_bytes` for `--mode train --device cuda`.

    python benchmarks/measure_training.py OUT.json [--seconds 240]
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

CONFIG = dict(model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=1024,
              intermediate_size=2816, num_attention_heads=16, num_key_value_heads=4,
              num_hidden_layers=4, vocab_size=32000, max_position_embeddings=1 << 20,
              tie_word_embeddings=False, torch_dtype="bfloat16")
LENGTHS = (1024, 4096, 16384)


def build(folder: Path, checkpointing: bool):
    import transformers

    config = transformers.AutoConfig.for_model(**json.loads((folder / "config.json").read_text()))
    with torch.device("cuda"):
        model = transformers.AutoModelForCausalLM.from_config(
            config, attn_implementation="sdpa", dtype=torch.bfloat16)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    return model.train()


def step(model, optimizer, n: int) -> None:
    ids = torch.zeros(1, n, dtype=torch.long, device="cuda")
    optimizer.zero_grad(set_to_none=True)
    out = model(input_ids=ids, use_cache=False)
    out.logits.float().sum().backward()
    optimizer.step()


def measure(model, n: int) -> int | None:
    """max_memory_allocated of the second step (the state exists), or None if OOM."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    try:
        step(model, optimizer, n)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        step(model, optimizer, n)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    except torch.cuda.OutOfMemoryError:
        return None
    finally:
        del optimizer
        model.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seconds", type=float, default=240.0)
    args = ap.parse_args()
    deadline = time.time() + args.seconds
    folder = Path(tempfile.mkdtemp()) / "llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(CONFIG))
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "config": CONFIG, "cases": []}
    for checkpointing in (False, True):
        a = attncost.analyze(folder, LENGTHS[0], mode="train", device="cuda",
                             checkpointing="full" if checkpointing else "none", dtype="bfloat16")
        model = build(folder, checkpointing)
        for n in LENGTHS:
            if time.time() > deadline:
                break
            measured = measure(model, n)
            predicted = a.at(a.peak_memory_bytes, n, 1)
            error = None if measured is None else (predicted - measured) / measured
            report["cases"].append({"checkpointing": checkpointing, "seq_len": n,
                                    "predicted_bytes": predicted, "measured_bytes": measured,
                                    "error": error})
            print(f"checkpointing={checkpointing} N={n}: predicted {predicted / 2**30:.3f} GiB, "
                  f"measured {'OOM' if measured is None else f'{measured / 2**30:.3f} GiB'}"
                  + ("" if error is None else f", error {error:+.2%}"), flush=True)
            Path(args.out).write_text(json.dumps(report, indent=2))
        del model
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
