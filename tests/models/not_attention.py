"""Things shaped like attention that are not: a QKᵀ chain with no softmax,
a gating einsum, a softmax over features."""
import torch
import torch.nn as nn


class NotAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate = nn.Parameter(torch.randn(16, 16))
        self.mix = nn.Linear(16, 16)

    def forward(self, x):
        chain = (x @ x.transpose(-1, -2)) @ x                      # no softmax: not attention
        gated = torch.einsum("bnd,de->bne", x, self.gate) * torch.sigmoid(x)
        feats = torch.softmax(self.mix(x), dim=-1) @ self.gate     # softmax over features
        return chain + gated + feats


def build_model():
    return NotAttention()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, 16),)
