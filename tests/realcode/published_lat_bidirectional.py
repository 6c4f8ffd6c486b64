"""linear-attention-transformer 0.19.1: a LinearAttentionTransformer
encoder (not causal) of 2 layers of 4 heads of 16, 2 of them local
(windows of 16) and 2 global linear attention with no normalizer
(linear_attention_transformer.py, linear_attn):

    q = q.softmax(dim=-1); k = k.softmax(dim=-2)
    context = einsum('bhnd,bhne->bhde', k, v)
    attn = einsum('bhnd,bhde->bhne', q, context)"""
import torch

from published_support import require

lat = require("linear_attention_transformer")

HEADS, LOCAL_HEADS, DIM_HEAD, DEPTH, WINDOW = 4, 2, 16, 2, 16


def build_model():
    return lat.LinearAttentionTransformerLM(num_tokens=64, dim=32, depth=DEPTH, max_seq_len=256,
                                            heads=HEADS, dim_head=DIM_HEAD, causal=False,
                                            n_local_attn_heads=LOCAL_HEADS,
                                            local_attn_window_size=WINDOW)


def example_inputs(seq_len, batch=1):
    return (torch.randint(0, 64, (batch, seq_len)),)
