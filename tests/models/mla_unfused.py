"""Attention written out by hand, Q·Kᵀ -> causal mask -> softmax -> ·V, with a
value head dim that differs from the query/key head dim, and GQA by
repeat_interleave."""
import math

import torch
import torch.nn as nn

VOCAB, D_MODEL = 100, 32
HEADS, KV_HEADS, D_QK, D_V = 4, 2, 12, 20


class CausalAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = nn.Linear(D_MODEL, HEADS * D_QK)
        self.k = nn.Linear(D_MODEL, KV_HEADS * D_QK)
        self.v = nn.Linear(D_MODEL, KV_HEADS * D_V)
        self.o = nn.Linear(HEADS * D_V, D_MODEL)

    def forward(self, x):
        b, n, _ = x.shape
        q = self.q(x).view(b, n, HEADS, D_QK).transpose(1, 2)
        k = self.k(x).view(b, n, KV_HEADS, D_QK).transpose(1, 2)
        v = self.v(x).view(b, n, KV_HEADS, D_V).transpose(1, 2)
        k = k.repeat_interleave(HEADS // KV_HEADS, dim=1)
        v = v.repeat_interleave(HEADS // KV_HEADS, dim=1)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(D_QK)
        mask = torch.tril(torch.ones(n, n, dtype=torch.bool, device=x.device))
        att = att.masked_fill(~mask, float("-inf"))
        y = torch.softmax(att, dim=-1) @ v
        return self.o(y.transpose(1, 2).reshape(b, n, HEADS * D_V))


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(VOCAB, D_MODEL)
        self.h = nn.ModuleList([CausalAttention() for _ in range(2)])

    def forward(self, idx):
        x = self.wte(idx)
        for block in self.h:
            x = x + block(x)
        return x


def build_model():
    return Model()


def example_inputs(seq_len, batch=1):
    return (torch.zeros(batch, seq_len, dtype=torch.long),)
