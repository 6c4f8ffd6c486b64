"""AFT-full, the Attention Free Transformer (Zhai et al., 2021), as its
reference implementations write it: a learned MAX_LEN × MAX_LEN table of
position biases w, sliced to the length, and no softmax:

    Y = sigmoid(Q) ⊙ (exp(w) · (exp(K) ⊙ V)) / (exp(w) · exp(K))

``torch.exp`` of the table is taken once for each product.  Every query
meets every key through exp(w), over the HIDDEN features of V (the
numerator) and of K (the normaliser): 2·(HIDDEN + HIDDEN) FLOPs a pair."""
import torch
import torch.nn as nn

DIM, HIDDEN, MAX_LEN = 32, 24, 512


class AFTFull(nn.Module):
    def __init__(self):
        super().__init__()
        self.to_q, self.to_k, self.to_v = (nn.Linear(DIM, HIDDEN) for _ in range(3))
        self.project = nn.Linear(HIDDEN, DIM)
        self.wbias = nn.Parameter(torch.randn(MAX_LEN, MAX_LEN) * 0.01)

    def forward(self, x):
        n = x.shape[1]
        q, k, v = self.to_q(x), self.to_k(x), self.to_v(x)
        w = self.wbias[:n, :n].unsqueeze(0)
        weighted = (torch.exp(w) @ (torch.exp(k) * v)) / (torch.exp(w) @ torch.exp(k))
        return self.project(torch.sigmoid(q) * weighted)


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([AFTFull() for _ in range(2)])

    def forward(self, x):
        for layer in self.layers:
            x = x + layer(x)
        return x


def build_model():
    return Model()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, DIM),)
