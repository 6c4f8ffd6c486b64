"""A model that builds a tensor from the batch size as a Python list
(``torch.tensor([0] * batch_size)``, as diffusers' Chroma makes its
guidance ids): tracing fixes B at the batch it ran with.  Causal
scaled-dot-product attention over N tokens, 2 layers of 2 heads."""
import torch
import torch.nn as nn
import torch.nn.functional as F

HEADS, DIM_HEAD, DIM = 2, 16, 32


class Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.out = nn.Linear(DIM, DIM)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, HEADS, DIM_HEAD).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return x + self.out(y.transpose(1, 2).reshape(b, n, DIM))


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.guidance = nn.Embedding(1, DIM)
        self.layers = nn.ModuleList(Layer() for _ in range(2))

    def forward(self, x):
        ids = torch.tensor([0] * x.shape[0], device=x.device)
        x = x + self.guidance(ids)[:, None, :]
        for layer in self.layers:
            x = layer(x)
        return x


def build_model():
    return Model()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, DIM),)
