"""Scores written keys first, K·Qᵀ, the softmax over their rows (the keys)
and the weights transposed onto the values: a causal window of 8 over the
sequence, then cross-attention from the N tokens to 8 context tokens with
values wider than the keys (d_v = 24 ≠ d_qk = 16)."""
import torch
import torch.nn as nn

HEADS, D_QK, D_V, WINDOW, CONTEXT, DIM = 2, 16, 24, 8, 8, 32


class KeysFirstWindow(nn.Module):
    def __init__(self):
        super().__init__()
        self.qk = nn.Linear(DIM, 2 * HEADS * D_QK)
        self.v = nn.Linear(DIM, HEADS * D_V)
        self.out = nn.Linear(HEADS * D_V, DIM)

    def forward(self, x):
        b, n, _ = x.shape
        q, k = self.qk(x).view(b, n, 2, HEADS, D_QK).permute(2, 0, 3, 1, 4)
        v = self.v(x).view(b, n, HEADS, D_V).transpose(1, 2)
        scores = k @ q.transpose(-1, -2)  # (batch, heads, keys j, queries i)
        j, i = torch.arange(n)[:, None], torch.arange(n)[None, :]
        allowed = (j <= i) & (i - j < WINDOW)
        weights = scores.masked_fill(~allowed, float("-inf")).softmax(-2)
        o = weights.transpose(-1, -2) @ v
        return self.out(o.transpose(1, 2).reshape(b, n, HEADS * D_V))


class KeysFirstCross(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = nn.Linear(DIM, HEADS * D_QK)
        self.k = nn.Linear(DIM, HEADS * D_QK)
        self.v = nn.Linear(DIM, HEADS * D_V)
        self.out = nn.Linear(HEADS * D_V, DIM)

    def forward(self, x, context):
        b, n, _ = x.shape
        q = self.q(x).view(b, n, HEADS, D_QK).transpose(1, 2)
        k = self.k(context).view(b, CONTEXT, HEADS, D_QK).transpose(1, 2)
        v = self.v(context).view(b, CONTEXT, HEADS, D_V).transpose(1, 2)
        weights = torch.einsum("bhjd,bhid->bhji", k, q).softmax(dim=2)
        o = torch.einsum("bhji,bhjd->bhid", weights, v)
        return self.out(o.transpose(1, 2).reshape(b, n, HEADS * D_V))


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.window = KeysFirstWindow()
        self.cross = KeysFirstCross()

    def forward(self, x, context):
        x = x + self.window(x)
        return x + self.cross(x, context)


def build_model():
    return Model()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, DIM), torch.randn(batch, CONTEXT, DIM))
