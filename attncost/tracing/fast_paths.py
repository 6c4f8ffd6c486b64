"""torch's fused transformer paths, traced as a real forward runs them.

In eval mode without gradients, ``nn.MultiheadAttention`` (self-attention,
batch_first) and ``nn.TransformerEncoderLayer`` leave their Python code for
one fused op each, ``_native_multi_head_attention`` and
``_transformer_encoder_layer_fwd``.  Under make_fx they refuse to (a tracing
mode is active), so a trace would follow the Python path: the same FLOPs,
but other tensors (the Python path keeps Q, K and V apart, copies the
scores for the softmax, and averages the weights over heads from a second
N×N tensor).

``fast_paths(device)`` lets the modules decide as in a real run, ignoring
only the tracing itself, and replaces the two ops by the aten ops their
kernels run on ``device`` (aten/src/ATen/native/transformers/attention.cpp,
attention.cu, transformer.cpp), allocating what the kernels allocate:

* the packed QKV product, then one buffer holding Q (scaled), K and V per
  head (``_transform_bias_rescale_qkv``);
* the scores, a softmax in place (with a mask: a masked copy first), P·V
  written into Q's storage, the heads put back in sequence order and the
  output projection; the weights averaged over heads when asked for;
* on CUDA, without weights, without a mask and with a head dim a multiple
  of 8, where the memory-efficient or flash kernel takes the call: one QKV
  linear and ``scaled_dot_product_attention``;
* the encoder layer: attention, residual added in place, layer norms, the
  feed-forward product with its activation in place.

``scaled_dot_product_attention`` whose value head dim differs from the
query's (DeepSeek's MLA) runs the math backend on a CPU, N×N scores and
all, where a GPU runs the memory-efficient kernel: on CUDA it is traced as
that kernel's call, the boolean mask turned into the float one the kernel
reads, as torch's own dispatch does.
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .patches import patched

#: mask_type of the fused ops: 0 a (T, T) mask, 1 a (B, T) key padding mask,
#: 2 a (B, H, T, T) mask.
_KEY_PADDING = 1


def _has_torch_function_of_types(args) -> bool:
    """``has_torch_function`` of the tensors' own types, not of the modes that
    tracing installs (the one condition a real run does not share)."""
    plain = {torch._C._disabled_torch_function_impl,
             torch.Tensor.__torch_function__.__func__}
    for a in args:
        if isinstance(a, torch.Tensor):
            impl = type(a).__torch_function__
            if getattr(impl, "__func__", impl) not in plain:
                return True
    return False


def _heads_first(x: torch.Tensor, batch, heads: int, head_dim: int) -> torch.Tensor:
    return x.view(batch, -1, heads, head_dim).transpose(1, 2)


def _sdpa_takes_it(query: torch.Tensor, head_dim: int, mask, need_weights: bool,
                   device: str) -> bool:
    """Does the CUDA kernel hand the call to scaled_dot_product_attention?
    Not with a mask (its key padding shape is not SDPA's)."""
    if device != "cuda" or need_weights or mask is not None or head_dim % 8:
        return False
    from ..rules.cuda import sdpa_backend

    return sdpa_backend(query.dtype, head_dim, head_dim, False) in ("flash", "efficient")


def _sdpa_path(query, embed_dim, heads, qkv_weight, qkv_bias, proj_weight, proj_bias):
    x = F.linear(query, qkv_weight, qkv_bias)
    batch, head_dim = x.shape[0], embed_dim // heads
    q, k, v = (_heads_first(c, batch, heads, head_dim) for c in x.chunk(3, -1))
    y = F.scaled_dot_product_attention(q, k, v)
    y = y.transpose(1, 2).reshape(batch, -1, embed_dim)
    return F.linear(y, proj_weight, proj_bias)


def _packed_heads(query, embed_dim, heads, qkv_weight, qkv_bias):
    """Q (scaled by 1/sqrt(d)), K and V per head, in one buffer (3, B, H, T, d)."""
    batch, length = query.shape[0], query.shape[1]
    head_dim = embed_dim // heads
    qkv = torch.matmul(query, qkv_weight.t())
    buffer = qkv.new_empty((3, batch, heads, length, head_dim))
    packed = torch.add(qkv.view(batch, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4),
                       qkv_bias.view(3, 1, heads, 1, head_dim), out=buffer)
    del qkv
    packed[0].mul_(1.0 / math.sqrt(head_dim))
    return packed.unbind(0)


def _masked_probabilities(scores, mask, mask_type):
    """The kernel's softmax: in place, or from a masked copy (a float mask is
    read as blocked where nonzero, as the kernel's conversion to bool does)."""
    if mask is None:
        return torch.ops.aten._softmax.out(scores, -1, False, out=scores)
    blocked = mask if mask.dtype == torch.bool else mask.to(torch.bool)
    if mask_type == _KEY_PADDING:
        blocked = blocked.view(blocked.shape[0], 1, 1, blocked.shape[-1])
    weights = scores.masked_fill(blocked, float("-inf"))
    return torch.ops.aten._softmax.out(weights, -1, False, out=weights)


def _output_projection(context, weight, bias):
    """Heads back in sequence order (a copy, freed on return) times the
    output projection."""
    batch, heads, length, head_dim = context.shape
    flat = context.permute(0, 2, 1, 3).contiguous().view(batch * length, heads * head_dim)
    return torch.addmm(bias, flat, weight.t()).view(batch, length, heads * head_dim)


def native_multi_head_attention(query, key, value, embed_dim, num_head, qkv_weight, qkv_bias,
                                proj_weight, proj_bias, mask=None, need_weights=True,
                                average_attn_weights=True, mask_type=None, *, device="cpu"):
    """``torch._native_multi_head_attention`` (self-attention) as its kernel runs."""
    head_dim = embed_dim // num_head
    if _sdpa_takes_it(query, head_dim, mask, need_weights, device):
        return _sdpa_path(query, embed_dim, num_head, qkv_weight, qkv_bias, proj_weight,
                          proj_bias), None
    batch, length = query.shape[0], query.shape[1]
    q, k, v = _packed_heads(query, embed_dim, num_head, qkv_weight, qkv_bias)
    rows = batch * num_head
    scores = torch.bmm(q.reshape(rows, length, head_dim),
                       k.reshape(rows, length, head_dim).transpose(1, 2))
    scores = scores.view(batch, num_head, length, length)
    weights = _masked_probabilities(scores, mask, mask_type)
    del scores
    context = torch.bmm(weights.view(rows, length, length), v.reshape(rows, length, head_dim),
                        out=q.view(rows, length, head_dim))
    if not need_weights:
        del weights  # the kernel lets the weights go before the output projection
    out = _output_projection(context.view(batch, num_head, length, head_dim), proj_weight,
                             proj_bias)
    if not need_weights:
        return out, None
    if average_attn_weights:
        weights = weights.sum(1)
        weights.div_(num_head)
    return out, weights


def transformer_encoder_layer(src, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight,
                              proj_bias, use_gelu, norm_first, eps, norm_weight_1, norm_bias_1,
                              norm_weight_2, norm_bias_2, ffn_weight_1, ffn_bias_1,
                              ffn_weight_2, ffn_bias_2, mask=None, mask_type=None, *,
                              device="cpu"):
    """``torch._transformer_encoder_layer_fwd`` as its kernel runs."""
    def norm(x, weight, bias):
        return F.layer_norm(x, (embed_dim,), weight, bias, eps)

    x = norm(src, norm_weight_1, norm_bias_1) if norm_first else src
    x = native_multi_head_attention(x, x, x, embed_dim, num_heads, qkv_weight, qkv_bias,
                                    proj_weight, proj_bias, mask, False, True, mask_type,
                                    device=device)[0]
    x.add_(src)
    if not norm_first:
        x = norm(x, norm_weight_1, norm_bias_1)
    residual = x
    if norm_first:
        x = norm(x, norm_weight_2, norm_bias_2)
    x = _feed_forward(x, ffn_weight_1, ffn_bias_1, ffn_weight_2, ffn_bias_2, use_gelu)
    x.add_(residual)
    if not norm_first:
        x = norm(x, norm_weight_2, norm_bias_2)
    return x


def _feed_forward(x, weight_1, bias_1, weight_2, bias_2, use_gelu):
    shape = x.shape
    hidden = torch.addmm(bias_1, x.reshape(-1, shape[-1]), weight_1.t())
    if use_gelu:
        hidden = torch.ops.aten.gelu_(hidden)
    else:
        hidden = hidden.relu_()
    out = torch.addmm(bias_2, hidden, weight_2.t())
    return out.view(shape[0], shape[1], -1)


class _SdpaAsOnCuda(TorchFunctionMode):
    """SDPA calls a CPU would run in math that CUDA's memory-efficient kernel takes."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            out = _efficient_on_cuda(*args, **kwargs)
            if out is not None:
                return out
        return func(*args, **kwargs)


def _efficient_on_cuda(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                       scale=None, enable_gqa=False):
    """The memory-efficient kernel's call, where CUDA picks it and a CPU does
    not (head dims that differ); None elsewhere."""
    from ..rules.cuda import sdpa_backend

    d_qk, d_v = query.shape[-1], value.shape[-1]
    if d_qk == d_v or sdpa_backend(query.dtype, d_qk, d_v, attn_mask is not None) != "efficient":
        return None
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        attn_mask = torch.where(attn_mask.logical_not(), float("-inf"), 0.0).to(query.dtype)
    need_lse = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
    return torch.ops.aten._scaled_dot_product_efficient_attention(
        query, key, value, attn_mask, need_lse, dropout_p, is_causal, scale=scale)[0]


def _deciding_as_run(forward):
    """``forward`` with torch's fast-path test answered as in a real run:
    tracing's own modes set aside (patched only while the module decides)."""
    activation = torch.nn.modules.activation

    def decide(module, *args, **kwargs):
        with patched(activation, "_is_make_fx_tracing", lambda: False), \
                patched(torch.overrides, "has_torch_function", _has_torch_function_of_types):
            return forward(module, *args, **kwargs)
    return decide


@contextlib.contextmanager
def fast_paths(device: str) -> Iterator[None]:
    """torch's fused transformer paths taken where a real forward on ``device``
    takes them, run as their kernels run there (see the module's docstring)."""
    nn = torch.nn

    def mha(*args, **kwargs):
        return native_multi_head_attention(*args, **kwargs, device=device)

    def layer(*args, **kwargs):
        return transformer_encoder_layer(*args, **kwargs, device=device)

    with patched(nn.MultiheadAttention, "forward",
                 _deciding_as_run(nn.MultiheadAttention.forward)), \
            patched(nn.TransformerEncoderLayer, "forward",
                    _deciding_as_run(nn.TransformerEncoderLayer.forward)), \
            patched(torch, "_native_multi_head_attention", mha), \
            patched(torch, "_transformer_encoder_layer_fwd", layer), \
            (_SdpaAsOnCuda() if device == "cuda" else contextlib.nullcontext()):
        yield
