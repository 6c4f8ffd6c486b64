"""vit-pytorch 1.26.14, CaiT (vit_pytorch/cait.py): talking heads, a learned
heads × heads matrix contracting the heads axis of the scores before the
softmax and of the weights after it (einsum 'b h i j, h g -> b g i j',
cait.py:94,99), then class attention: the class token attends to itself and
the patches (cait.py:86, context = cat(x, patches)).

A strip one patch (4 px) high and N patches wide: N patch tokens (the
positional table of 16² patches is sliced to N, so N <= 256).  dim 32,
2 patch layers and 2 class layers of 2 heads of 16."""
import torch

from published_vit_support import vit_module

PATCH = 4


def build_model():
    return vit_module("cait").CaiT(image_size=64, patch_size=PATCH, num_classes=10, dim=32,
                                   depth=2, cls_depth=2, heads=2, mlp_dim=64, dim_head=16)


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, 3, PATCH, PATCH * seq_len),)
