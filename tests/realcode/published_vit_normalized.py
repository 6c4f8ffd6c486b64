"""vit-pytorch 1.26.14, nViT (vit_pytorch/normalized_vit.py): every weight
kept of unit norm by a parametrization (``NormLinear``: ``register_parametrization``
of an L2 norm), attention by SDPA, and a gated feed-forward whose
hidden = x·W₁ᵀ, gate = x·W₂ᵀ meet as ``silu(gate) * hidden`` before W₃: a
layer, whose weights are computed from parameters on every forward.

A strip one patch (4 px) high and N patches wide (no class token; the
positional table of 16² is sliced to N, so N <= 256).  dim 32, 2 layers of
2 heads of 16."""
import torch

from published_vit_support import vit_module

PATCH = 4


def build_model():
    return vit_module("normalized_vit").nViT(
        image_size=64, patch_size=PATCH, num_classes=10, dim=32, depth=2, heads=2,
        mlp_dim=64, dim_head=16)


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, 3, PATCH, PATCH * seq_len),)
