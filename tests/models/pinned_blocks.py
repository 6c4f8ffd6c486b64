"""Causal attention inside blocks of 16 (the sequence reshaped into N/16
blocks: N a multiple of 16), its mask made from each block's positions, in
a model that also loops N // 8 times in Python, so that its trace holds
where N // 8 is what it was at and N is a multiple of 16: traced at N=64,
the range 64..71, where only 64 runs."""
import torch
import torch.nn as nn

HEADS, DIM_HEAD, BLOCK, DIM = 2, 16, 16, 32


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(DIM, 3 * HEADS * DIM_HEAD)
        self.out = nn.Linear(HEADS * DIM_HEAD, DIM)
        self.pos = nn.Embedding(1024, DIM)

    def forward(self, x):
        b, n, _ = x.shape
        for i in range(n // 8):  # a loop as long as N // 8: the trace holds at that count only
            x = x + self.pos.weight[i] * 0.01
        q, k, v = self.qkv(x).view(b, n // BLOCK, BLOCK, 3, HEADS, DIM_HEAD).permute(3, 0, 4, 1, 2, 5)
        scores = q @ k.transpose(-1, -2)
        positions = torch.arange(n).view(n // BLOCK, BLOCK)  # each block's positions
        later = positions[:, None, :] > positions[:, :, None]
        o = scores.masked_fill(later, float("-inf")).softmax(-1) @ v
        return self.out(o.permute(0, 2, 3, 1, 4).reshape(b, n, HEADS * DIM_HEAD))


def build_model():
    return Model()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, DIM),)
