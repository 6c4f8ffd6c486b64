"""A two-layer decoder whose attention is written out by hand (the seed's
`optimized_attention`, with heads and a causal mask): O(N²·d_k) time, and an
N×N score matrix per head in memory.

    attncost analyze examples/dense_attention.py --seq-len 8k
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def attention(Q, K, V, causal=True):
    scores = torch.matmul(Q, K.transpose(-2, -1)) / math.sqrt(K.size(-1))
    if causal:
        n = scores.size(-1)
        mask = torch.ones(n, n, dtype=torch.bool, device=scores.device).tril()
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return torch.matmul(weights, V)


class SelfAttention(nn.Module):
    def __init__(self, d_model, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x):
        b, n, e = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, e // self.heads).permute(2, 0, 3, 1, 4)
        y = attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, n, e))


class Block(nn.Module):
    def __init__(self, d_model=512, heads=8):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, heads)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(),
                                 nn.Linear(4 * d_model, d_model))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Decoder(nn.Module):
    def __init__(self, vocab=32000, d_model=512, heads=8, layers=2):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.layers = nn.ModuleList([Block(d_model, heads) for _ in range(layers)])
        self.head = nn.Linear(d_model, vocab, bias=False)

    def forward(self, ids):
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x)
        return self.head(F.layer_norm(x, x.shape[-1:]))


def build_model():
    return Decoder()
