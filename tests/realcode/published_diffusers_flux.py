"""diffusers: FluxTransformer2DModel, one double-stream and one
single-stream block of 2 heads of 16, built from arguments (no weights).

N image tokens (packed latents) and 8 text tokens.  The double-stream block
concatenates the text's queries, keys and values before the image's and
the single-stream block runs on the concatenated sequence
(transformer_flux.py, FluxAttnProcessor: ``torch.cat([encoder_query,
query], dim=1)``, rotary embeddings, dispatch_attention_fn with no mask):
both dense, bidirectional, N + 8 queries against N + 8 keys.
"""
import torch

from published_support import require

require("diffusers")

TEXT, HEADS, DIM_HEAD, CHANNELS = 8, 2, 16, 16


def build_model():
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(patch_size=1, in_channels=CHANNELS, num_layers=1,
                                  num_single_layers=1, attention_head_dim=DIM_HEAD,
                                  num_attention_heads=HEADS, joint_attention_dim=24,
                                  pooled_projection_dim=12, axes_dims_rope=(4, 6, 6))


def example_inputs(seq_len, batch=1):
    image_ids = torch.zeros(seq_len, 3)
    image_ids[:, 2] = torch.arange(seq_len)
    return {"hidden_states": torch.randn(batch, seq_len, CHANNELS),
            "encoder_hidden_states": torch.randn(batch, TEXT, 24),
            "pooled_projections": torch.randn(batch, 12), "timestep": torch.ones(batch),
            "img_ids": image_ids, "txt_ids": torch.zeros(TEXT, 3)}
