"""labml_nn (annotated deep-learning paper implementations): 2
TransformerLayers of MultiHeadAttention (2 heads of 16, d_model 32) and
FeedForward, with the causal mask of labml_nn.transformers.utils.

labml keeps activations sequence first, (N, B, d).  mha.py computes
``torch.einsum('ibhd,jbhd->ijbh', query, key)`` (scores as queries, keys,
batch, heads), ``scores.masked_fill(mask == 0, float('-inf'))`` with the
mask ``torch.tril(torch.ones(seq_len, seq_len)).to(torch.bool)
.unsqueeze(-1)`` prepared to (N, N, 1, 1), ``self.softmax = nn.Softmax(dim=1)``
(over the keys), then ``torch.einsum("ijbh,jbhd->ibhd", attn, value)``: dense,
causal, 2 heads over N queries and keys.
"""
import torch
import torch.nn as nn

from published_support import require

require("labml_nn.transformers.mha")

HEADS, DIM, DEPTH = 2, 32, 2


class LabmlDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        from labml_nn.transformers.feed_forward import FeedForward
        from labml_nn.transformers.mha import MultiHeadAttention
        from labml_nn.transformers.models import TransformerLayer

        self.layers = nn.ModuleList(
            TransformerLayer(d_model=DIM, self_attn=MultiHeadAttention(HEADS, DIM, 0.0),
                             src_attn=None, feed_forward=FeedForward(DIM, 2 * DIM, 0.0),
                             dropout_prob=0.0)
            for _ in range(DEPTH))

    def forward(self, x):
        from labml_nn.transformers.utils import subsequent_mask

        mask = subsequent_mask(x.shape[0]).to(x.device)
        for layer in self.layers:
            x = layer(x=x, mask=mask)
        return x


def build_model():
    return LabmlDecoder()


def example_inputs(seq_len, batch=1):
    return (torch.randn(seq_len, batch, DIM),)
