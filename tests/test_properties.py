"""Property: for any small attention model, attncost's symbolic FLOPs equal
FlopCounterMode on the real model (plus 4·B·H·N_q·N_k·d for each fused
attention call a CPU runs, which FlopCounterMode counts as 0), at lengths
other than the one traced.

Models are generated from a template: heads, head size, GQA ratio, causal or
not, a mask (none, causal, a band, a random pattern passed in as data), fused
SDPA or the unfused QKᵀ -> softmax -> ·V chain, one or two layers.
"""
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import attncost
from oracle import count_flops, load_module

TEMPLATE = '''
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

HEADS, KV_HEADS, HEAD_DIM, D_MODEL = {heads}, {kv_heads}, {head_dim}, {d_model}
MASK, WINDOW, CAUSAL, FUSED, ENABLE_GQA = {mask!r}, {window}, {causal}, {fused}, {enable_gqa}
LAYERS, DENSITY, SEED = {layers}, {density}, {seed}


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = nn.Linear(D_MODEL, HEADS * HEAD_DIM, bias=False)
        self.kv = nn.Linear(D_MODEL, 2 * KV_HEADS * HEAD_DIM, bias=False)
        self.o = nn.Linear(HEADS * HEAD_DIM, D_MODEL, bias=False)

    def forward(self, x, pattern=None):
        b, n, _ = x.shape
        q = self.q(x).view(b, n, HEADS, HEAD_DIM).transpose(1, 2)
        k, v = self.kv(x).view(b, n, 2, KV_HEADS, HEAD_DIM).permute(2, 0, 3, 1, 4)
        if KV_HEADS != HEADS and not (FUSED and ENABLE_GQA):
            k = k.repeat_interleave(HEADS // KV_HEADS, dim=1)
            v = v.repeat_interleave(HEADS // KV_HEADS, dim=1)
        i = torch.arange(n, device=x.device).view(n, 1)
        j = torch.arange(n, device=x.device).view(1, n)
        keep = None
        if MASK == "causal" and not FUSED:
            keep = j <= i
        elif MASK == "band":
            keep = (i - j < WINDOW) & (j <= i) if CAUSAL else (i - j).abs() <= WINDOW
        elif MASK == "pattern":
            keep = pattern
        if FUSED:
            gqa = {{"enable_gqa": True}} if KV_HEADS != HEADS and ENABLE_GQA else {{}}
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep,
                                               is_causal=MASK == "causal", **gqa)
        else:
            scores = q @ k.transpose(-2, -1) / math.sqrt(HEAD_DIM)
            if keep is not None:
                scores = scores.masked_fill(~keep, float("-inf"))
            y = torch.softmax(scores, dim=-1) @ v
        return x + self.o(y.transpose(1, 2).reshape(b, n, HEADS * HEAD_DIM))


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([Attention() for _ in range(LAYERS)])

    def forward(self, x, pattern=None):
        for layer in self.layers:
            x = layer(x, pattern)
        return x


def build_model():
    return Model()


def example_inputs(seq_len, batch=1):
    x = torch.randn(batch, seq_len, D_MODEL)
    if MASK != "pattern":
        return (x,)
    generator = torch.Generator().manual_seed(SEED)
    pattern = torch.rand(seq_len, seq_len, generator=generator) < DENSITY
    return (x, pattern | torch.eye(seq_len, dtype=torch.bool))
'''


@st.composite
def attention_models(draw):
    heads = draw(st.integers(1, 4))
    kv_heads = draw(st.sampled_from([k for k in range(1, heads + 1) if heads % k == 0]))
    head_dim = draw(st.sampled_from([4, 8, 16]))
    mask = draw(st.sampled_from(["none", "causal", "band", "pattern"]))
    return dict(heads=heads, kv_heads=kv_heads, head_dim=head_dim,
                d_model=draw(st.sampled_from([8, 16, 24])), mask=mask,
                window=draw(st.integers(1, 6)), causal=draw(st.booleans()),
                fused=draw(st.booleans()), enable_gqa=draw(st.booleans()),
                layers=draw(st.integers(1, 2)), density=draw(st.sampled_from([0.1, 0.5])),
                seed=draw(st.integers(0, 99)))


def _oracle(path, n, batch):
    mod = load_module(path)
    torch.manual_seed(0)
    return count_flops(mod.build_model().eval(), mod.example_inputs(n, batch=batch))


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(spec=attention_models(), traced_n=st.integers(8, 40),
       checks=st.lists(st.tuples(st.integers(2, 70), st.integers(1, 3)), min_size=2, max_size=2))
def test_symbolic_flops_match_flopcounter_on_the_real_model(tmp_path_factory, spec, traced_n,
                                                            checks):
    path = tmp_path_factory.mktemp("model") / "model.py"
    path.write_text(TEMPLATE.format(**spec))
    a = attncost.analyze(path, seq_len=traced_n, batch=2)
    assert len(a.sites) == spec["layers"], spec
    lo, hi = a.n_range
    for n, batch in checks:
        if n == traced_n or n < lo or (hi is not None and n > hi):
            continue
        assert a.at(a.flops, n, batch) == _oracle(path, n, batch), (spec, n, batch)
