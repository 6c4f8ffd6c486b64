"""No attention at all: an MLP with a softmax over features."""
import torch
import torch.nn as nn


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.Linear(16, 64)
        self.down = nn.Linear(64, 16)

    def forward(self, x):
        h = torch.softmax(self.up(x), dim=-1)
        return self.down(h)


def build_model():
    return MLP()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, 16),)
