"""A model whose Python code branches on the length: above 2048 tokens it
keeps every other position before attending."""
import torch


class M(torch.nn.Module):
    def forward(self, q):
        if q.shape[1] > 2048:
            q = q[:, ::2]
        return torch.softmax(q @ q.transpose(-1, -2), -1) @ q


def build_model():
    return M()


def example_inputs(n, batch=1):
    return (torch.randn(batch, n, 16),)
