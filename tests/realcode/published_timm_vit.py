"""timm: a tiny VisionTransformer built from arguments (no pretrained weights):
patches of 16, dim 32, 2 blocks of 2 heads of 16, a class token.

The image is one patch high and N patches wide, so N is the number of
patches and the attention runs over N + 1 tokens (dense, bidirectional,
F.scaled_dot_product_attention since timm's fused_attn is on by default).
"""
import torch

from published_support import import_timm

timm = import_timm()

PATCH = 16


def build_model():
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=(PATCH, PATCH * 64), patch_size=PATCH, embed_dim=32,
                             depth=2, num_heads=2, mlp_ratio=2.0, num_classes=10,
                             dynamic_img_size=True)


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, 3, PATCH, PATCH * seq_len),)
