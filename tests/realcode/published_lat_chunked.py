"""linear-attention-transformer 0.19.1: a causal LinearAttentionTransformerLM
of 2 layers of 4 heads of 16, 2 of them local (windows of 16, one window
back) and 2 causal linear attention in chunks of 8 (``blindspot_size=8``;
linear_attention_transformer.py, causal_linear_attn):

    context = einsum('bhund,bhune->bhude', b_k, b_v); context = context.cumsum(dim = -3)
    context = F.pad(context, (0, 0, 0, 0, 1, 0)); context, _ = split_at_index(2, -1, context)
    attn = einsum('bhund,bhude,bhun->bhune', b_q, context, D_inv)

Each chunk's queries read the states of the chunks before theirs (the
cumulative sum, shifted one chunk by a pad)."""
import torch

from published_support import require

lat = require("linear_attention_transformer")

HEADS, LOCAL_HEADS, DIM_HEAD, DEPTH, WINDOW = 4, 2, 16, 2, 16


def build_model():
    return lat.LinearAttentionTransformerLM(num_tokens=64, dim=32, depth=DEPTH, max_seq_len=256,
                                            heads=HEADS, dim_head=DIM_HEAD, causal=True,
                                            blindspot_size=8, n_local_attn_heads=LOCAL_HEADS,
                                            local_attn_window_size=WINDOW)


def example_inputs(seq_len, batch=1):
    return (torch.randint(0, 64, (batch, seq_len)),)
