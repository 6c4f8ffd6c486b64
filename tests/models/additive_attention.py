"""Fastformer's additive attention (Wu et al., 2021): each head's learned
query vector scores every token (a projection to HEADS logits a token),
a softmax over the tokens pools them into one global query; the keys,
multiplied by it, are pooled the same way into a global key.  Written
with the tokens before the heads, (b, n, h), and the softmax over dim=1,
as attention pooling is often written; the published code lays the
logits out as (b, h, n).  Each pooling is HEADS learned queries against
N keys of the full width DIM, applied to values of DIM_HEAD."""
import torch
import torch.nn as nn

HEADS, DIM_HEAD = 2, 16
DIM = HEADS * DIM_HEAD


class AdditiveAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = nn.Linear(DIM, DIM)
        self.k = nn.Linear(DIM, DIM)
        self.q_logits = nn.Linear(DIM, HEADS)
        self.k_logits = nn.Linear(DIM, HEADS)
        self.out = nn.Linear(DIM, DIM)

    def pooled(self, logits, x):
        """(b, n, h) logits, (b, n, h, d) tokens -> (b, 1, h, d)."""
        weights = torch.softmax(logits / DIM_HEAD ** 0.5, dim=1)
        return torch.einsum("bnh,bnhd->bhd", weights, x).unsqueeze(1)

    def forward(self, x):
        b, n, _ = x.shape
        q, k = self.q(x), self.k(x)
        global_q = self.pooled(self.q_logits(q), q.view(b, n, HEADS, DIM_HEAD))
        p = k.view(b, n, HEADS, DIM_HEAD) * global_q
        global_k = self.pooled(self.k_logits(p.reshape(b, n, DIM)), p)
        u = q.view(b, n, HEADS, DIM_HEAD) * global_k
        return self.out(u.reshape(b, n, DIM)) + q


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([AdditiveAttention() for _ in range(2)])

    def forward(self, x):
        for layer in self.layers:
            x = x + layer(x)
        return x


def build_model():
    return Model()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, DIM),)
