"""Mega-pytorch: MegaLayer (mega_pytorch/mega_pytorch.py), causal, in 2
residual layers of dim 32: a multi-headed EMA, then SingleHeadedAttention
with queries and keys of 16 (an offset and scale of one shared projection)
and values of 64.

One head: scores (B, N, N) from einsum('b i d, b j d -> b i j'), a T5
relative position bias, a causal triu mask, a softmax, then ·V with
d_v = 64 ≠ d_qk = 16.  The EMA and the bias build tensors from the length
as numbers (arange, an FFT of a fast length), so the trace holds at the
traced length only.
"""
import torch
from torch import nn

from published_support import require

mega = require("mega_pytorch")


class Stack(nn.Module):
    def __init__(self, depth=2):
        super().__init__()
        self.layers = nn.ModuleList(
            mega.MegaLayer(dim=32, ema_heads=4, attn_dim_qk=16, attn_dim_value=64,
                           laplacian_attn_fn=False, causal=True) for _ in range(depth))

    def forward(self, x):
        for layer in self.layers:
            x = x + layer(x)
        return x


def build_model():
    return Stack()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, 32),)
