"""linformer (lucidrains): LinformerLM, 2 layers of 2 heads of 16 (dim 32),
seq_len 512, k = 32.

What it computes (linformer/linformer.py, LinformerSelfAttention): keys and
values are projected along the sequence by proj_k / proj_v (seq_len × k,
cut to the first N rows), so every query attends to k = 32 rows that
summarize the whole sequence: scores N × 32, never N × N.
"""
import torch

from published_support import require

linformer = require("linformer")

K = 32


def build_model():
    return linformer.LinformerLM(num_tokens=64, dim=32, seq_len=512, depth=2, heads=2,
                                 dim_head=16, k=K)


def example_inputs(seq_len, batch=1):
    return (torch.randint(0, 64, (batch, seq_len)),)
