"""Causal attention with Transformer-XL-style relative positions: each
score adds the query against a learned table of position keys cut to the
sequence's length (``q · R[-N:]ᵀ``, Music Transformer's relative
attention without its skew), before the causal mask."""
import torch
import torch.nn as nn

HEADS, DIM_HEAD, DIM_V, MAX_LEN = 2, 16, 8, 512


class RelativeAttention(nn.Module):
    def __init__(self, dim=32):
        super().__init__()
        self.to_q = nn.Linear(dim, HEADS * DIM_HEAD, bias=False)
        self.to_k = nn.Linear(dim, HEADS * DIM_HEAD, bias=False)
        self.to_v = nn.Linear(dim, HEADS * DIM_V, bias=False)
        self.positions = nn.Parameter(torch.randn(HEADS, MAX_LEN, DIM_HEAD))
        self.out = nn.Linear(HEADS * DIM_V, dim)

    def forward(self, x):
        b, n, _ = x.shape
        q = self.to_q(x).view(b, n, HEADS, DIM_HEAD).transpose(1, 2)
        k = self.to_k(x).view(b, n, HEADS, DIM_HEAD).transpose(1, 2)
        v = self.to_v(x).view(b, n, HEADS, DIM_V).transpose(1, 2)
        scores = q @ k.transpose(-1, -2)
        scores = scores + torch.einsum("bhid,hjd->bhij", q, self.positions[:, MAX_LEN - n:])
        causal = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1)
        weights = (scores * DIM_HEAD ** -0.5).masked_fill(causal, float("-inf")).softmax(-1)
        return self.out((weights @ v).transpose(1, 2).reshape(b, n, -1))


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([RelativeAttention(), RelativeAttention()])

    def forward(self, x):
        for layer in self.layers:
            x = x + layer(x)
        return x


def build_model():
    return Model()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, 32),)
