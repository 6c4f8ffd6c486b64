"""The seed's LinearAttention: exp feature map of 12 features, einsums, d = 20."""
import torch
import torch.nn as nn


class LinearAttention(nn.Module):
    def __init__(self, d_model=20, n_features=12):
        super().__init__()
        self.projection = nn.Linear(d_model, n_features)

    def forward(self, Q, K, V):
        Q = self.projection(Q).exp()
        K = self.projection(K).exp()
        V_new = torch.einsum("bnd,bne->bde", K, V)
        attention = torch.einsum("bnd,bde->bne", Q, V_new)
        return attention / torch.einsum("bnd,bd->bn", Q, K.sum(dim=1)).unsqueeze(-1)


def build_model():
    return LinearAttention()


def example_inputs(seq_len, batch=1):
    x = torch.randn(batch, seq_len, 20)
    return (x, x * 0.5, x * 0.25)
