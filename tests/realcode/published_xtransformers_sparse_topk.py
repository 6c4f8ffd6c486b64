"""x-transformers: a Decoder whose attention keeps each query's TOPK largest
logits (attn_sparse_topk=8), 2 layers of 2 heads of 16 (dim 32).

What it computes (x_transformers/attend.py, sparse_topk_attn): the causal
logits' k-th largest value per row, ``logits.topk(k)``, and a mask of the
logits at or above it (and above the causal mask value): query i keeps
min(TOPK, i + 1) keys, chosen by the input; the others are masked before
the softmax.  Q·Kᵀ and P·V still run over every causal pair."""
import torch

from published_support import require

x_transformers = require("x_transformers")

TOPK = 8


def build_model():
    return x_transformers.TransformerWrapper(
        num_tokens=64, max_seq_len=8192,
        attn_layers=x_transformers.Decoder(dim=32, depth=2, heads=2, attn_dim_head=16,
                                           attn_sparse_topk=TOPK))


def example_inputs(seq_len, batch=1):
    return (torch.randint(0, 64, (batch, seq_len)),)
