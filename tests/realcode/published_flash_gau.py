"""FLASH-pytorch (lucidrains): FLASHTransformer (gated attention units), 2
layers, groups of 32, query/key dim 16, values of 64 (dim 32, expansion 2).

What it computes (flash_pytorch/flash_pytorch.py, FLASH.forward): within
each group of 32 positions, relu(Q·Kᵀ / 32)² (no softmax) applied to V,
causal: masked_fill(triu(1), 0) after the squared ReLU; across groups, a
linear attention (a state per group, summed over earlier groups).
"""
import torch

from published_support import require

flash_pytorch = require("flash_pytorch")

GROUP = 32


def build_model(causal=True):
    return flash_pytorch.FLASHTransformer(num_tokens=64, dim=32, depth=2, causal=causal,
                                          group_size=GROUP, query_key_dim=16)


def example_inputs(seq_len, batch=1):
    return (torch.randint(0, 64, (batch, seq_len)),)
