"""memory-efficient-attention-pytorch: memory_efficient_attention
(memory_efficient_attention.py), causal, queries in chunks of 32 and keys in
chunks of 64, in 2 pre-norm layers of 2 heads of 16 (dim 32).

Rabe & Staats' attention in chunks: q.split(32) and k.split(64) along the
sequence, a Python loop over every pair of chunks; a pair whose keys all
follow its queries is skipped; the diagonal pairs mask with a triu; scores
weighed by exp(S - max S), the sums combined across key chunks.  Exact
causal attention, computed in blocks: the pairs skipped are not computed,
those masked inside a diagonal block are.  The number of chunks is fixed by
the length: the trace holds for the lengths that cut into as many chunks.
"""
from torch import nn

from published_support import Stack, require, tokens

mea = require("memory_efficient_attention_pytorch.memory_efficient_attention")


class ChunkedHeads(nn.Module):
    def __init__(self, dim=32, heads=2, dim_head=16, causal=True):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.to_qkv(x).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = mea.memory_efficient_attention(q, k, v, causal=self.causal, q_bucket_size=32,
                                             k_bucket_size=64)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


def build_model():
    return Stack(ChunkedHeads, dim=32, depth=2)


def example_inputs(seq_len, batch=1):
    return tokens(seq_len, batch)
