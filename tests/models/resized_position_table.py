"""Windows of 4 over a padded sequence, then attention over all N with a
relative-position bias from a table built for 16 tokens and resized to the
length: segment-anything's ViTDet blocks, in one dimension
(segment_anything/modeling/image_encoder.py, ``window_partition`` and
``get_rel_pos``).  The table's length is computed as a Python int,
``int(2 * n - 1)``; the table is interpolated at every length but 16."""
import torch
import torch.nn as nn
import torch.nn.functional as F

HEADS, DIM_HEAD, WINDOW, TABLE_LEN = 2, 16, 4, 16
DIM = HEADS * DIM_HEAD


def relative_bias(table, n):
    rows = int(2 * n - 1)
    if table.shape[0] != rows:
        table = F.interpolate(table.t()[None], size=rows, mode="linear")[0].t()
    positions = torch.arange(n, dtype=int)  # int as a dtype: the name keeps its meaning
    offsets = positions[:, None] - positions[None, :] + (n - 1)
    return table[offsets].permute(2, 0, 1)  # heads, queries, keys


class Attention(nn.Module):
    def __init__(self, table_len=None):
        super().__init__()
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.proj = nn.Linear(DIM, DIM)
        self.table = nn.Parameter(torch.randn(2 * table_len - 1, HEADS)) if table_len else None

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, HEADS, DIM_HEAD).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-2, -1) * DIM_HEAD ** -0.5
        if self.table is not None:
            scores = scores + relative_bias(self.table, n)
        out = scores.softmax(-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, DIM))


class WindowBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = Attention()

    def forward(self, x):
        b, n, c = x.shape
        pad = (WINDOW - n % WINDOW) % WINDOW
        if pad > 0:
            x = F.pad(x, (0, 0, 0, pad))
        windows = x.reshape(b * (n + pad) // WINDOW, WINDOW, c)
        out = self.attn(windows).reshape(b, n + pad, c)
        return out[:, :n] if pad > 0 else out


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.local = WindowBlock()
        self.attn = Attention(TABLE_LEN)

    def forward(self, x):
        x = x + self.local(x)
        return x + self.attn(x)


def build_model():
    return Model()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, DIM),)
