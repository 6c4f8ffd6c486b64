"""flash-linear-attention: naive_chunk_linear_attn (fla/ops/linear_attn/naive.py),
the reference its Triton kernels are tested against, in 2 pre-norm layers
of 2 heads of 16 (dim 32).

Causal linear attention without a feature map or normalizer, in chunks of
64 (N a multiple of 64): the state kᵀv summed over earlier chunks (cumsum),
plus causal q·kᵀ within the chunk.
"""
from published_support import HeadsAround, Stack, fla_linear_attn_naive, tokens

naive = fla_linear_attn_naive()

CHUNK = 64


def build_model():
    return Stack(lambda: HeadsAround(naive.naive_chunk_linear_attn, dim=32, heads=2, dim_head=16,
                                     layout="bnhd"), dim=32, depth=2)


def example_inputs(seq_len, batch=1):
    return tokens(seq_len, batch)
