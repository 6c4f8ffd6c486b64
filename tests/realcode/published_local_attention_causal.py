"""local-attention (lucidrains): LocalAttention(window_size=16, causal=True,
look_backward=1), the layer its README shows, in 2 pre-norm layers of 2
heads of 16 (dim 32).

What it computes (local_attention/local_attention.py): the sequence is cut
into blocks of 16; a query attends to the whole previous block and to the
keys of its own block up to itself (exact_windowsize=False, the default):
16 + (i mod 16) + 1 keys, 17 to 32, except 1 to 16 in the first block.
The code computes 16 × 32 scores per block, linear in N.
"""
from published_support import HeadsAround, Stack, require, tokens

local_attention = require("local_attention")

WINDOW_SIZE, LOOK_BACKWARD = 16, 1


def build_model():
    return Stack(lambda: HeadsAround(
        local_attention.LocalAttention(window_size=WINDOW_SIZE, causal=True,
                                       look_backward=LOOK_BACKWARD, dim=16),
        dim=32, heads=2, dim_head=16), dim=32, depth=2)


def example_inputs(seq_len, batch=1):
    return tokens(seq_len, batch)
