"""vit-pytorch 1.26.14, DeepViT (vit_pytorch/deepvit.py): re-attention, the
softmax weights mixed across heads by a learned heads × heads matrix
(einsum 'b h i j, h g -> b g i j', deepvit.py:62) and normalised over the
heads (a LayerNorm(heads) between two rearranges, deepvit.py:63) before ·V.

A strip one patch (4 px) high and N patches wide, and a class token: N + 1
tokens (the positional table of 16² + 1 is sliced to N + 1, so N <= 256).
dim 32, 2 layers of 2 heads of 16."""
import torch

from published_vit_support import vit_module

PATCH = 4


def build_model():
    return vit_module("deepvit").DeepViT(image_size=64, patch_size=PATCH, num_classes=10, dim=32,
                                         depth=2, heads=2, mlp_dim=64, dim_head=16)


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, 3, PATCH, PATCH * seq_len),)
