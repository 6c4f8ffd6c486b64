"""vit-pytorch 1.26.14, ViT with a PatchMerger (vit_pytorch/vit_with_patch_merger.py):
after the first layer, 8 learned queries (an nn.Parameter, line 25) attend
over the N normed tokens, which are keys and values at once
(matmul(queries, xᵀ), softmax over the tokens, @ x: lines 29-31), and the
second layer runs on those 8 tokens.

A strip one patch (4 px) high and N patches wide: N tokens, no class token
(the positional table of 1024 patches is sliced to N).  dim 32, 2 layers of
2 heads of 16."""
import torch

from published_vit_support import vit_module

PATCH, MAX_PATCHES = 4, 1024


def build_model():
    return vit_module("vit_with_patch_merger").ViT(
        image_size=(PATCH, PATCH * MAX_PATCHES), patch_size=PATCH, num_classes=10, dim=32,
        depth=2, heads=2, mlp_dim=64, dim_head=16, patch_merge_layer=1,
        patch_merge_num_tokens=8)


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, 3, PATCH, PATCH * seq_len),)
