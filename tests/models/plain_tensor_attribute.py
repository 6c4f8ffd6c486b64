"""Tensors kept as plain attributes, neither parameters nor buffers (as
vit-pytorch's SimpleViT keeps its sin-cos table, and as rotary frequencies
often are): a per-feature scale and rotary frequencies, real tensors that a
real run reads as they are, at any length."""
import torch
from torch import nn

DIM, HEADS = 32, 2


class PlainAttributes(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = torch.linspace(0.5, 1.5, DIM)  # a plain attribute
        self.inv_freq = 1.0 / (10000 ** (torch.arange(0, DIM // HEADS, 2) / (DIM // HEADS)))
        self.qkv = nn.Linear(DIM, 3 * DIM, bias=False)
        self.out = nn.Linear(DIM, DIM, bias=False)

    def forward(self, x):
        b, n, _ = x.shape
        x = x * self.scale
        q, k, v = self.qkv(x).view(b, n, 3, HEADS, DIM // HEADS).permute(2, 0, 3, 1, 4)
        angles = torch.arange(n, dtype=torch.float32)[:, None] * self.inv_freq[None, :]
        cos, sin = angles.cos().repeat(1, 2), angles.sin().repeat(1, 2)
        q, k = q * cos + q.flip(-1) * sin, k * cos + k.flip(-1) * sin
        weights = (q @ k.transpose(-1, -2) / 4).softmax(dim=-1)
        return self.out((weights @ v).transpose(1, 2).reshape(b, n, DIM))


def build_model():
    return PlainAttributes()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, DIM),)
