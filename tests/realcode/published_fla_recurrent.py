"""flash-linear-attention: naive_recurrent_linear_attn (fla/ops/linear_attn/naive.py),
in 2 pre-norm layers of 2 heads of 16 (dim 32).

Causal linear attention as a recurrence: a Python loop over the N
positions, S += k_t ⊗ v_t, o_t = S · q_t (no feature map, no normalizer).
"""
from published_support import HeadsAround, Stack, fla_linear_attn_naive, tokens

naive = fla_linear_attn_naive()


def build_model():
    return Stack(lambda: HeadsAround(naive.naive_recurrent_linear_attn, dim=32, heads=2,
                                     dim_head=16, layout="bnhd"), dim=32, depth=2)


def example_inputs(seq_len, batch=1):
    return tokens(seq_len, batch)
