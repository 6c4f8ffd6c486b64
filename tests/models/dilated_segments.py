"""Dilated attention (LongNet, Ding et al., 2023), as dilated-attention-pytorch
writes it, with SDPA in place of xformers: the heads split into groups,
group i cuts the sequence into segments of SEGMENTS[i] tokens and keeps
every RATES[i]-th of each (offset i mod rate), each kept token attending
causally to the kept tokens of its segment.  einops' "b (n s)" gives the
segment count and width as two sizes of N."""
import torch, torch.nn as nn, torch.nn.functional as F
from einops import rearrange
DIM, HEADS, DIM_HEAD = 64, 4, 16
SEGMENTS, RATES = (16, 32), (1, 2)

class DilatedAttention(nn.Module):
    def __init__(self, segment_lengths=SEGMENTS, dilation_rates=RATES):
        super().__init__()
        self.segment_lengths = segment_lengths
        self.dilation_rates = dilation_rates

    def forward(self, query, key, value, is_causal=False):
        b, n, h, d = query.shape
        out = torch.zeros_like(query)
        num_groups = len(self.dilation_rates)
        group_sizes = [h // num_groups] * num_groups
        for i in range(h % num_groups):
            group_sizes[i] += 1
        for i, (g, r, s) in enumerate(zip(group_sizes, self.dilation_rates, self.segment_lengths)):
            q = rearrange(query, "b (n s) h d -> b n s h d", s=s)
            k = rearrange(key, "b (n s) h d -> b n s h d", s=s)
            v = rearrange(value, "b (n s) h d -> b n s h d", s=s)
            offset = i % r
            hmin = i * g
            hmax = (i + 1) * g
            q = q[:, :, offset::r, hmin:hmax, :]
            k = k[:, :, offset::r, hmin:hmax, :]
            v = v[:, :, offset::r, hmin:hmax, :]
            q = rearrange(q, "b n s h d -> (b n) h s d")
            k = rearrange(k, "b n s h d -> (b n) h s d")
            v = rearrange(v, "b n s h d -> (b n) h s d")
            x = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
            x = rearrange(x, "(b n) h s d -> b n s h d", b=b)
            x = x / x.sum(dim=(1, 2), keepdim=True)
            out = rearrange(out, "b (n s) h d -> b n s h d", s=s)
            out[:, :, offset::r, hmin:hmax, :] += x
            out = rearrange(out, "b n s h d -> b (n s) h d", s=s)
        return out / num_groups

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.attn = DilatedAttention()
        self.out = nn.Linear(DIM, DIM)
    def forward(self, x):
        q, k, v = rearrange(self.qkv(x), "b n (t h d) -> t b n h d", t=3, h=HEADS)
        return self.out(rearrange(self.attn(q, k, v, is_causal=True), "b n h d -> b n (h d)"))

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([Block() for _ in range(2)])
    def forward(self, x):
        for l in self.layers:
            x = x + l(x)
        return x

def build_model(): return Model()
def example_inputs(seq_len, batch=1): return (torch.randn(batch, seq_len, DIM),)
