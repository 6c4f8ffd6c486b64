"""flash-linear-attention: naive_retention (fla/ops/retention/naive.py), in
2 pre-norm layers of 2 heads of 16 (dim 32).

RetNet's parallel form: scores Q·Kᵀ / sqrt(d) multiplied by a decay
D[i, j] = gamma_h ** (i - j) for i >= j and 0 above the diagonal, with
gamma_h = 1 - 2 ** (-5 - h) per head, no softmax, applied to V; the three
factors go through one einsum ('bhqd,bhkd,hqk->bhqk'), which lays the
scores out with a trailing axis of one.  Causal, N × N work as written.
The decay is built from ``range(seq_len)``, a Python range over N: the
trace holds at the traced length only.
"""
from torch import nn

from published_support import Stack, fla_naive, tokens

naive = fla_naive("retention")


class RetentionHeads(nn.Module):
    def __init__(self, dim=32, heads=2, dim_head=16):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.to_qkv(x).view(b, n, 3, self.heads, self.dim_head).unbind(2)
        out = naive.naive_retention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


def build_model():
    return Stack(RetentionHeads, dim=32, depth=2)


def example_inputs(seq_len, batch=1):
    return tokens(seq_len, batch)
