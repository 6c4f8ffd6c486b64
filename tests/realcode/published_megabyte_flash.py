"""MEGABYTE-pytorch 0.3.6 with flash_attn=True: two stages of 2 layers, 2
heads of 16, patches of 8.  Each stage prepends a start token and runs
SDPA with ``is_causal=True`` (attend.py, Attend.flash_attn): the global
stage over the ceil(N/8) patches + 1; the local stage over each patch's 8
tokens + 1, the patches folded into the batch (megabyte.py: ``'b m n d ->
(b m) n d'``)."""
import torch

from published_support import require

megabyte = require("MEGABYTE_pytorch")

PATCH, HEADS, DIM_HEAD, DEPTH = 8, 2, 16, (2, 2)


def build_model():
    return megabyte.MEGABYTE(num_tokens=64, dim=(32, 32), depth=DEPTH, max_seq_len=(64, PATCH),
                             dim_head=DIM_HEAD, heads=HEADS, flash_attn=True)


def example_inputs(seq_len, batch=1):
    return (torch.randint(1, 64, (batch, seq_len)),)
