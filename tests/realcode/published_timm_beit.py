"""timm: a tiny BEiT built from arguments (no pretrained weights): patches
of 8, dim 32, 2 blocks of 2 heads of 16, a relative position bias per
block over a fixed grid.

The image is 32 pixels high and 8·N wide; the model is built for 32×64
(4 × 8 patches) and checks the width (PatchEmbed's img_size assert), and its
bias table is (4·8 + 1)² entries: it runs at N = 8 only, 33 tokens with the
class token (timm/models/beit.py, gen_relative_position_index).
"""
import torch

from published_support import import_timm

timm = import_timm()

PATCH, ROWS, COLUMNS = 8, 4, 8


def build_model():
    from timm.models.beit import Beit

    return Beit(img_size=(PATCH * ROWS, PATCH * COLUMNS), patch_size=PATCH, embed_dim=32,
                depth=2, num_heads=2, use_rel_pos_bias=True, num_classes=10)


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, 3, PATCH * ROWS, PATCH * seq_len),)
