"""flash-linear-attention: naive_parallel_based (fla/ops/based/naive.py), in
2 pre-norm layers of 2 heads of 16 (dim 32).

The parallel form of Based: scores a = Q·Kᵀ / 4 weighed by the Taylor
polynomial 1 + a + a²/2 (no softmax), masked causal by masked_fill with 0,
applied to V and normalized by the weights' row sums: N × N work as written.
"""
from published_support import HeadsAround, Stack, fla_naive, tokens

naive = fla_naive("based")


def build_model():
    return Stack(lambda: HeadsAround(naive.naive_parallel_based, dim=32, heads=2, dim_head=16,
                                     layout="bhnd"), dim=32, depth=2)


def example_inputs(seq_len, batch=1):
    return tokens(seq_len, batch)
