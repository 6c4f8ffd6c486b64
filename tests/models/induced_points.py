"""The Set Transformer's induced set attention block (Lee et al., 2019),
as juho-lee/set_transformer writes it: INDUCING learned points attend to
the N inputs, then the inputs attend to what the points gathered.  The
heads are folded into the batch with ``torch.cat(Q.split(d, 2), 0)`` and
unfolded with ``.split(Q.size(0), 0)``: 2·B rows cut into pieces of B,
whose count torch reads as floor((3·B − 1)/B) == 2, true at every batch."""
import math

import torch
import torch.nn as nn

HEADS, DIM, INDUCING = 2, 32, 8


class MAB(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc_q, self.fc_k, self.fc_v, self.fc_o = (nn.Linear(DIM, DIM) for _ in range(4))

    def forward(self, Q, K):
        Q, V, K = self.fc_q(Q), self.fc_v(K), self.fc_k(K)
        width = DIM // HEADS
        Q_, K_, V_ = (torch.cat(t.split(width, 2), 0) for t in (Q, K, V))
        A = torch.softmax(Q_.bmm(K_.transpose(1, 2)) / math.sqrt(DIM), 2)
        O = torch.cat((Q_ + A.bmm(V_)).split(Q.size(0), 0), 2)
        return O + torch.relu(self.fc_o(O))


class ISAB(nn.Module):
    def __init__(self):
        super().__init__()
        self.points = nn.Parameter(torch.randn(1, INDUCING, DIM))
        self.gather, self.spread = MAB(), MAB()

    def forward(self, x):
        gathered = self.gather(self.points.repeat(x.size(0), 1, 1), x)
        return self.spread(x, gathered)


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([ISAB() for _ in range(2)])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def build_model():
    return Model()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, DIM),)
