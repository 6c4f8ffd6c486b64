"""Cross-attention: N queries over a memory of 2N keys, and over a fixed 77-token context."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class Cross(nn.Module):
    def __init__(self, d=32, heads=2):
        super().__init__()
        self.h = heads
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)

    def forward(self, x, memory):
        b, n, e = x.shape
        m = memory.shape[1]
        q = self.q(x).view(b, n, self.h, -1).transpose(1, 2)
        k = self.k(memory).view(b, m, self.h, -1).transpose(1, 2)
        v = self.v(memory).view(b, m, self.h, -1).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) * (q.shape[-1] ** -0.5)
        return (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, e)


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.to_memory = Cross()
        self.to_text = Cross()

    def forward(self, x, memory, text):
        x = x + self.to_memory(x, memory)
        return F.scaled_dot_product_attention(x.unsqueeze(1), text.unsqueeze(1), text.unsqueeze(1)) \
            + self.to_text(x, text)


def build_model():
    return Model()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, 32), torch.randn(batch, 2 * seq_len, 32),
            torch.randn(batch, 77, 32))
