"""vit-pytorch 1.26.14, one stage of Twins-SVT (vit_pytorch/twins_svt.py,
Transformer(dim=16, depth=1, local_patch_size=2, global_k=2), its default 8
heads of 64): the projections are 1×1 convolutions (``to_q``, twins_svt.py:94),
and the local attention folds the heads into the batch with the windows
(``'(b x y) ... -> (b h) (p1 p2) d'``, twins_svt.py:109,112).

A feature map 4 high and 2N wide: 8N tokens.  Local attention: windows of
2×2, each query meets its window's 4 keys.  Global attention: keys from a
2×2 convolution of stride 2, 2N of them, every query meets all."""
import torch

from published_vit_support import vit_module

HEADS, DIM_HEAD = 8, 64


def build_model():
    return vit_module("twins_svt").Transformer(dim=16, depth=1, local_patch_size=2, global_k=2)


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, 16, 4, 2 * seq_len),)
