"""lambda-networks 0.4.0: 2 residual LambdaLayers (dim 32, 4 query heads of
dim_k 16, values of 8, intra-depth u = 1, local contexts r = 5) on an image
strip 4 pixels high and N wide (lambda_networks.py, LambdaLayer.forward):

    q = rearrange(q, 'b (h k) hh ww -> b h k (hh ww)', h = h)
    k = k.softmax(dim=-1)                                  # over the 4·N positions
    λc = einsum('b u k m, b u v m -> b k v', k, v)          # one state, shared by the heads
    Yc = einsum('b h k n, b k v -> b h v n', q, λc)
    λp = self.pos_conv(v)                                   # position lambdas, a 5×5 conv
    Yp = einsum('b h k n, b k v n -> b h v n', q, λp.flatten(3))

Content lambdas are linear attention: every position summed into a
dim_k × dim_v state (no normalizer: the keys' softmax stands for it) that
the four heads of queries share."""
import torch
from torch import nn

from published_support import require

lambda_networks = require("lambda_networks")

HEADS, DIM_K, DIM, DEPTH, HEIGHT = 4, 16, 32, 2, 4
DIM_V = DIM // HEADS


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([
            lambda_networks.LambdaLayer(dim=DIM, dim_k=DIM_K, r=5, heads=HEADS, dim_out=DIM)
            for _ in range(DEPTH)])

    def forward(self, x):
        for layer in self.layers:
            x = x + layer(x)
        return x


def build_model():
    return Net()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, DIM, HEIGHT, seq_len),)
