"""Attention within buckets of 16 tokens, in a model that reads the length
as a Python number (numpy numbers its positions) and asserts that it
divides into pairs of buckets (as Reformer's LSH attention does): it runs
only at multiples of 32."""
import numpy as np
import torch
import torch.nn as nn

HEADS, DIM_HEAD, BUCKET = 2, 16, 16


class Model(nn.Module):
    def __init__(self, dim=32):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * HEADS * DIM_HEAD)
        self.out = nn.Linear(HEADS * DIM_HEAD, dim)

    def forward(self, x):
        b, n = x.shape[0], x.shape[1]
        assert n % (2 * BUCKET) == 0, f"length {n} must divide into pairs of buckets of {BUCKET}"
        positions = np.arange(n)
        blocks = len(positions) // BUCKET
        q, k, v = self.qkv(x).view(b, blocks, BUCKET, 3, HEADS, DIM_HEAD).permute(3, 0, 4, 1, 2, 5)
        weights = (q @ k.transpose(-1, -2) * DIM_HEAD ** -0.5).softmax(-1)
        out = (weights @ v).permute(0, 2, 3, 1, 4).reshape(b, n, -1)
        return self.out(out)


def build_model():
    return Model()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, 32),)
