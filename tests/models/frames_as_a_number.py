"""Frames folded into the batch, their count given as a number beside the
tensor (video models' ``num_frames``: hidden states (B·N, dim), the batch
recovered as ``hidden.shape[0] // num_frames``): attention over the N
frames, 2 heads of 16, no mask."""
import torch
import torch.nn as nn
import torch.nn.functional as F

HEADS, DIM_HEAD, DIM = 2, 16, 32


class TemporalAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.out = nn.Linear(DIM, DIM)

    def forward(self, hidden, num_frames: int):
        batch = hidden.shape[0] // num_frames
        x = hidden.reshape(batch, num_frames, DIM)
        q, k, v = self.qkv(x).view(batch, num_frames, 3, HEADS, DIM_HEAD).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        y = self.out(y.transpose(1, 2).reshape(batch, num_frames, DIM))
        return hidden + y.reshape(batch * num_frames, DIM)


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(TemporalAttention() for _ in range(2))

    def forward(self, hidden, num_frames: int):
        for layer in self.layers:
            hidden = layer(hidden, num_frames)
        return hidden


def build_model():
    return Model()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch * seq_len, DIM), seq_len)
