"""Local attention as a banded mask on dense scores: causal window of 6
(query i sees keys i-5..i), and a symmetric band |i-j| <= 3. 4 heads of 8."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class Banded(nn.Module):
    def __init__(self, causal):
        super().__init__()
        self.causal = causal

    def forward(self, x):
        b, n, e = x.shape
        q = k = v = x.view(b, n, 4, e // 4).transpose(1, 2)
        i = torch.arange(n, device=x.device).view(n, 1)
        j = torch.arange(n, device=x.device).view(1, n)
        if self.causal:
            keep = (j <= i) & (i - j < 6)
        else:
            keep = (i - j).abs() <= 3
        bias = torch.zeros(n, n, device=x.device).masked_fill(~keep, float("-inf"))
        scores = q @ k.transpose(-1, -2) * 0.35 + bias
        return (F.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(b, n, e)


def build_model():
    return nn.Sequential(Banded(causal=True), Banded(causal=False))


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, 32),)
