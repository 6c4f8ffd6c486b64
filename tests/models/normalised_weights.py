"""Weights normalised on every forward, as torch's parametrizations do
(``weight_norm``: g·v/‖v‖) and as nViT keeps its rows of unit norm: the
gated feed-forward, x·W₁ᵀ weighed by SiLU and applied to W₂, is a layer
(its "keys" are the hidden width, made from parameters alone), not
attention.  One causal attention a layer, by SDPA."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import weight_norm

DIM, HEADS, HIDDEN = 32, 2, 48


class GatedFeedForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate = weight_norm(nn.Linear(DIM, HIDDEN, bias=False))
        self.up = nn.Parameter(torch.randn(HIDDEN, DIM))
        self.down = nn.Parameter(torch.randn(DIM, HIDDEN))

    def forward(self, x):
        up = F.normalize(self.up, dim=-1)
        down = F.normalize(self.down, dim=-1)
        return (F.silu(self.gate(x)) * (x @ up.t())) @ down.t()


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = weight_norm(nn.Linear(DIM, 3 * DIM))
        self.ff = GatedFeedForward()

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, HEADS, DIM // HEADS).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + out.transpose(1, 2).reshape(b, n, DIM)
        return x + self.ff(x)


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([Block() for _ in range(2)])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def build_model():
    return Model()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, DIM),)
