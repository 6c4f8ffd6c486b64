"""Attention over a hierarchy of levels (as h-transformer-1d computes it):
the sequence, cut into blocks of 16, is attended within each block at the
finest level; each coarser level averages pairs of positions first.  The
code takes N as a Python number (its number of levels, ``math.log2`` of the
length less 5) and asserts that N is a multiple of 64: it does not run at
short lengths."""
import math

import torch
from torch import nn

DIM, HEADS, BLOCK = 32, 2, 16


class Levels(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(DIM, 3 * DIM, bias=False)
        self.out = nn.Linear(DIM, DIM, bias=False)

    def forward(self, x):
        b, n = x.shape[0], x.shape[1]
        assert n % 64 == 0, "the length must be a multiple of 64"
        q, k, v = self.qkv(x).view(b, n, 3, HEADS, DIM // HEADS).permute(2, 0, 3, 1, 4)
        y = torch.zeros_like(v)
        for level in range(int(math.log2(n)) - 5):
            width = 2 ** level
            qs, ks, vs = (t.reshape(b, HEADS, n // width, width, -1).mean(dim=3) for t in (q, k, v))
            blocks = n // width // BLOCK
            qs, ks, vs = (t.reshape(b, HEADS, blocks, BLOCK, -1) for t in (qs, ks, vs))
            weights = (qs @ ks.transpose(-1, -2)).softmax(dim=-1)
            out = (weights @ vs).reshape(b, HEADS, n // width, -1)
            y = y + out.repeat_interleave(width, dim=2)
        return self.out(y.transpose(1, 2).reshape(b, n, DIM))


def build_model():
    return Levels()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, DIM),)
