"""Fused attention whose value head dim differs from the query/key head dim
(as in DeepSeek's MLA), via F.scaled_dot_product_attention.

Layer 0: causal, GQA through enable_gqa, d_qk > d_v.
Layer 1: not causal, one K/V head per query head, d_qk < d_v.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

D_MODEL = 48
#: (heads, kv_heads, d_qk, d_v, causal) of each layer
LAYERS = ((6, 2, 24, 16, True), (4, 4, 8, 24, False))


class Attention(nn.Module):
    def __init__(self, heads, kv_heads, d_qk, d_v, causal):
        super().__init__()
        self.h, self.kv, self.d_qk, self.d_v, self.causal = heads, kv_heads, d_qk, d_v, causal
        self.q = nn.Linear(D_MODEL, heads * d_qk, bias=False)
        self.k = nn.Linear(D_MODEL, kv_heads * d_qk, bias=False)
        self.v = nn.Linear(D_MODEL, kv_heads * d_v, bias=False)
        self.o = nn.Linear(heads * d_v, D_MODEL, bias=False)

    def forward(self, x):
        b, n, _ = x.shape
        q = self.q(x).view(b, n, self.h, self.d_qk).transpose(1, 2)
        k = self.k(x).view(b, n, self.kv, self.d_qk).transpose(1, 2)
        v = self.v(x).view(b, n, self.kv, self.d_v).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal,
                                           enable_gqa=self.kv != self.h)
        return self.o(y.transpose(1, 2).reshape(b, n, self.h * self.d_v))


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([Attention(*cfg) for cfg in LAYERS])

    def forward(self, x):
        for layer in self.layers:
            x = x + layer(x)
        return x


def build_model():
    return Model()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, D_MODEL),)
