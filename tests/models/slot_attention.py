"""Slot attention (Locatello et al., 2020): K learned slots attend to N
input features for a fixed number of iterations.  The softmax runs over the
slots (they compete for each input), the weights are then renormalised over
the inputs and meet the values over them."""
import torch
import torch.nn as nn

SLOTS, DIM, DIM_V, ITERS = 4, 16, 24, 3


class SlotAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.slots = nn.Parameter(torch.randn(1, SLOTS, DIM))
        self.norm_in = nn.LayerNorm(DIM)
        self.to_q = nn.Linear(DIM, DIM, bias=False)
        self.to_k = nn.Linear(DIM, DIM, bias=False)
        self.to_v = nn.Linear(DIM, DIM_V, bias=False)
        self.back = nn.Linear(DIM_V, DIM)
        self.gru = nn.GRUCell(DIM, DIM)

    def forward(self, inputs):
        b = inputs.shape[0]
        x = self.norm_in(inputs)
        k, v = self.to_k(x), self.to_v(x)
        slots = self.slots.expand(b, -1, -1)
        for _ in range(ITERS):
            q = self.to_q(slots)
            dots = torch.einsum("bid,bjd->bij", q, k) * DIM ** -0.5
            attn = dots.softmax(dim=1) + 1e-8
            attn = attn / attn.sum(dim=-1, keepdim=True)
            updates = self.back(torch.einsum("bjd,bij->bid", v, attn))
            slots = self.gru(updates.reshape(-1, DIM), slots.reshape(-1, DIM)).reshape(b, -1, DIM)
        return slots


def build_model():
    return SlotAttention()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, DIM),)
