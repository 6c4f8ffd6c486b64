"""nn.MultiheadAttention with a boolean causal attn_mask (its baddbmm path)."""
import torch, torch.nn as nn
class M(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
    def forward(self, x):
        n = x.shape[1]
        mask = torch.triu(torch.ones(n, n, dtype=torch.bool, device=x.device), diagonal=1)
        return self.attn(x, x, x, attn_mask=mask)[0]
def build_model(): return M()
def example_inputs(n, batch=1): return (torch.randn(batch, n, 32),)
