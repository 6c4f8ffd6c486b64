"""Attention within segments of SEGMENT tokens, one fused call each in a
Python loop over the sequence (``for i in range(0, n, SEGMENT)``: the
local half of Infini-attention, a chunked prefill), the outputs
concatenated; the last segment shorter where SEGMENT does not divide N."""
import torch
import torch.nn as nn
import torch.nn.functional as F

DIM, HEADS, SEGMENT = 32, 2, 16
DH = DIM // HEADS


class SegmentAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.out = nn.Linear(DIM, DIM)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, HEADS, DH).permute(2, 0, 3, 1, 4)
        outs = []
        for i in range(0, n, SEGMENT):
            outs.append(F.scaled_dot_product_attention(
                q[:, :, i:i + SEGMENT], k[:, :, i:i + SEGMENT], v[:, :, i:i + SEGMENT],
                is_causal=True))
        o = torch.cat(outs, dim=2)
        return self.out(o.transpose(1, 2).reshape(b, n, DIM))


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([SegmentAttention() for _ in range(2)])

    def forward(self, x):
        for layer in self.layers:
            x = x + layer(x)
        return x


def build_model():
    return Model()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, DIM),)
