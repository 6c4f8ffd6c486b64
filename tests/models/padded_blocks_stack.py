"""Eight layers of attention within blocks of 16 positions, after padding
the sequence to a multiple of 32, two blocks (as Longformer pads to its
window and cuts it into half-windows).
Each layer cuts the sequence with ``view(b, p // 16, -1, ...)`` and joins it
with ``reshape(b, -1, ...)``, so the size it hands the next layer is written
``(P//16)·(P//(P//16))``: P again, written once more nested per layer.  Each
layer holds its own position, ``layer_id`` (as Longformer's attention does).
2 heads of 16."""
import torch
import torch.nn as nn
import torch.nn.functional as F

BLOCK, PAD_TO, DIM, HEADS, LAYERS = 16, 32, 32, 2, 8


class BlockLayer(nn.Module):
    def __init__(self, layer_id):
        super().__init__()
        self.layer_id = layer_id
        self.qkv = nn.Linear(DIM, 3 * DIM, bias=False)
        self.out = nn.Linear(DIM, DIM, bias=False)

    def forward(self, x):
        b, p, _ = x.shape
        qkv = self.qkv(x).view(b, p // BLOCK, -1, 3, HEADS, DIM // HEADS)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5)                # b, blocks, h, 16, d
        weights = F.softmax(q @ k.transpose(-2, -1) / 4.0, dim=-1)
        joined = (weights @ v).permute(0, 1, 3, 2, 4).reshape(b, -1, DIM)
        return self.out(joined) + x


class PaddedStack(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(64, DIM)
        self.layers = nn.ModuleList(BlockLayer(i) for i in range(LAYERS))

    def forward(self, ids):
        x = self.embed(ids)
        n = x.shape[1]
        padding = (PAD_TO - n % PAD_TO) % PAD_TO
        if padding > 0:
            x = F.pad(x, (0, 0, 0, padding))
        for layer in self.layers:
            x = layer(x)
        return x[:, :n]


def build_model():
    return PaddedStack()


def example_inputs(seq_len, batch=1):
    return (torch.arange(seq_len).remainder(64).expand(batch, seq_len),)
