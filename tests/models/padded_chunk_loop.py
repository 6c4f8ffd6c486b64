"""Retention computed in chunks of 16, as torchscale's RetNet runs it
chunkwise (``chunk_recurrent_forward``): the length is padded to whole
chunks only where it does not fill the last one; inside a chunk, Q·Kᵀ
masked by a causal decay is applied to V; across chunks, a state Kᵀ·V is
carried by a Python loop over the chunks and read by each chunk's queries;
the state's pieces are taken from Kᵀ·V per chunk, laid out (batch, chunks,
heads, d, d): no axis of positions follows the chunks.
As in torchscale's RetNetDecoder, the padding is added once before the
layers and cut off after them."""
import torch
import torch.nn as nn
import torch.nn.functional as F

HEADS, DIM_HEAD, CHUNK, DIM = 2, 16, 16, 32


class ChunkwiseRetention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(DIM, 3 * HEADS * DIM_HEAD, bias=False)
        self.out = nn.Linear(HEADS * DIM_HEAD, DIM, bias=False)
        i = torch.arange(CHUNK)
        self.register_buffer("decay", (0.9 ** (i[:, None] - i[None, :]).clamp(min=0))
                             * (i[:, None] >= i[None, :]))

    def forward(self, x):
        b, n, _ = x.shape
        chunks = n // CHUNK
        # (b, chunks, heads, positions, d): the chunks before the heads
        q, k, v = self.qkv(x).view(b, chunks, CHUNK, 3, HEADS, DIM_HEAD).permute(3, 0, 1, 4, 2, 5)
        inner = (q @ k.transpose(-1, -2) * self.decay) @ v
        kv = k.transpose(-1, -2) @ v  # (b, chunks, heads, d, d): the positions summed
        state = torch.zeros(b, HEADS, DIM_HEAD, DIM_HEAD)
        across = []
        for c in range(chunks):
            across.append(q[:, c] @ state)
            state = 0.5 * state + kv[:, c]
        out = inner + torch.stack(across, dim=1)
        return self.out(out.transpose(2, 3).reshape(b, n, HEADS * DIM_HEAD))


class PaddedToChunks(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([ChunkwiseRetention(), ChunkwiseRetention()])

    def forward(self, x):
        n = x.shape[1]
        if n % CHUNK:
            x = F.pad(x, (0, 0, 0, CHUNK - n % CHUNK))
        for layer in self.layers:
            x = x + layer(x)
        return x[:, :n]


def build_model():
    return PaddedToChunks()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, DIM),)
