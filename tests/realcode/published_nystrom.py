"""nystrom-attention (lucidrains): Nystromformer, 2 layers of 2 heads of 16
(dim 32), 16 landmarks.

What it computes (nystrom_attention/nystrom_attention.py): the sequence is
padded to a multiple of the landmarks, queries and keys are averaged over
16 equal segments (the landmarks), and three softmaxes are taken: queries
against landmark keys (N × 16), landmark queries against landmark keys
(16 × 16, inverted by Newton iterations) and landmark queries against all
keys (16 × N).  No N × N matrix.
"""
import torch

from published_support import require

nystrom_attention = require("nystrom_attention")

LANDMARKS = 16


def build_model():
    return nystrom_attention.Nystromformer(dim=32, dim_head=16, heads=2, depth=2,
                                           num_landmarks=LANDMARKS, pinv_iterations=6)


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, 32),)
