"""Context tokens projected, then reordered by a mask of the valid ones, as
video models put a prompt's real tokens before its padding (``text[:,
mask]`` then ``text[:, ~mask]``: sizes read from the mask's values, which
fake tensors do not have; the values kept are the projection's), then
joint attention over the N image tokens and those 8 context tokens, 2
heads of 16."""
import torch
import torch.nn as nn
import torch.nn.functional as F

HEADS, DIM_HEAD, DIM, TEXT, VALID = 2, 16, 32, 8, 5


class Joint(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.out = nn.Linear(DIM, DIM)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, HEADS, DIM_HEAD).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return x + self.out(y.transpose(1, 2).reshape(b, t, DIM))


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.project = nn.Linear(DIM, DIM)
        self.layers = nn.ModuleList(Joint() for _ in range(2))

    def forward(self, image, text, text_mask):
        text = self.project(text)
        valid = text_mask.bool()
        context = torch.cat([text[:, valid], text[:, ~valid]], dim=1)
        x = torch.cat([image, context], dim=1)
        for layer in self.layers:
            x = layer(x)
        return x[:, :image.shape[1]]


def build_model():
    return Model()


def example_inputs(seq_len, batch=1):
    mask = torch.zeros(TEXT)
    mask[:VALID] = 1
    return (torch.randn(batch, seq_len, DIM), torch.randn(batch, TEXT, DIM), mask)
