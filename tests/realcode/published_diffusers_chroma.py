"""diffusers: ChromaTransformer2DModel, one double-stream and one
single-stream block of 2 heads of 16, built from arguments (no weights).

Flux's attention (the text's 8 tokens before the N image tokens, dense,
bidirectional, N + 8 queries and keys), modulated by an approximator that
builds its guidance ids from the batch size as a Python list
(transformer_chroma.py, ChromaCombinedTimestepTextProjEmbeddings.forward:
``self.guidance_proj(torch.tensor([0] * batch_size))``), which fixes the
batch while tracing.
"""
import torch

from published_support import require

require("diffusers")

TEXT, HEADS, DIM_HEAD, CHANNELS = 8, 2, 16, 16


def build_model():
    from diffusers import ChromaTransformer2DModel

    return ChromaTransformer2DModel(patch_size=1, in_channels=CHANNELS, num_layers=1,
                                    num_single_layers=1, attention_head_dim=DIM_HEAD,
                                    num_attention_heads=HEADS, joint_attention_dim=24,
                                    axes_dims_rope=(4, 6, 6), approximator_num_channels=8,
                                    approximator_hidden_dim=32, approximator_layers=1)


def example_inputs(seq_len, batch=1):
    image_ids = torch.zeros(seq_len, 3)
    image_ids[:, 2] = torch.arange(seq_len)
    return {"hidden_states": torch.randn(batch, seq_len, CHANNELS),
            "encoder_hidden_states": torch.randn(batch, TEXT, 24), "timestep": torch.ones(batch),
            "img_ids": image_ids, "txt_ids": torch.zeros(TEXT, 3)}
