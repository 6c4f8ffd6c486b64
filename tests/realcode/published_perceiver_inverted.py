"""perceiver-pytorch 0.11.0 with ``inverted_cross_attn=True`` and no
Fourier features, on a 1-D input of N tokens: 2 blocks, each a
cross-attention from 16 learned latents (1 head of 16) to the N tokens
whose softmax runs over the latents (``sim.softmax(dim = -2)``, then an
l1 norm over the tokens, then ``einsum('b i j, b j d -> b i d', attn, v)``:
perceiver_pytorch.py, Attention.forward), and a self-attention among the
latents (2 heads of 16)."""
import torch

from published_support import require

perceiver = require("perceiver_pytorch")

LATENTS, CROSS_HEADS, LATENT_HEADS, DIM_HEAD, DEPTH = 16, 1, 2, 16, 2


def build_model():
    return perceiver.Perceiver(num_freq_bands=4, depth=DEPTH, max_freq=10., input_channels=3,
                               input_axis=1, num_latents=LATENTS, latent_dim=32,
                               cross_heads=CROSS_HEADS, latent_heads=LATENT_HEADS,
                               cross_dim_head=DIM_HEAD, latent_dim_head=DIM_HEAD, num_classes=10,
                               inverted_cross_attn=True, fourier_encode_data=False)


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, 3),)
