"""flash-linear-attention: naive_stickbreaking_attn
(fla/ops/stickbreaking_attn/naive.py), in 2 pre-norm layers of 2 heads of 16
(dim 32).

Stick-breaking attention: z = Q·Kᵀ·scale; query i gives key j < i the weight
sigmoid(z_ij)·Π_{j<l<i}(1 − sigmoid(z_il)), computed in log space with
``F.logsigmoid`` and a reversed cumulative sum over the keys, masked to the
keys before the query (not its own), exp'd and applied to V: no softmax.
"""
from published_support import HeadsAround, Stack, fla_naive, tokens

naive = fla_naive("stickbreaking_attn")


def build_model():
    return Stack(lambda: HeadsAround(naive.naive_stickbreaking_attn, dim=32, heads=2,
                                     dim_head=16, layout="bnhd"), dim=32, depth=2)


def example_inputs(seq_len, batch=1):
    return tokens(seq_len, batch)
