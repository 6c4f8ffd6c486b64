"""A recurrent mixer written as a Python loop over the sequence (the way
Mamba's slow path and RWKV-style reference code are): each step mixes the
state with the token.  Tracing it fixes N and records every step."""
import torch
import torch.nn as nn

DIM = 16


class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(64, DIM)
        self.state = nn.Linear(DIM, DIM, bias=False)
        self.out = nn.Linear(DIM, 64, bias=False)

    def forward(self, ids):
        x = self.emb(ids)
        h = torch.zeros_like(x[:, 0])
        steps = []
        for t in range(x.shape[1]):
            h = torch.tanh(self.state(h) + x[:, t])
            steps.append(h)
        return self.out(torch.stack(steps, dim=1))


def build_model():
    return Recurrent()


def example_inputs(seq_len, batch=1):
    return (torch.zeros(batch, seq_len, dtype=torch.long),)
