"""x-transformers: a Decoder with 4 learned memory key/values per layer
(attn_num_mem_kv=4), 2 layers of 2 heads of 16 (dim 32).

What it computes (x_transformers/x_transformers.py, Attention.forward): the
memory keys and values are prepended to each head's keys and values, and
the causal mask is padded on the left with True, so every query sees the 4
memory keys and the sequence's keys up to itself: N × (N + 4) scores.
"""
import torch

from published_support import require

x_transformers = require("x_transformers")

MEMORY = 4


def build_model():
    return x_transformers.TransformerWrapper(
        num_tokens=64, max_seq_len=8192,
        attn_layers=x_transformers.Decoder(dim=32, depth=2, heads=2, attn_dim_head=16,
                                           attn_num_mem_kv=MEMORY))


def example_inputs(seq_len, batch=1):
    return (torch.randint(0, 64, (batch, seq_len)),)
