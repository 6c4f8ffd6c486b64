"""A vision encoder's position table, made for its own grid of 64 patches
and interpolated to any other (transformers' CLIP, ViT and DINOv2 write
``if num_patches == num_positions and height == width: return table``).
At N = 64 the trace takes the branch that compares the length with the
table's, then interpolates all the same (the image is not square): the
cost is the same at every N.  ``SKIP_AT_GRID`` makes the other branch
cheaper (no projection at the table's own length)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

HEADS, DIM_HEAD, POSITIONS = 2, 16, 64
DIM = HEADS * DIM_HEAD
SKIP_AT_GRID = False


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch = nn.Linear(12, DIM)
        self.table = nn.Parameter(torch.randn(POSITIONS, DIM))
        self.table_proj = nn.Linear(DIM, DIM)
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.out = nn.Linear(DIM, DIM)

    def positions(self, n, square):
        if n == POSITIONS and square:
            return self.table
        table = self.table if SKIP_AT_GRID and n == POSITIONS else self.table_proj(self.table)
        return F.interpolate(table.t()[None], size=n, mode="linear")[0].t()

    def forward(self, patches):
        b, n, _ = patches.shape
        x = self.patch(patches) + self.positions(n, square=False)
        q, k, v = self.qkv(x).reshape(b, n, 3, HEADS, DIM_HEAD).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, n, DIM))


def build_model():
    return Encoder()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, 12),)
