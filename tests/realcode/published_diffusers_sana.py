"""diffusers: SanaTransformer2DModel, 2 blocks, built from arguments (no
weights): self-attention of 2 heads of 16, cross-attention of 2 heads of 16
to 8 text tokens.  The latent is 1 high and N wide (patch 1).

Self-attention is ReLU linear attention written channels first
(attention_processor.py, SanaLinearAttnProcessor2_0): queries, keys and
values (B, H, d, N); the value padded with a row of ones, ``scores =
torch.matmul(value, key)`` (B, H, d+1, d), ``hidden_states =
torch.matmul(scores, query)`` (B, H, d+1, N), its last row the normalizer.
So linear, 2 heads over N queries and keys, features 16, values 16 + the
ones row.  Cross-attention: F.scaled_dot_product_attention of N queries
against the 8 text tokens, no mask.
"""
import torch

from published_support import require

require("diffusers")

TEXT, HEADS, DIM_HEAD, DEPTH = 8, 2, 16, 2


def build_model():
    from diffusers import SanaTransformer2DModel

    return SanaTransformer2DModel(in_channels=4, out_channels=4, num_attention_heads=HEADS,
                                  attention_head_dim=DIM_HEAD, num_layers=DEPTH,
                                  num_cross_attention_heads=HEADS,
                                  cross_attention_head_dim=DIM_HEAD, cross_attention_dim=32,
                                  caption_channels=24, sample_size=8, patch_size=1)


def example_inputs(seq_len, batch=1):
    return {"hidden_states": torch.randn(batch, 4, 1, seq_len),
            "encoder_hidden_states": torch.randn(batch, TEXT, 24), "timestep": torch.ones(batch)}
