"""Fused attention with GQA and a causal mask, via F.scaled_dot_product_attention."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class GQA(nn.Module):
    def __init__(self, d_model=64, heads=8, kv_heads=2, causal=True, enable_gqa=True):
        super().__init__()
        self.h, self.kv, self.d = heads, kv_heads, d_model // heads
        self.causal, self.enable_gqa = causal, enable_gqa
        self.q = nn.Linear(d_model, heads * self.d, bias=False)
        self.kv_proj = nn.Linear(d_model, 2 * kv_heads * self.d, bias=False)
        self.o = nn.Linear(heads * self.d, d_model, bias=False)

    def forward(self, x):
        b, n, _ = x.shape
        q = self.q(x).view(b, n, self.h, self.d).transpose(1, 2)
        k, v = self.kv_proj(x).view(b, n, 2, self.kv, self.d).permute(2, 0, 3, 1, 4)
        if self.enable_gqa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, enable_gqa=True)
        else:
            rep = self.h // self.kv
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.o(y.transpose(1, 2).reshape(b, n, -1))


def build_model():
    return nn.Sequential(GQA(), GQA(causal=False, enable_gqa=False))


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, 64),)
