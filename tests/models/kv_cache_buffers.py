"""A decoder in the style of reference inference code (Meta's Llama
model.py): keys and values written in place into cache buffers registered
on the module (``cache_k[:b, :n] = k``), then read back from them
(``keys = cache_k[:b, :n]``), shared by pairs of query heads (GQA), an
additive causal mask (triu of -inf) and a softmax over the keys."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

DIM, HEADS, KV_HEADS, DIM_QK, DIM_V = 64, 4, 2, 16, 24
MAX_BATCH, MAX_LEN = 4, 1024


class CachedAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.wq = nn.Linear(DIM, HEADS * DIM_QK, bias=False)
        self.wk = nn.Linear(DIM, KV_HEADS * DIM_QK, bias=False)
        self.wv = nn.Linear(DIM, KV_HEADS * DIM_V, bias=False)
        self.wo = nn.Linear(HEADS * DIM_V, DIM, bias=False)
        self.register_buffer("cache_k", torch.zeros(MAX_BATCH, MAX_LEN, KV_HEADS, DIM_QK),
                             persistent=False)
        self.register_buffer("cache_v", torch.zeros(MAX_BATCH, MAX_LEN, KV_HEADS, DIM_V),
                             persistent=False)

    def forward(self, x, mask):
        b, n, _ = x.shape
        q = self.wq(x).view(b, n, HEADS, DIM_QK)
        self.cache_k[:b, :n] = self.wk(x).view(b, n, KV_HEADS, DIM_QK)
        self.cache_v[:b, :n] = self.wv(x).view(b, n, KV_HEADS, DIM_V)
        keys = self.cache_k[:b, :n].repeat_interleave(HEADS // KV_HEADS, dim=2)
        values = self.cache_v[:b, :n].repeat_interleave(HEADS // KV_HEADS, dim=2)
        q, keys, values = q.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2)
        scores = q @ keys.transpose(2, 3) / math.sqrt(DIM_QK) + mask
        out = F.softmax(scores.float(), dim=-1).type_as(q) @ values
        return self.wo(out.transpose(1, 2).reshape(b, n, HEADS * DIM_V))


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(256, DIM)
        self.layers = nn.ModuleList(CachedAttention() for _ in range(2))

    @torch.inference_mode()
    def forward(self, tokens):
        n = tokens.shape[1]
        h = self.embed(tokens)
        mask = torch.triu(torch.full((n, n), float("-inf"), device=tokens.device), diagonal=1)
        for layer in self.layers:
            h = h + layer(h, mask)
        return h


def build_model():
    return Model()


def example_inputs(seq_len, batch=1):
    return (torch.randint(0, 256, (batch, seq_len)),)
