"""A causal attention whose sliding-window mask is built by a Python loop
over the positions, as litgpt builds its sliding-window mask
(``for i in range(T): mask[i, max(0, i - w + 1): i + 1] = 0``): the loop
fixes N while tracing, though the attention itself is a plain window."""
import torch
import torch.nn as nn
import torch.nn.functional as F

DIM, HEADS, WINDOW, LAYERS = 32, 2, 16, 2


class WindowAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.proj = nn.Linear(DIM, DIM)

    def forward(self, x):
        b, t, e = x.shape
        q, k, v = self.qkv(x).split(e, dim=2)
        q, k, v = (z.view(b, t, HEADS, e // HEADS).transpose(1, 2) for z in (q, k, v))
        mask = torch.full((t, t), float("-inf"), dtype=x.dtype, device=x.device)
        for i in range(t):
            mask[i, max(0, i - WINDOW + 1): i + 1] = 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(b, t, e))


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(64, DIM)
        self.h = nn.ModuleList([WindowAttention() for _ in range(LAYERS)])
        self.head = nn.Linear(DIM, 64, bias=False)

    def forward(self, ids):
        x = self.emb(ids)
        for block in self.h:
            x = x + block(x)
        return self.head(x)


def build_model():
    return Model()


def example_inputs(seq_len, batch=1):
    return (torch.zeros(batch, seq_len, dtype=torch.long),)
