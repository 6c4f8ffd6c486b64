"""vit-pytorch 1.26.14, CCT (vit_pytorch/cct.py) with sequence pooling: a
learned vector (attention_pool = Linear(dim, 1), cct.py:239) scores each
token, a softmax over the tokens, and the tokens summed with those weights
(einsum 'b n, b n d -> b d', cct.py:287-288).

No positional embedding (a table is added whole, which would fix the
length).  A convolutional tokenizer (3×3, stride 1, then a max pool of
stride 2) over an image 4 px high and 2N wide gives 2 × N = 2N tokens
(img_size (4, 4) keeps the pad-to-length branch, cct.py:269, inactive for
N >= 2).  dim 32, 2 layers of 2 heads of 16."""
import torch

from published_vit_support import vit_module


def build_model():
    return vit_module("cct").CCT(img_size=(4, 4), embedding_dim=32, n_conv_layers=1,
                                 kernel_size=3, stride=1, padding=1, num_layers=2, num_heads=2,
                                 mlp_ratio=2, num_classes=10, positional_embedding="none")


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, 3, 4, 2 * seq_len),)
