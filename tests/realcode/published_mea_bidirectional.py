"""memory-efficient-attention-pytorch: memory_efficient_attention, not
causal (published_mea_causal.py otherwise): every pair of chunks is
computed, nothing masked.  Dense attention, computed in blocks."""
from functools import partial

from published_mea_causal import ChunkedHeads, Stack, example_inputs  # noqa: F401


def build_model():
    return Stack(partial(ChunkedHeads, causal=False), dim=32, depth=2)
