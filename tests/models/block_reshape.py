"""Attention within fixed blocks of 8 positions, cut out by a reshape (as
Swin's window partition does in 2-D): each query meets the 8 keys of its
block.  2 heads of 16."""
import torch
import torch.nn as nn
import torch.nn.functional as F

BLOCK = 8


class Blocked(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(32, 96, bias=False)

    def forward(self, x):
        b, n, e = x.shape
        qkv = self.qkv(x).view(b, n // BLOCK, BLOCK, 3, 2, 16).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv[0], qkv[1], qkv[2]                       # b, blocks, h, 8, d
        scores = q @ k.transpose(-2, -1) / 4.0
        out = F.softmax(scores, dim=-1) @ v
        return out.permute(0, 1, 3, 2, 4).reshape(b, n, e)


def build_model():
    return Blocked()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, 32),)
