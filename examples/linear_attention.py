"""Linearized (Performer-style) attention, the seed's `LinearAttention`:
positive features phi(x) = exp(W x), then phi(K)ᵀV first and phi(Q) times
that, never an N×N matrix: O(N·r·d) time and memory.

    attncost analyze examples/linear_attention.py --seq-len 1M
"""
import torch
import torch.nn as nn


class LinearAttention(nn.Module):
    def __init__(self, d_model, n_features):
        super().__init__()
        self.projection = nn.Linear(d_model, n_features)

    def forward(self, Q, K, V):
        Q = self.projection(Q).exp()
        K = self.projection(K).exp()
        V_new = torch.einsum("bnd,bne->bde", K, V)
        attention = torch.einsum("bnd,bde->bne", Q, V_new)
        return attention / torch.einsum("bnd,bd->bn", Q, K.sum(dim=1)).unsqueeze(-1)


class Block(nn.Module):
    def __init__(self, d_model=256, n_features=64):
        super().__init__()
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.attn = LinearAttention(d_model, n_features)

    def forward(self, x):
        return x + self.attn(self.q(x), self.k(x), self.v(x))


def build_model():
    return nn.Sequential(Block(), Block())


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, 256),)
