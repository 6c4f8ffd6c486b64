"""Causal attention within GROUPS interleaved groups of the sequence, folded
into the batch ('b (n g) d -> (b g) n d', as hierarchical transformers fold
a coarser level), an unfused triu mask on each group's N/GROUPS × N/GROUPS
scores; values wider than queries and keys."""
import torch
import torch.nn as nn

HEADS, DIM_QK, DIM_V, GROUPS, DIM = 2, 16, 24, 4, 32


class Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.qk = nn.Linear(DIM, 2 * HEADS * DIM_QK)
        self.v = nn.Linear(DIM, HEADS * DIM_V)
        self.out = nn.Linear(HEADS * DIM_V, DIM)

    def forward(self, x):
        b, n, _ = x.shape
        g = x.reshape(b, n // GROUPS, GROUPS, DIM).transpose(1, 2).reshape(b * GROUPS, -1, DIM)
        m = g.shape[1]
        q, k = self.qk(g).view(b * GROUPS, m, 2, HEADS, DIM_QK).permute(2, 0, 3, 1, 4)
        v = self.v(g).view(b * GROUPS, m, HEADS, DIM_V).transpose(1, 2)
        scores = (q @ k.transpose(-1, -2)) * DIM_QK ** -0.5
        blocked = torch.ones(m, m, dtype=torch.bool).triu(1)
        o = scores.masked_fill(blocked, float("-inf")).softmax(-1) @ v
        o = o.transpose(1, 2).reshape(b, GROUPS, m, -1).transpose(1, 2).reshape(b, n, -1)
        return self.out(o)


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(Layer() for _ in range(2))

    def forward(self, x):
        for layer in self.layers:
            x = x + layer(x)
        return x


def build_model():
    return Model()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, DIM),)
