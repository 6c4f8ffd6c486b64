"""CoLT5-attention (lucidrains): ConditionalRoutedAttention, dim 32.

What it computes (colt5_attention/transformer_block.py): every token goes
through a light local attention (LocalMHA, windows of 16, 2 heads of 16);
a router scores the tokens (coordinate descent) and picks 32 of them as
queries and 32 as keys and values for a heavy attention (2 heads of 16)
among those routed tokens only (plus one learned null key and value,
Attention.null_kv): which tokens meet is chosen by the input.
"""
import torch

from published_support import require

colt5_attention = require("colt5_attention")

ROUTED = 32


def build_model():
    return colt5_attention.ConditionalRoutedAttention(
        dim=32, num_heavy_tokens_q=ROUTED, num_heavy_tokens_kv=ROUTED, light_dim_head=16,
        light_heads=2, light_window_size=16, heavy_dim_head=16, heavy_heads=2,
        router_straight_through=True)


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, 32),)
