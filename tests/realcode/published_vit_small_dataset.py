"""vit-pytorch 1.26.14, ViT for small datasets (vit_pytorch/vit_for_small_dataset.py):
locality self-attention, a learned temperature and the diagonal masked
(``mask = torch.eye(n, dtype=torch.bool)``, ``dots.masked_fill(mask,
-max)``): each token attends to every token but itself.  Shifted patch
tokenization in front.

A strip one patch (4 px) high and N patches wide, and a class token: N + 1
tokens (the positional table of 16² + 1 is sliced to N + 1, so N <= 256).
dim 32, 2 layers of 2 heads of 16."""
import torch

from published_vit_support import vit_module

PATCH = 4


def build_model():
    return vit_module("vit_for_small_dataset").ViT(
        image_size=64, patch_size=PATCH, num_classes=10, dim=32, depth=2, heads=2,
        mlp_dim=64, dim_head=16)


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, 3, PATCH, PATCH * seq_len),)
