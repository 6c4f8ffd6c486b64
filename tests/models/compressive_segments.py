"""Infini-attention (Munkhdalai et al., 2024): the sequence in segments of S
tokens, a Python loop over them; in each, causal SDPA over the segment and
a retrieval from a compressive memory of the earlier segments (σ(Q)·M
over σ(Q)·z, σ = ELU + 1), mixed by a learned gate; the memory then
takes the segment's σ(K)ᵀ·V."""
import torch, torch.nn as nn, torch.nn.functional as F
DIM, HEADS, S = 64, 2, 16
DH = DIM // HEADS

class InfiniAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.beta = nn.Parameter(torch.zeros(1, HEADS, 1, 1))
        self.out = nn.Linear(DIM, DIM)
    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, HEADS, DH).permute(2, 0, 3, 1, 4)
        mem = torch.zeros(b, HEADS, DH, DH, device=x.device)
        z = torch.zeros(b, HEADS, DH, 1, device=x.device)
        outs = []
        for i in range(0, n, S):
            qs, ks, vs = q[:, :, i:i + S], k[:, :, i:i + S], v[:, :, i:i + S]
            sq, sk = F.elu(qs) + 1, F.elu(ks) + 1
            a_mem = (sq @ mem) / (sq @ z + 1e-6)
            a_dot = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True)
            g = torch.sigmoid(self.beta)
            outs.append(g * a_mem + (1 - g) * a_dot)
            mem = mem + sk.transpose(-1, -2) @ vs
            z = z + sk.sum(dim=-2, keepdim=True).transpose(-1, -2)
        o = torch.cat(outs, dim=2)
        return self.out(o.transpose(1, 2).reshape(b, n, DIM))

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([InfiniAttention() for _ in range(2)])
    def forward(self, x):
        for l in self.layers:
            x = x + l(x)
        return x

def build_model(): return Model()
def example_inputs(seq_len, batch=1): return (torch.randn(batch, seq_len, DIM),)
