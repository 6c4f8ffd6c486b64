"""Linear attention laid out channels first, as convolutional image models
write it (Sana, EfficientViT): queries, keys and values are (B, H, d, N),
the tokens the last axis.  The state S = V·φ(K)ᵀ (d_v × d_qk per head) is
applied from the left, S·φ(Q), so its output has a column per token; the
normalizer z·φ(Q), z = Σ φ(K) over the tokens, divides it."""
import torch
import torch.nn as nn
import torch.nn.functional as F

HEADS, DIM_QK, DIM_V = 2, 16, 24


class ChannelsFirstLinearAttention(nn.Module):
    def __init__(self, dim=48):
        super().__init__()
        self.q = nn.Conv1d(dim, HEADS * DIM_QK, 1)
        self.k = nn.Conv1d(dim, HEADS * DIM_QK, 1)
        self.v = nn.Conv1d(dim, HEADS * DIM_V, 1)
        self.out = nn.Conv1d(HEADS * DIM_V, dim, 1)

    def forward(self, x):  # (B, C, N)
        b, _, n = x.shape
        q = F.relu(self.q(x)).view(b, HEADS, DIM_QK, n)
        k = F.relu(self.k(x)).view(b, HEADS, DIM_QK, n)
        v = self.v(x).view(b, HEADS, DIM_V, n)
        state = v @ k.transpose(-1, -2)  # (B, H, d_v, d_qk)
        z = k.sum(dim=-1, keepdim=True).transpose(-1, -2)  # (B, H, 1, d_qk)
        out = (state @ q) / (z @ q + 1e-6)  # (B, H, d_v, N)
        return self.out(out.reshape(b, HEADS * DIM_V, n))


class Model(nn.Module):
    def __init__(self, dim=48):
        super().__init__()
        self.layers = nn.ModuleList(ChannelsFirstLinearAttention(dim) for _ in range(2))

    def forward(self, x):
        for layer in self.layers:
            x = x + layer(x)
        return x


def build_model():
    return Model()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, 48, seq_len),)
