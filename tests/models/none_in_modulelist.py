"""x-transformers' layout: ModuleLists that hold None.

Eight layers alternate attention and feed-forward (a period of 2); each is a
ModuleList [norms, block, residual] whose norms list holds None for the
norms it does not use, and ``skip_combines`` holds one None per layer.
Causal SDPA, 4 heads of 8, width 32.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

DIM, HEADS, DEPTH = 32, 4, 4


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(DIM, 3 * DIM, bias=False)
        self.out = nn.Linear(DIM, DIM, bias=False)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, HEADS, DIM // HEADS).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(o.transpose(1, 2).reshape(b, n, DIM))


class FeedForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.Linear(DIM, 4 * DIM)
        self.down = nn.Linear(4 * DIM, DIM)

    def forward(self, x):
        return self.down(F.gelu(self.up(x)))


class Residual(nn.Module):
    def forward(self, x, residual):
        return x + residual


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(128, DIM)
        self.layers = nn.ModuleList()
        self.skip_combines = nn.ModuleList()
        for i in range(2 * DEPTH):
            block = Attention() if i % 2 == 0 else FeedForward()
            norms = nn.ModuleList([nn.LayerNorm(DIM), None, None])
            self.layers.append(nn.ModuleList([norms, block, Residual()]))
            self.skip_combines.append(None)
        self.head = nn.Linear(DIM, 128, bias=False)

    def forward(self, ids):
        x = self.emb(ids)
        for (norms, block, residual), skip in zip(self.layers, self.skip_combines):
            pre, post_branch, post_main = norms
            out = block(pre(x))
            if post_branch is not None:
                out = post_branch(out)
            x = residual(out, x)
            if post_main is not None:
                x = post_main(x)
        return self.head(x)


def build_model():
    return Decoder()


def example_inputs(seq_len, batch=1):
    return (torch.zeros(batch, seq_len, dtype=torch.long),)
