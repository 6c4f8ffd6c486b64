"""Local attention over a sliding window with `unfold` (the seed's pattern), 2 layers."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

WINDOW = 17


def local_attention(Q, K, V, window_size):
    batch_size, num_heads, seq_len, d_k = Q.size()
    padded_K = F.pad(K, (0, 0, window_size // 2, window_size // 2))
    padded_V = F.pad(V, (0, 0, window_size // 2, window_size // 2))
    K_windows = padded_K.unfold(2, window_size, 1)
    V_windows = padded_V.unfold(2, window_size, 1)
    attention_scores = torch.matmul(Q.unsqueeze(3), K_windows)
    attention_scores = attention_scores / math.sqrt(d_k)
    attention_weights = F.softmax(attention_scores, dim=-1)
    return torch.matmul(attention_weights, V_windows.transpose(-2, -1)).squeeze(3)


class LocalSelfAttention(nn.Module):
    def __init__(self, d_model=64, heads=4, window=WINDOW):
        super().__init__()
        self.heads, self.window = heads, window
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x):
        b, n, e = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, e // self.heads).permute(2, 0, 3, 1, 4)
        y = local_attention(q, k, v, self.window)
        return x + self.out(y.transpose(1, 2).reshape(b, n, e))


def build_model():
    return nn.Sequential(LocalSelfAttention(), LocalSelfAttention())


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, 64),)
