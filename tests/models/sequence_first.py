"""Attention written sequence first, as some codebases keep activations
(N, B, d): ``einsum('ibhd,jbhd->ijbh')`` lays the scores out as (queries,
keys, batch, heads), the mask (N, N, 1, 1) applied there, the softmax over
dim 1 (an ``nn.Softmax`` child module of the attention), and
``einsum('ijbh,jbhd->ibhd')`` applies the weights.  The mask lets each
query see itself and the WINDOW - 1 keys before it (causal, local)."""
import torch
import torch.nn as nn

HEADS, DIM_QK, DIM_V, WINDOW = 4, 16, 24, 8


class SequenceFirstAttention(nn.Module):
    def __init__(self, dim=48):
        super().__init__()
        self.q = nn.Linear(dim, HEADS * DIM_QK)
        self.k = nn.Linear(dim, HEADS * DIM_QK)
        self.v = nn.Linear(dim, HEADS * DIM_V)
        self.softmax = nn.Softmax(dim=1)
        self.out = nn.Linear(HEADS * DIM_V, dim)

    def forward(self, x, mask):  # x: (N, B, dim), mask: (N, N, 1)
        n, b, _ = x.shape
        q = self.q(x).view(n, b, HEADS, DIM_QK)
        k = self.k(x).view(n, b, HEADS, DIM_QK)
        v = self.v(x).view(n, b, HEADS, DIM_V)
        scores = torch.einsum("ibhd,jbhd->ijbh", q, k) * DIM_QK ** -0.5
        scores = scores.masked_fill(mask.unsqueeze(-1) == 0, float("-inf"))
        weights = self.softmax(scores)
        out = torch.einsum("ijbh,jbhd->ibhd", weights, v)
        return self.out(out.reshape(n, b, HEADS * DIM_V))


class Model(nn.Module):
    def __init__(self, dim=48):
        super().__init__()
        self.layers = nn.ModuleList(SequenceFirstAttention(dim) for _ in range(2))

    def forward(self, x):
        n = x.shape[0]
        i = torch.arange(n, device=x.device)
        distance = i[:, None] - i[None, :]
        mask = ((distance >= 0) & (distance < WINDOW)).unsqueeze(-1)
        for layer in self.layers:
            x = x + layer(x, mask)
        return x


def build_model():
    return Model()


def example_inputs(seq_len, batch=1):
    return (torch.randn(seq_len, batch, 48),)
