"""timm: a VisionTransformer of 8 blocks (dim 32, 2 heads of 16) with
``dynamic_img_size``: the position embeddings are resampled to the image's
grid, whose size the code takes as a number (timm/layers/pos_embed.py,
resample_abs_pos_embed), so the model is traced at fixed lengths and its
costs fitted in N.  Its Python reads many shapes and attributes per op
recorded.  The image is one patch high and N patches wide: N + 1 tokens."""
import torch

from published_support import import_timm

timm = import_timm()

PATCH, DEPTH = 16, 8


def build_model():
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=(PATCH, PATCH * 64), patch_size=PATCH, embed_dim=32,
                             depth=DEPTH, num_heads=2, mlp_ratio=2.0, num_classes=10,
                             dynamic_img_size=True)


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, 3, PATCH, PATCH * seq_len),)
