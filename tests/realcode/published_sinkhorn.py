"""sinkhorn-transformer (lucidrains): SinkhornTransformerLM, 2 layers of 2
heads of 16 (dim 32), bidirectional, buckets of 32, n_top_buckets = 2.

What it computes (sinkhorn_transformer/sinkhorn_transformer.py,
SinkhornAttention): queries and keys are cut into buckets of 32; a sort net
scores every (query bucket, key bucket) pair from the buckets' summed
values and keeps the top 2 key buckets per query bucket (differentiable_topk:
a top-k of softmaxed scores scattered into a one-per-row matrix R); the
keys of those buckets (R times the bucketed keys) and of the query's own
bucket are its keys: 96 per query, chosen by the input's content.
"""
import torch

from published_support import require

sinkhorn = require("sinkhorn_transformer")

BUCKET = 32
TOP_BUCKETS = 2


def build_model():
    return sinkhorn.SinkhornTransformerLM(num_tokens=64, dim=32, max_seq_len=1024, depth=2,
                                          heads=2, bucket_size=BUCKET, causal=False,
                                          n_top_buckets=TOP_BUCKETS)


def example_inputs(seq_len, batch=1):
    return (torch.randint(0, 64, (batch, seq_len)),)
