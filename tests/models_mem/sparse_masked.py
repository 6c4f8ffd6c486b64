""""Sparse" attention as the seed writes it: dense scores, a boolean mask input, `masked_fill`."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def sparse_attention(Q, K, V, sparsity_mask):
    attention_scores = torch.matmul(Q, K.transpose(-2, -1)) / math.sqrt(K.size(-1))
    attention_scores = attention_scores.masked_fill(~sparsity_mask, float("-inf"))
    attention_weights = F.softmax(attention_scores, dim=-1)
    return torch.matmul(attention_weights, V)


def strided_mask(seq_len, band=8, stride=16):
    i = torch.arange(seq_len).unsqueeze(1)
    j = torch.arange(seq_len).unsqueeze(0)
    return (j <= i) & ((i - j < band) | (j % stride == stride - 1))


class SparseSelfAttention(nn.Module):
    def __init__(self, d_model=64, heads=4):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x, mask):
        b, n, e = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, e // self.heads).permute(2, 0, 3, 1, 4)
        y = sparse_attention(q, k, v, mask)
        return x + self.out(y.transpose(1, 2).reshape(b, n, e))


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([SparseSelfAttention(), SparseSelfAttention()])

    def forward(self, x, mask):
        for layer in self.layers:
            x = layer(x, mask)
        return x


def build_model():
    return Model()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, 64), strided_mask(seq_len))
