"""flash-linear-attention: naive_parallel_simple_gla
(fla/ops/simple_gla/naive.py), in 2 pre-norm layers of 2 heads of 16 (dim
32), its gate g = logsigmoid(x·W_g), one per head and position.

The parallel form of gated linear attention with a scalar gate: scores
Q·Kᵀ · scale multiplied by D = exp(cumsum(g)_i - cumsum(g)_j) kept on and
below the diagonal (tril), no softmax, applied to V: causal, N × N work as
written; the input's gate weighs the pairs and chooses none.
"""
import torch
import torch.nn.functional as F
from torch import nn

from published_support import Stack, fla_naive, tokens

naive = fla_naive("simple_gla")


class GatedHeads(nn.Module):
    def __init__(self, dim=32, heads=2, dim_head=16):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_g = nn.Linear(dim, heads, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.to_qkv(x).view(b, n, 3, self.heads, self.dim_head).unbind(2)
        out, _ = naive.naive_parallel_simple_gla(q, k, v, F.logsigmoid(self.to_g(x)))
        return self.to_out(out.reshape(b, n, -1))


def build_model():
    return Stack(GatedHeads, dim=32, depth=2)


def example_inputs(seq_len, batch=1):
    return tokens(seq_len, batch)
