"""performer-pytorch (lucidrains): PerformerLM, 2 layers of 2 heads of 16
(dim 32), 24 random features (nb_features), causal=True: FAVOR+ by prefix
sums.  Without fast_transformers' CUDA kernel it runs
causal_linear_attention_noncuda: a Python loop over t.chunk(128) pieces (1
token each up to N=128), cumsum of the k⊗v outer products and of phi(K).
"""
import torch

from published_support import require

performer_pytorch = require("performer_pytorch")

NB_FEATURES = 24


def build_model():
    torch.manual_seed(0)
    return performer_pytorch.PerformerLM(
        num_tokens=64, max_seq_len=8192, dim=32, depth=2, heads=2, dim_head=16,
        causal=True, nb_features=NB_FEATURES)


def example_inputs(seq_len, batch=1):
    return (torch.randint(0, 64, (batch, seq_len)),)
