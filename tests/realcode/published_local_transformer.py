"""local-attention (lucidrains): LocalTransformer, causal, local_attn_window_size=16,
2 layers of 2 heads of 16 (dim 32), its default 4 hyper-connection streams.

What it computes (local_attention/transformer.py): LocalMHA passes
exact_windowsize=True (its default) and autopad=True to LocalAttention, so a
query i attends to keys i-16..i exactly (17 keys, fewer at the start),
computed over blocks of 16 with one block back.
"""
import torch

from published_support import require

local_attention = require("local_attention")

WINDOW_SIZE = 16


def build_model():
    return local_attention.LocalTransformer(
        num_tokens=64, max_seq_len=8192, dim=32, depth=2, causal=True,
        local_attn_window_size=WINDOW_SIZE, dim_head=16, heads=2)


def example_inputs(seq_len, batch=1):
    return (torch.randint(0, 64, (batch, seq_len)),)
