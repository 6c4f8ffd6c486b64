"""flash-linear-attention: naive_parallel_rebased (fla/ops/rebased/naive.py),
in 2 pre-norm layers of 2 heads of 16 (dim 32).

The parallel form of ReBased: scores (Q·Kᵀ / 4)² (no softmax), masked causal
by masked_fill with 0, applied to V and normalized by their row sums.
"""
from published_support import HeadsAround, Stack, fla_naive, tokens

naive = fla_naive("rebased")


def build_model():
    return Stack(lambda: HeadsAround(naive.naive_parallel_rebased, dim=32, heads=2, dim_head=16,
                                     layout="bhnd"), dim=32, depth=2)


def example_inputs(seq_len, batch=1):
    return tokens(seq_len, batch)
