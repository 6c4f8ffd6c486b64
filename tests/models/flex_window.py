"""FlexAttention with a causal sliding-window block mask of 16. 4 heads of 16."""
import torch
import torch.nn as nn
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

WINDOW = 16


def sliding_window(b, h, q_idx, kv_idx):
    return (q_idx >= kv_idx) & (q_idx - kv_idx < WINDOW)


class Flex(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(64, 192)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, 4, 16).permute(2, 0, 3, 1, 4)
        mask = create_block_mask(sliding_window, None, None, n, n, device=x.device)
        return flex_attention(q, k, v, block_mask=mask)


def build_model():
    return Flex()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, 64),)
