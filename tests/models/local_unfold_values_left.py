"""Unfold-based local attention written with the value windows on the left
(``V_windowsᵀ @ weightsᵀ``), 2 heads of 16 for queries and keys, values of
24 (d_v != d_qk), window 7."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

WINDOW = 7


class Local(nn.Module):
    def __init__(self):
        super().__init__()
        self.v = nn.Linear(32, 48, bias=False)

    def forward(self, x):
        b, n, e = x.shape
        Q = K = x.view(b, n, 2, e // 2).transpose(1, 2)
        V = self.v(x).view(b, n, 2, 24).transpose(1, 2)
        pk = F.pad(K, (0, 0, WINDOW // 2, WINDOW // 2)).unfold(2, WINDOW, 1)   # b,h,n,d,w
        pv = F.pad(V, (0, 0, WINDOW // 2, WINDOW // 2)).unfold(2, WINDOW, 1)   # b,h,n,dv,w
        scores = torch.matmul(Q.unsqueeze(3), pk) / math.sqrt(e // 2)         # b,h,n,1,w
        weights = F.softmax(scores, dim=-1)
        out = torch.matmul(pv, weights.transpose(-2, -1)).squeeze(-1)         # b,h,n,dv
        return out.transpose(1, 2).reshape(b, n, 48)


def build_model():
    return Local()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, 32),)
