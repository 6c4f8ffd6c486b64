"""nn.MultiheadAttention, the module most tutorials use."""
import torch
import torch.nn as nn


class Block(nn.Module):
    def __init__(self, d_model=32, heads=4):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, heads, batch_first=True)
        self.ff = nn.Linear(d_model, d_model)

    def forward(self, x):
        y, _ = self.attn(x, x, x)
        return self.ff(x + y)


def build_model():
    return Block()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, 32),)
