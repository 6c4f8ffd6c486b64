"""Causal attention whose position table is built by a function that
checks its length is an int (a type-checked signature, as beartype
enforces on ring-attention-pytorch's rotary embedding): the model runs
with the length a number only."""
import torch
import torch.nn as nn

HEADS, DIM_HEAD = 2, 16


def positions(n):
    if not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    return torch.arange(n, dtype=torch.float32)


class Model(nn.Module):
    def __init__(self, dim=32):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * HEADS * DIM_HEAD)
        self.out = nn.Linear(HEADS * DIM_HEAD, dim)

    def forward(self, x):
        b, n, _ = x.shape
        x = x + positions(n)[:, None] * 1e-3
        q, k, v = self.qkv(x).view(b, n, 3, HEADS, DIM_HEAD).permute(2, 0, 3, 1, 4)
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(out.transpose(1, 2).reshape(b, n, -1))


def build_model():
    return Model()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, 32),)
