"""Each query attends to its own tokens' block summaries, as LongT5's
transient-global attention builds them (modeling_longt5.py,
``_create_global_aggregates``): every block of BLOCK tokens is summed into
one summary token through ``F.one_hot(block_ids, N // BLOCK + 1)``, ids
past the last block (none here) sent to the spare class with
``torch.tensor(N // BLOCK)``.  The number of classes grows with N, and both
calls take it as a plain number.  Attention is dense from N queries to
N // BLOCK summary keys."""
import torch
import torch.nn as nn
import torch.nn.functional as F

HEADS, DIM_HEAD, BLOCK = 2, 16, 8
DIM = HEADS * DIM_HEAD


def block_summaries(x):
    """(b, n, d) -> (b, n // BLOCK, d): each block's tokens summed."""
    n = x.shape[1]
    count = n // BLOCK
    ids = torch.arange(n, device=x.device) // BLOCK
    ids = ids.where(ids < count, torch.tensor(count, dtype=ids.dtype, device=x.device))
    one_hot = F.one_hot(ids, count + 1)[:, :-1].to(x.dtype)
    return torch.einsum("bnd,ng->bgd", x, one_hot)


class SummaryAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = nn.Linear(DIM, DIM)
        self.kv = nn.Linear(DIM, 2 * DIM)
        self.out = nn.Linear(DIM, DIM)

    def forward(self, x):
        b, n, _ = x.shape
        summaries = block_summaries(x)
        q = self.q(x).reshape(b, n, HEADS, DIM_HEAD).transpose(1, 2)
        k, v = self.kv(summaries).reshape(b, -1, 2, HEADS, DIM_HEAD).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, n, DIM))


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([SummaryAttention() for _ in range(2)])

    def forward(self, x):
        for layer in self.layers:
            x = x + layer(x)
        return x


def build_model():
    return Model()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, DIM),)
