"""timm: the tiny SwinTransformer of published_timm_swin.py with timm's fused
attention switched on (``set_fused_attn(True, experimental=True)``, as
TIMM_FUSED_ATTN=2 does): each window's attention is one
scaled_dot_product_attention call on (B·windows, heads, 16, d), the shifted
block's region mask passed as its attn_mask
(timm/models/swin_transformer.py, WindowAttention.forward).

The windows are cut before the projections, so the call's batch axis holds
the sequence: every query meets the 16 keys of its window.
"""
from published_support import import_timm
from published_timm_swin import build_model as build_unfused
from published_timm_swin import example_inputs  # noqa: F401 - the model's inputs

timm = import_timm()


def build_model():
    from timm.layers import set_fused_attn

    set_fused_attn(True, experimental=True)  # read when the attention is built
    try:
        return build_unfused()
    finally:
        set_fused_attn(True)
