"""x-transformers: a Decoder with cross-attention to a context of 10 tokens
and keys shared across heads: 4 query heads of 16 (dim 32, 2 layers, each a
self-attention, a cross-attention and a feed-forward).

What it computes (x_transformers/x_transformers.py, Attention and
attend.py): with attn_kv_heads=KV_HEADS, keys and values are projected to
KV_HEADS heads; with one, Attend computes 'b h i d, b j d -> b h i j' on
head-less keys (multi-query), otherwise it repeats them over the query heads.
The context is a fixed 10 tokens, not the sequence.
"""
import os

import torch
from torch import nn

from published_support import require

x_transformers = require("x_transformers")

KV_HEADS = int(os.environ.get("XT_KV_HEADS", "1"))
CONTEXT = 10


class WithContext(nn.Module):
    def __init__(self, kv_heads: int):
        super().__init__()
        self.decoder = x_transformers.TransformerWrapper(
            num_tokens=64, max_seq_len=8192,
            attn_layers=x_transformers.Decoder(dim=32, depth=2, heads=4, attn_dim_head=16,
                                               cross_attend=True, attn_kv_heads=kv_heads))

    def forward(self, x):
        context = torch.ones(x.shape[0], CONTEXT, 32)
        return self.decoder(x, context=context)


def build_model(kv_heads: int = KV_HEADS):
    return WithContext(kv_heads)


def example_inputs(seq_len, batch=1):
    return (torch.randint(0, 64, (batch, seq_len)),)
