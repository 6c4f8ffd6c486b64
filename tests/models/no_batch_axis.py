"""One sequence with no batch axis, as packed-sequence code keeps its
tokens (N, dim): causal scaled-dot-product attention of 4 heads over
them.  Whatever the batch asked, the model runs it once."""
import torch
import torch.nn as nn
import torch.nn.functional as F

HEADS, DIM_HEAD, DIM = 4, 16, 64


class Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.out = nn.Linear(DIM, DIM)

    def forward(self, x):  # (N, dim)
        n = x.shape[0]
        q, k, v = self.qkv(x).view(n, 3, HEADS, DIM_HEAD).permute(1, 2, 0, 3)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (H, N, d)
        return x + self.out(y.transpose(0, 1).reshape(n, DIM))


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(Layer() for _ in range(2))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def build_model():
    return Model()


def example_inputs(seq_len, batch=1):
    return (torch.randn(seq_len, DIM),)
