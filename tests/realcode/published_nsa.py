"""native-sparse-attention-pytorch 0.2.3: a causal Transformer of 2 layers,
each with NSA's three branches, 4 query heads over 2 key/value heads of 16.

What it computes (native_sparse_attention.py, SparseAttention.forward):
- compressed: one learned memory key plus one key per block of 8
  (stride 8) summarizing it; a query at position q sees the memory and the
  blocks that end before it (``einx.less('j, i -> i j', ck_seq, cq_seq)``
  with ck_seq = (block + 1)·8 - 1): 1 + q // 8 keys;
- fine: the 2 blocks of 8 the compressed scores rank highest among the
  blocks that ended before q (all of them when fewer), plus q's own block
  up to q: min(2, q // 8)·8 + q % 8 + 1 keys, chosen by content;
- sliding window: local-attention's LocalAttention, window 16, exact
  window size: keys q-16..q, min(q + 1, 17).
"""
import torch

from published_support import require

nsa = require("native_sparse_attention_pytorch.transformer")

HEADS, KV_HEADS, DIM_HEAD, DEPTH = 4, 2, 16, 2
WINDOW, BLOCK, SELECTED = 16, 8, 2


def build_model():
    return nsa.Transformer(
        num_tokens=64, dim=32, depth=DEPTH, dim_head=DIM_HEAD, heads=HEADS, kv_heads=KV_HEADS,
        use_sparse_attn=True, causal=True,
        sparse_attn_kwargs=dict(sliding_window_size=WINDOW, compress_block_size=BLOCK,
                                compress_block_sliding_stride=BLOCK, selection_block_size=BLOCK,
                                num_selected_blocks=SELECTED))


def example_inputs(seq_len, batch=1):
    return (torch.randint(0, 64, (batch, seq_len)),)


def keys_seen(q: int) -> tuple[int, int, int]:
    """(compressed, fine, sliding) keys query q sees, from the source above."""
    return (1 + q // BLOCK, min(SELECTED, q // BLOCK) * BLOCK + q % BLOCK + 1,
            min(q + 1, WINDOW + 1))
