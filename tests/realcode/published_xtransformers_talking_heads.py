"""x-transformers (lucidrains): the default Decoder with talking heads
before and after the softmax (attn_pre_talking_heads,
attn_post_talking_heads: a 1×1 Conv2d over the heads, x_transformers/attend.py).

Causal softmax attention, unfused; the weights of each (query, key) pair
mixed across heads between the softmax and ·V, and a head-mixed copy of
the scores added before it.  2 layers, 2 heads of 16, dim 32.
"""
import torch

from published_support import require

x_transformers = require("x_transformers")


def build_model():
    return x_transformers.TransformerWrapper(
        num_tokens=64, max_seq_len=8192,
        attn_layers=x_transformers.Decoder(dim=32, depth=2, heads=2, attn_dim_head=16,
                                           attn_pre_talking_heads=True,
                                           attn_post_talking_heads=True))


def example_inputs(seq_len, batch=1):
    return (torch.randint(0, 64, (batch, seq_len)),)
