"""long-short-transformer 0.0.5, causal: 2 layers of 2 heads of 16
(long_short_transformer.py, LongShortAttention.forward).  Each query's
scores are concatenated from two products: against the local keys, its
window of 16 and the window before (a causal triangle masks the later
ones: ``triu_(j - i + 1)``), and against global keys, one summary per
segment of 16 (r = 1), of which a query sees the segments that end at or
before it (``seq_range[:, None] >= g_range_max[None, :]``); one softmax.

The package calls ``pos_emb(t, cache_key=n)``, an argument the pinned
rotary-embedding-torch no longer takes; a subclass takes and ignores it
(the same frequencies)."""
import torch

from published_support import require

long_short = require("long_short_transformer")
rotary = require("rotary_embedding_torch")

WINDOW, SEGMENT, HEADS, DIM_HEAD, DEPTH = 16, 16, 2, 16, 2


class Rotary(rotary.RotaryEmbedding):
    def forward(self, t, cache_key=None):
        return super().forward(t)


def build_model():
    model = long_short.LongShortTransformer(
        num_tokens=64, dim=32, depth=DEPTH, max_seq_len=4096, window_size=WINDOW, causal=True,
        dim_head=DIM_HEAD, heads=HEADS, segment_size=SEGMENT, r=1)
    for attention, _ in model.layers:
        attention.fn.pos_emb = Rotary(DIM_HEAD)
    return model


def example_inputs(seq_len, batch=1):
    return (torch.randint(0, 64, (batch, seq_len)),)


def keys_seen(q: int) -> int:
    """Local and global keys query q sees, from the source above."""
    window, i = divmod(q, WINDOW)
    local = i + 1 if window == 0 else WINDOW + i + 1
    return local + (q + 1) // SEGMENT
