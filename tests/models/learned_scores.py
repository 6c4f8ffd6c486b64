"""The Random Synthesizer (Tay et al., "Synthesizer: Rethinking
Self-Attention in Transformer Models", 2020): each head's scores are a
learned MAX_LEN × MAX_LEN table, sliced to the length and masked causally
(a decoder), normalised by a softmax over the keys and applied to values
of the input.  No query meets a key; d_v = DIM_V per head."""
import torch
import torch.nn as nn

HEADS, DIM_V, MAX_LEN = 2, 24, 512
DIM = 32


class RandomSynthesizer(nn.Module):
    def __init__(self):
        super().__init__()
        self.scores = nn.Parameter(torch.randn(HEADS, MAX_LEN, MAX_LEN))
        self.v = nn.Linear(DIM, HEADS * DIM_V)
        self.out = nn.Linear(HEADS * DIM_V, DIM)
        self.register_buffer("causal", torch.ones(MAX_LEN, MAX_LEN, dtype=torch.bool).tril())

    def forward(self, x):
        b, n, _ = x.shape
        scores = self.scores[:, :n, :n].masked_fill(~self.causal[:n, :n], float("-inf"))
        v = self.v(x).view(b, n, HEADS, DIM_V).transpose(1, 2)
        y = scores.softmax(-1) @ v
        return self.out(y.transpose(1, 2).reshape(b, n, HEADS * DIM_V))


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([RandomSynthesizer() for _ in range(2)])

    def forward(self, x):
        for layer in self.layers:
            x = x + layer(x)
        return x


def build_model():
    return Model()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, DIM),)
