"""timm: a tiny XCiT built from arguments (no pretrained weights): patches
of 8, dim 32, 2 blocks of 2 heads of 16, one class-attention block.

The image is 32 pixels high and 8·N wide: 4·N patch tokens.  Each block's
XCA (timm/models/xcit.py, XCA.forward) normalizes q and k along the
tokens and computes ``q @ k.transpose(-2, -1)`` over (B, heads, 16, 4·N):
a 16 × 16 matrix of the head's features, the tokens contracted, then
``attn @ v`` gives every token its mix of features; the class-attention
block is one query (the class token) over every token, through SDPA.
"""
import torch

from published_support import import_timm

timm = import_timm()

PATCH, ROWS = 8, 4


def build_model():
    from timm.models.xcit import Xcit

    return Xcit(img_size=(PATCH * ROWS, PATCH * 8), patch_size=PATCH, embed_dim=32, depth=2,
                num_heads=2, cls_attn_layers=1, num_classes=10)


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, 3, PATCH * ROWS, PATCH * seq_len),)
