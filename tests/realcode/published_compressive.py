"""compressive-transformer-pytorch 0.4.0: 2 layers of 2 heads of 16, one
forward with memories given (16 memories and 4 compressed memories a
layer).  Each layer's queries (the N tokens) attend to the compressed
memories and memories, all of them, and to the tokens up to their own
(compressive_transformer_pytorch.py, SelfAttention.forward: keys
``cat((cmem, mem, x))``, a causal mask shifted by the memories).  Each
pair's score adds Transformer-XL's position term, the query against a
learned position key (``einsum('bhid,hjd->bhij', q, pos_emb)``, pos_emb
the parameter cut to the keys' length) over the same grid, before the
mask."""
import torch

from published_support import require

ct = require("compressive_transformer_pytorch")
memory = require("compressive_transformer_pytorch.compressive_transformer_pytorch")

HEADS, DIM_HEAD, DEPTH, MEMORIES, COMPRESSED = 2, 16, 2, 16, 4


class WithMemories(torch.nn.Module):
    """The memories as tensor arguments; the model's outputs as tensors."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids, mem, cmem):
        out, memories, aux = self.model(ids, memories=memory.Memory(mem, cmem))
        return out, memories.mem, memories.compressed_mem, aux


def build_model():
    return WithMemories(ct.CompressiveTransformer(
        num_tokens=64, dim=HEADS * DIM_HEAD, seq_len=1024, depth=DEPTH, heads=HEADS,
        mem_len=1024, cmem_len=256))


def example_inputs(seq_len, batch=1):
    return (torch.randint(0, 64, (batch, seq_len)),
            torch.randn(DEPTH, batch, MEMORIES, HEADS * DIM_HEAD),
            torch.randn(DEPTH, batch, COMPRESSED, HEADS * DIM_HEAD))
