"""x-transformers (lucidrains): TransformerWrapper + Decoder, attn_max_attend_past=16:
a causal sliding window, keys i-16..i (17 per query), written as a mask over
the N×N scores (x_transformers.py, Attention.forward).

2 layers, 2 heads of 16, dim 32.
"""
import torch

from published_support import require

x_transformers = require("x_transformers")

#: attn_max_attend_past: keys i-16..i
WINDOW_PAST = 16


def build_model():
    return x_transformers.TransformerWrapper(
        num_tokens=64, max_seq_len=8192,
        attn_layers=x_transformers.Decoder(dim=32, depth=2, heads=2, attn_dim_head=16,
                                           attn_max_attend_past=WINDOW_PAST))


def example_inputs(seq_len, batch=1):
    return (torch.randint(0, 64, (batch, seq_len)),)
