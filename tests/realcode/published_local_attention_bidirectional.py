"""local-attention (lucidrains): LocalAttention(window_size=16, causal=False,
look_backward=1, look_forward=1), in 2 pre-norm layers of 2 heads of 16
(dim 32).

What it computes (local_attention/local_attention.py): blocks of 16; a
query attends to every key of its own block, the block before and the block
after (exact_windowsize=False): 48 keys, 32 in the first and last blocks.
"""
from published_support import HeadsAround, Stack, require, tokens

local_attention = require("local_attention")

WINDOW_SIZE, LOOK_BACKWARD, LOOK_FORWARD = 16, 1, 1


def build_model():
    return Stack(lambda: HeadsAround(
        local_attention.LocalAttention(window_size=WINDOW_SIZE, causal=False,
                                       look_backward=LOOK_BACKWARD, look_forward=LOOK_FORWARD,
                                       dim=16),
        dim=32, heads=2, dim_head=16), dim=32, depth=2)


def example_inputs(seq_len, batch=1):
    return tokens(seq_len, batch)
