"""The Sparse Transformer's factorized attention (Child et al., 2019), written
with reshapes rather than masks: the sequence as N/L rows of L; row
attention within each row (a causal block of L), column attention down
each column (every L-th token, causally: the strided pattern), the two
heads' outputs concatenated."""
import torch, torch.nn as nn, torch.nn.functional as F
DIM, HEADS, L = 32, 2, 8
DH = DIM // HEADS

def attend(q, k, v):
    n = q.shape[-2]
    s = q @ k.transpose(-1, -2) / DH ** 0.5
    mask = torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1)
    return s.masked_fill(mask, float("-inf")).softmax(-1) @ v

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.out = nn.Linear(2 * DIM, DIM)
    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, HEADS, DH).permute(2, 0, 3, 1, 4)  # b h n d
        rows = [t.reshape(b, HEADS, n // L, L, DH) for t in (q, k, v)]
        row_out = attend(*rows).reshape(b, HEADS, n, DH)
        cols = [t.reshape(b, HEADS, n // L, L, DH).transpose(2, 3) for t in (q, k, v)]
        col_out = attend(*cols).transpose(2, 3).reshape(b, HEADS, n, DH)
        out = torch.cat([row_out, col_out], -1).transpose(1, 2).reshape(b, n, 2 * DIM)
        return self.out(out)

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
