"""timm: a tiny Cait built from arguments (no pretrained weights): patches
of 16, dim 32, 2 blocks of talking-heads attention of 2 heads of 16, then
1 block of class attention.  Talking heads (timm/models/cait.py,
TalkingHeadAttn.forward) mix the scores across heads before the softmax
and the weights after it, each with a Linear(heads, heads) that has a
bias:

    attn = self.proj_l(attn.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    attn = attn.softmax(dim=-1)
    attn = self.proj_w(attn.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

The image is one patch high and 64 patches wide (its size is fixed: the
model is traced at N = 64); the class token attends to the 64 patches and
itself."""
import torch

from published_support import import_timm

timm = import_timm()

PATCH, HEADS, DIM_HEAD, DEPTH, PATCHES = 16, 2, 16, 2, 64


def build_model():
    from timm.models.cait import Cait

    return Cait(img_size=(PATCH, PATCH * PATCHES), patch_size=PATCH, embed_dim=HEADS * DIM_HEAD,
                depth=DEPTH, num_heads=HEADS, depth_token_only=1, num_classes=10)


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, 3, PATCH, PATCH * seq_len),)
