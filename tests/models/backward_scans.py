"""A bidirectional linear recurrence, as vision and bidirectional state
space models write it: one scan from the first position on (a state
S_t = S_{t-1} + k_t v_tᵀ, read by q_t), one from the last position back,
written two ways: positions taken in reverse order (``reversed(range(N))``)
and a forward scan over the sequence flipped (``x.flip(1)``; its queries
normalized, its keys and values shifted one step, zeros first), its output
flipped back.  Each token reaches the earlier ones through the first scan
and the later ones through the others.  The model reads the sequence from
the right (flipped before the mixer): that is the order its scans are
causal or not in."""
import torch
import torch.nn as nn
import torch.nn.functional as F

HEADS, DIM_K, DIM_V, DIM = 2, 8, 12, 32


def scan(q, k, v, order):
    """Outputs of the recurrence over the positions in ``order``."""
    b, h, n, _ = q.shape
    state = q.new_zeros(b, h, DIM_K, DIM_V)
    out = [None] * n
    for t in order:
        state = state + k[:, :, t, :, None] * v[:, :, t, None, :]
        out[t] = (q[:, :, t, :, None] * state).sum(-2)
    return torch.stack(out, dim=2)


def shifted(*tensors):
    """Each tensor flipped along the sequence and shifted one step (zeros
    first): the scan from the end back reaches the later tokens only."""
    out = []
    for x in tensors:
        pad = torch.zeros_like(x[:, :, :1])
        out.append(torch.cat([pad, x.flip(2)[:, :, :-1]], dim=2))
    return out


class Bidirectional(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(DIM, HEADS * (2 * DIM_K + DIM_V))
        self.out = nn.Linear(HEADS * DIM_V, DIM)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, HEADS, -1).transpose(1, 2).split(
            [DIM_K, DIM_K, DIM_V], dim=-1)
        ahead = scan(q, k, v, range(n))
        back = scan(q, k, v, reversed(range(n)))
        flipped = scan(F.normalize(q.flip(2), dim=-1), *shifted(k, v), range(n)).flip(2)
        y = (ahead + back + flipped).transpose(1, 2).reshape(b, n, HEADS * DIM_V)
        return x + self.out(y)


class RightToLeft(nn.Module):
    """The sequence read from its end: flipped before the mixer, which scans
    it in that order, and flipped back after."""

    def __init__(self):
        super().__init__()
        self.mixer = Bidirectional()

    def forward(self, x):
        return self.mixer(x.flip(1)).flip(1)


def build_model():
    return RightToLeft()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, DIM),)
