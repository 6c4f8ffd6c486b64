"""Local attention over a sliding window, written with `unfold` over padded
K and V (the seed's `local_attention`, corrected: the window of keys is
multiplied without a transpose, and the window is odd so that every query
gets exactly `window` keys).  O(N·w·d) time: no N×N tensor anywhere.

    attncost analyze examples/local_attention.py --seq-len 32k
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

WINDOW = 129


def local_attention(Q, K, V, window_size):
    batch_size, num_heads, seq_len, d_k = Q.size()
    padded_K = F.pad(K, (0, 0, window_size // 2, window_size // 2))
    padded_V = F.pad(V, (0, 0, window_size // 2, window_size // 2))

    K_windows = padded_K.unfold(2, window_size, 1)  # (B, H, N, d, w)
    V_windows = padded_V.unfold(2, window_size, 1)  # (B, H, N, d, w)

    attention_scores = torch.matmul(Q.unsqueeze(3), K_windows)  # (B, H, N, 1, w)
    attention_scores = attention_scores / math.sqrt(d_k)
    attention_weights = F.softmax(attention_scores, dim=-1)

    return torch.matmul(attention_weights, V_windows.transpose(-2, -1)).squeeze(3)


class LocalSelfAttention(nn.Module):
    def __init__(self, d_model=256, heads=4, window=WINDOW):
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
    return (torch.randn(batch, seq_len, 256),)
