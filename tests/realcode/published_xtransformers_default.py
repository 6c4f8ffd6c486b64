"""x-transformers (lucidrains): TransformerWrapper + Decoder, the default Decoder:
causal softmax attention, unfused (einsum, masked_fill with a triu mask).

2 layers, 2 heads of 16, dim 32.
"""
import torch

from published_support import require

x_transformers = require("x_transformers")


def build_model():
    return x_transformers.TransformerWrapper(
        num_tokens=64, max_seq_len=8192,
        attn_layers=x_transformers.Decoder(dim=32, depth=2, heads=2, attn_dim_head=16))


def example_inputs(seq_len, batch=1):
    return (torch.randint(0, 64, (batch, seq_len)),)
