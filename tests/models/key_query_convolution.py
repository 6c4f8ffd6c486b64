"""Multi-Token Attention (Golovneva et al., 2025): each head's scores, the
future zeroed, convolved over (queries, keys) by a learned CQ × CK kernel
(padded to stay causal along the queries), masked to -inf above the
diagonal, a softmax, then a 1×1 convolution mixing the heads in two groups,
then ·V.  The key-query convolution is work on every score: CQ·CK
multiply-adds a pair and head."""
import torch, torch.nn as nn, torch.nn.functional as F
DIM, HEADS, CQ, CK = 32, 4, 3, 5
DH = DIM // HEADS

class MTA(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.kq_conv = nn.Conv2d(HEADS, HEADS, (CQ, CK), groups=HEADS, bias=False)
        self.head_conv = nn.Conv2d(HEADS, HEADS, 1, groups=2, bias=False)
        self.out = nn.Linear(DIM, DIM)
    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, HEADS, DH).permute(2, 0, 3, 1, 4)
        a = q @ k.transpose(-1, -2) / DH ** 0.5
        causal = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
        a = a.masked_fill(~causal, 0.0)
        a = F.pad(a, (CK // 2, CK // 2, CQ - 1, 0))
        a = self.kq_conv(a)
        a = a.masked_fill(~causal, float("-inf"))
        w = a.softmax(-1)
        w = self.head_conv(w)
        o = w @ v
        return self.out(o.transpose(1, 2).reshape(b, n, DIM))

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([MTA() for _ in range(2)])
    def forward(self, x):
        for l in self.layers:
            x = x + l(x)
        return x

def build_model(): return Model()
def example_inputs(seq_len, batch=1): return (torch.randn(batch, seq_len, DIM),)
