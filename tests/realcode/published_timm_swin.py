"""timm: a tiny SwinTransformer built from arguments (no pretrained weights):
patches of 4, dim 32, one stage of 2 blocks of 2 heads of 16, windows of 4×4.

The image is 8 patches high and N patches wide (N a multiple of 4): 8·N
tokens.  Block 0 attends within fixed 4×4 windows (16 tokens each); block 1
rolls the grid by 2 first and masks (an additive -100) the pairs of a window
that come from different regions of the unrolled image
(timm/models/swin_transformer.py, get_attn_mask).  The attention is unfused
(q @ kᵀ + relative-position bias, softmax, @ v): timm's fused_attn is
experimental for Swin and off by default.
"""
import torch

from published_support import import_timm

timm = import_timm()

PATCH, WINDOW, ROWS = 4, 4, 8


def build_model():
    from timm.models.swin_transformer import SwinTransformer

    return SwinTransformer(img_size=(PATCH * ROWS, PATCH * 16), patch_size=PATCH, embed_dim=32,
                           depths=(2,), num_heads=(2,), window_size=WINDOW, mlp_ratio=2.0,
                           num_classes=10, dynamic_img_size=True)


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, 3, PATCH * ROWS, PATCH * seq_len),)
