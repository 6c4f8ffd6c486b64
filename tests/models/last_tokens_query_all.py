"""Perceiver AR (Hawthorne et al., 2022), as lucidrains' perceiver-ar-pytorch
writes it: the last M tokens are the queries of one cross-attention over
all N (the prefix's keys, then their own), under a causal mask offset to
the keys' end (`triu(j - i + 1)`); M latent tokens then attend causally
among themselves.  Query m of M meets the N - M prefix keys and m + 1 of
its own."""
import torch, torch.nn as nn
from einops import rearrange
DIM, HEADS, DIM_HEAD, M = 32, 2, 16, 16

class CausalPrefixAttention(nn.Module):
    def __init__(self, dim=DIM, dim_head=DIM_HEAD, heads=HEADS):
        super().__init__()
        self.scale = dim_head ** -0.5
        self.heads = heads
        inner_dim = heads * dim_head
        self.norm = nn.LayerNorm(dim)
        self.context_norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner_dim, bias=False)
        self.to_kv = nn.Linear(dim, inner_dim * 2, bias=False)
        self.to_out = nn.Linear(inner_dim, dim, bias=False)

    def forward(self, x, context):
        x = self.norm(x)
        context = self.context_norm(context)
        q = self.to_q(x)
        k_input, v_input = self.to_kv(x).chunk(2, dim=-1)
        k_context, v_context = self.to_kv(context).chunk(2, dim=-1)
        k = torch.cat((k_context, k_input), dim=1)
        v = torch.cat((v_context, v_input), dim=1)
        q, k, v = map(lambda t: rearrange(t, 'b n (h d) -> b h n d', h=self.heads), (q, k, v))
        q = q * self.scale
        sim = torch.einsum('b h i d, b h j d -> b h i j', q, k)
        i, j = sim.shape[-2:]
        causal_mask = torch.ones((i, j), device=x.device, dtype=torch.bool).triu(j - i + 1)
        sim = sim.masked_fill(causal_mask, -torch.finfo(sim.dtype).max)
        attn = sim.softmax(dim=-1)
        out = torch.einsum('b h i j, b h j d -> b h i d', attn, v)
        out = rearrange(out, 'b h n d -> b n (h d)')
        return self.to_out(out)

class CausalAttention(nn.Module):
    def __init__(self, dim=DIM, dim_head=DIM_HEAD, heads=HEADS):
        super().__init__()
        self.scale = dim_head ** -0.5
        self.heads = heads
        inner_dim = heads * dim_head
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, inner_dim * 3, bias=False)
        self.to_out = nn.Linear(inner_dim, dim, bias=False)

    def forward(self, x):
        x = self.norm(x)
        q, k, v = self.to_qkv(x).chunk(3, dim=-1)
        q, k, v = map(lambda t: rearrange(t, 'b n (h d) -> b h n d', h=self.heads), (q, k, v))
        q = q * self.scale
        sim = torch.einsum('b h i d, b h j d -> b h i j', q, k)
        i, j = sim.shape[-2:]
        causal_mask = torch.ones((i, j), device=x.device, dtype=torch.bool).triu(j - i + 1)
        sim = sim.masked_fill(causal_mask, -torch.finfo(sim.dtype).max)
        attn = sim.softmax(dim=-1)
        out = torch.einsum('b h i j, b h j d -> b h i d', attn, v)
        return self.to_out(rearrange(out, 'b h n d -> b n (h d)'))

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.cross = CausalPrefixAttention()
        self.layers = nn.ModuleList([CausalAttention() for _ in range(2)])
    def forward(self, x):
        prefix, x = x[:, :-M], x[:, -M:]
        x = self.cross(x, prefix) + x
        for l in self.layers:
            x = l(x) + x
        return x

def build_model(): return Model()
def example_inputs(seq_len, batch=1): return (torch.randn(batch, seq_len, DIM),)
