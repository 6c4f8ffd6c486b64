"""halonet-pytorch 0.0.5: 2 residual HaloAttention layers (dim 32, 2 heads
of 16, blocks of 4×4, halo 1) on an image strip 4 pixels high and N wide:
one row of N/4 blocks (halonet_pytorch.py, HaloAttention.forward):

    q_inp = rearrange(x, 'b c (h p1) (w p2) -> (b h w) (p1 p2) c')      # 16 queries a block
    kv_inp = F.unfold(x, kernel_size=block + halo * 2, stride=block, padding=halo)  # 6×6 keys
    q, k, v = map(lambda t: rearrange(t, 'b n (h d) -> (b h) n d', h=heads), (q, k, v))
    mask = F.unfold(torch.ones(1, 1, h, w), ...); sim.masked_fill_(~mask.bool(), -max)

Each block's queries meet the 6×6 window around it less the keys that
fall outside the image (the zero padding, masked)."""
import torch
from torch import nn

from published_support import require

halonet = require("halonet_pytorch")

HEADS, DIM_HEAD, DEPTH, DIM, BLOCK = 2, 16, 2, 32, 4


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([
            halonet.HaloAttention(dim=DIM, block_size=BLOCK, halo_size=1, dim_head=DIM_HEAD,
                                  heads=HEADS) for _ in range(DEPTH)])

    def forward(self, x):
        for layer in self.layers:
            x = x + layer(x)
        return x


def build_model():
    return Net()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, DIM, BLOCK, seq_len),)
