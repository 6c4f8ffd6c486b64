"""Time `attncost analyze` against FlopCounterMode under FakeTensorMode on
real model shapes: Llama-3-8B, Mixtral-8x7B (mixture of experts) and
Gemma2-9B (local and global layers alternating, eager attention).

Both run as whole processes (imports included), alternating, at one length;
the configs are written to a temporary folder (no weights, no network).
Prints each run and, per shape, the median ratio attncost / FlopCounterMode
(target <= 1.5: repeated layers, alternating ones included, are traced two
periods deep and replayed).

    python benchmarks/bench_models.py [--repeats 3] [--seq-len 8k] [--only gemma2-9b]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_analyze import bench  # noqa: E402  (one timer and one FlopCounterMode script)

SHAPES = {
    "llama-3-8b": ("sdpa", dict(
        model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=4096,
        intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192,
        rope_theta=500000.0)),
    "mixtral-8x7b": ("sdpa", dict(
        model_type="mixtral", architectures=["MixtralForCausalLM"], hidden_size=4096,
        intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, num_local_experts=8, num_experts_per_tok=2, vocab_size=32000,
        max_position_embeddings=32768, sliding_window=None)),
    "gemma2-9b": ("eager", dict(
        model_type="gemma2", architectures=["Gemma2ForCausalLM"], hidden_size=3584,
        intermediate_size=14336, num_hidden_layers=42, num_attention_heads=16,
        num_key_value_heads=8, head_dim=256, vocab_size=256000, max_position_embeddings=8192,
        sliding_window=4096, query_pre_attn_scalar=256, attn_logit_softcapping=50.0,
        final_logit_softcapping=30.0)),
}

def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seq-len", default="8k")
    ap.add_argument("--only", choices=sorted(SHAPES), action="append")
    args = ap.parse_args()
    ratios = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or list(SHAPES):
            impl, fields = SHAPES[name]
            folder = Path(tmp) / name
            folder.mkdir()
            (folder / "config.json").write_text(json.dumps(fields))
            ratios[name] = bench(name, folder, impl, args.seq_len, args.repeats, target=1.5)
    print("; ".join(f"{k} {v:.2f}" for k, v in ratios.items()))


if __name__ == "__main__":
    main()
