"""reformer-pytorch 1.4.4: a causal ReformerLM of 2 layers of 2 heads of
16 whose ``full_attn_thres`` is above N, so every layer takes its full
attention over shared query-keys (reformer_pytorch.py, FullQKAttention):

    dot = torch.einsum('bie,bje->bij', q, qk) * (dim ** -0.5)
    i = torch.arange(t); dot[:, i, i] = TOKEN_SELF_ATTN_VALUE      # -5e4
    i, j = torch.triu_indices(t, t, 1); dot[:, i, j] = masked_value  # causal

The masks are written into the scores by index assignment.  A query
does not attend to its own key (its score -5e4, a weight that underflows
beside the earlier keys'), except the first, whose every score is pushed
down and whose own is the largest: N(N-1)/2 + 1 pairs per head."""
import torch

from published_support import require

reformer = require("reformer_pytorch")

HEADS, DIM_HEAD, DEPTH = 2, 16, 2


def build_model():
    return reformer.ReformerLM(num_tokens=64, dim=32, depth=DEPTH, max_seq_len=1024, heads=HEADS,
                               dim_head=DIM_HEAD, bucket_size=8, n_hashes=2, causal=True,
                               ff_chunks=1, full_attn_thres=1024)


def example_inputs(seq_len, batch=1):
    return (torch.randint(0, 64, (batch, seq_len)),)


def pairs(n):
    return n * (n - 1) // 2 + 1
