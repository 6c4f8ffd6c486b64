"""perceiver-pytorch 0.11.0 on a 1-D input of N tokens with Fourier
position features: 2 blocks, each a cross-attention from 16 learned
latents (1 head of 16) to the N tokens and a self-attention among the
latents (2 heads of 16) (perceiver_pytorch.py, Perceiver.forward).  The
Fourier features are built from the input's length as a number: the model
is traced at one length."""
import torch

from published_support import require

perceiver = require("perceiver_pytorch")

LATENTS, CROSS_HEADS, LATENT_HEADS, DIM_HEAD, DEPTH = 16, 1, 2, 16, 2


def build_model():
    return perceiver.Perceiver(num_freq_bands=4, depth=DEPTH, max_freq=10., input_channels=3,
                               input_axis=1, num_latents=LATENTS, latent_dim=32,
                               cross_heads=CROSS_HEADS, latent_heads=LATENT_HEADS,
                               cross_dim_head=DIM_HEAD, latent_dim_head=DIM_HEAD, num_classes=10)


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, 3),)
