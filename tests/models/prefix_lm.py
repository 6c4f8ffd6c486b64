"""A prefix-LM: PREFIX learned tokens (an image's, a prompt's) prepended to
the sequence, seen both ways among themselves, every later token causal
over the prefix and the tokens before it (PaliGemma's and GIT's mask), as a
boolean attn_mask to SDPA; values wider than queries and keys."""
import torch
import torch.nn as nn
import torch.nn.functional as F

HEADS, DIM_QK, DIM_V, PREFIX, DIM = 2, 16, 24, 8, 32


class Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.qk = nn.Linear(DIM, 2 * HEADS * DIM_QK)
        self.v = nn.Linear(DIM, HEADS * DIM_V)
        self.out = nn.Linear(HEADS * DIM_V, DIM)

    def forward(self, x, mask):
        b, t, _ = x.shape
        q, k = self.qk(x).view(b, t, 2, HEADS, DIM_QK).permute(2, 0, 3, 1, 4)
        v = self.v(x).view(b, t, HEADS, DIM_V).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(o.transpose(1, 2).reshape(b, t, -1))


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.prefix = nn.Parameter(torch.randn(1, PREFIX, DIM))
        self.layers = nn.ModuleList(Layer() for _ in range(2))

    def forward(self, x):
        x = torch.cat([self.prefix.expand(x.shape[0], -1, -1), x], dim=1)
        t = x.shape[1]
        i = torch.arange(t)
        mask = (i[None, :] <= i[:, None]) | ((i[:, None] < PREFIX) & (i[None, :] < PREFIX))
        for layer in self.layers:
            x = x + layer(x, mask)
        return x


def build_model():
    return Model()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, DIM),)
