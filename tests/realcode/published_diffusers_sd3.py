"""diffusers: SD3Transformer2DModel (MMDiT), 2 blocks of 2 heads of 16,
built from arguments (no weights).

The latent is 1 patch high and N patches wide, so N is the number of image
tokens.  Each block's joint attention runs over the image tokens and the 8
text tokens together (attention_processor.py, JointAttnProcessor2_0:
``query = torch.cat([query, encoder_hidden_states_query_proj], dim=2)``,
then F.scaled_dot_product_attention with no mask): dense, bidirectional,
N + 8 queries against N + 8 keys.
"""
import torch

from published_support import require

require("diffusers")

PATCH, TEXT, HEADS, DIM_HEAD, DEPTH = 2, 8, 2, 16, 2


def build_model():
    from diffusers import SD3Transformer2DModel

    return SD3Transformer2DModel(sample_size=8, patch_size=PATCH, in_channels=4, num_layers=DEPTH,
                                 attention_head_dim=DIM_HEAD, num_attention_heads=HEADS,
                                 joint_attention_dim=24, caption_projection_dim=HEADS * DIM_HEAD,
                                 pooled_projection_dim=12, out_channels=4, pos_embed_max_size=512)


def example_inputs(seq_len, batch=1):
    return {"hidden_states": torch.randn(batch, 4, PATCH, PATCH * seq_len),
            "encoder_hidden_states": torch.randn(batch, TEXT, 24),
            "pooled_projections": torch.randn(batch, 12), "timestep": torch.ones(batch)}
