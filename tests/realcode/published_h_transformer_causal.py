"""h-transformer-1d 0.1.9, causal: hierarchical attention with blocks of
16, 2 layers of 2 heads of 16 (h_transformer_1d.py, HAttention1D).  The
sequence is padded to a power of two L; at the finest level each block of
16 queries attends causally to its own 16 keys (a 16×16 triangle, one mask
for every block); at each coarser level l (keys and queries averaged over
2^l tokens) the odd blocks attend to their left sibling block, all 16 of
its coarse keys.  The levels' count is computed with math.log2 of the
length: the model runs at one length per trace."""
import math

import torch

from published_support import require

h_transformer = require("h_transformer_1d")

BLOCK, HEADS, DIM_HEAD, DEPTH = 16, 2, 16, 2


def build_model():
    return h_transformer.HTransformer1D(num_tokens=64, dim=32, depth=DEPTH, max_seq_len=1024,
                                        causal=True, heads=HEADS, dim_head=DIM_HEAD,
                                        block_size=BLOCK)


def example_inputs(seq_len, batch=1):
    return (torch.randint(0, 64, (batch, seq_len)),)


def pairs(n: int) -> int:
    """(query, key) pairs of one layer and head, from the source above."""
    padded = 2 ** math.ceil(math.log2(n))
    levels = int(math.log2(padded // BLOCK)) - 1
    finest = (padded // BLOCK) * BLOCK * (BLOCK + 1) // 2
    return finest + sum((padded >> level) // 2 * BLOCK for level in range(1, levels + 1))
