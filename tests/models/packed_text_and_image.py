"""Text and image tokens packed into one sequence per sample, as diffusers'
Lumina2 does (transformer_lumina2.py): each sample's text length is read
from its mask (``.tolist()``), the joint length is text + N, a padding mask
is built only where the samples' lengths differ (``len(set(lengths)) > 1``),
and the joint tokens are written into a zeroed buffer.  Rotary angles come
from a cache keyed by the length (``functools.lru_cache``).  Sizes are keys
of a set and of a cache here; the attention is dense over TEXT + N."""
import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

HEADS, DIM_HEAD, TEXT = 2, 16, 8
DIM = HEADS * DIM_HEAD


@functools.lru_cache(maxsize=8)
def rotary_angles(length):
    inv_freq = 1.0 / 10000 ** (torch.arange(0, DIM_HEAD, 2) / DIM_HEAD)
    return torch.arange(length)[:, None] * inv_freq[None, :]


def rotated(x, angles):
    x1, x2 = x[..., 0::2], x[..., 1::2]
    cos, sin = angles.cos(), angles.sin()
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), -1).flatten(-2)


class JointAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.out = nn.Linear(DIM, DIM)

    def forward(self, x, mask):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, HEADS, DIM_HEAD).permute(2, 0, 3, 1, 4)
        angles = rotary_angles(n)
        q, k = rotated(q, angles), rotated(k, angles)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(b, n, DIM))


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.image_in = nn.Linear(4, DIM)
        self.layers = nn.ModuleList([JointAttention() for _ in range(2)])

    def forward(self, image, text, text_mask):
        b, n, _ = image.shape
        image = self.image_in(image)
        text_lengths = text_mask.sum(1).tolist()
        lengths = [t + n for t in text_lengths]
        joint = image.new_zeros(b, max(lengths), DIM)
        for i, (t, length) in enumerate(zip(text_lengths, lengths)):
            joint[i, :t] = text[i, :t]
            joint[i, t:length] = image[i]
        mask = None
        if len(set(lengths)) > 1:
            mask = torch.zeros(b, 1, 1, max(lengths), dtype=torch.bool)
            for i, length in enumerate(lengths):
                mask[i, ..., :length] = True
        for layer in self.layers:
            joint = joint + layer(joint, mask)
        return joint


def build_model():
    return Model()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, 4), torch.randn(batch, TEXT, DIM),
            torch.ones(batch, TEXT, dtype=torch.bool))
