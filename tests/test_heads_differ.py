"""One attention computation whose heads let different pairs through (some
local, some global): one site per kind of head, each with its own heads.

Oracles: FlopCounterMode over a real forward (the sites' FLOPs together are
the computation's), and the pairs each head lets through counted by brute
force on position grids written here.
"""
from __future__ import annotations

import textwrap

import pytest
import torch

import attncost
from oracle import count_flops, load_module

HEADS, D, DV, WINDOW = 4, 16, 8, 8
#: heads 0 and 2 see a causal window; 1 and 3 every earlier key
LOCAL_HEADS = (0, 2)

HEADER = f"""
import torch
import torch.nn as nn
HEADS, D, DV, WINDOW, LOCAL_HEADS = {HEADS}, {D}, {DV}, {WINDOW}, {LOCAL_HEADS}
DIM = 32
def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, DIM),)
def build_model():
    return Stack()
class Stack(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([Mixed(), Mixed()])
    def forward(self, x):
        for layer in self.layers:
            x = x + layer(x)
        return x
"""

UNFUSED = """
class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = nn.Linear(DIM, HEADS * D)
        self.k = nn.Linear(DIM, HEADS * D)
        self.v = nn.Linear(DIM, HEADS * DV)
        self.o = nn.Linear(HEADS * DV, DIM)
    def forward(self, x):
        b, n, _ = x.shape
        q = self.q(x).view(b, n, HEADS, D).transpose(1, 2)
        k = self.k(x).view(b, n, HEADS, D).transpose(1, 2)
        v = self.v(x).view(b, n, HEADS, DV).transpose(1, 2)
        i = torch.arange(n)[:, None]
        j = torch.arange(n)[None, :]
        causal = j <= i
        local = causal & (i - j < WINDOW)
        allowed = torch.stack([local if h in LOCAL_HEADS else causal for h in range(HEADS)])
        scores = (q @ k.transpose(-1, -2)).masked_fill(~allowed, float("-inf"))
        out = scores.softmax(-1) @ v
        return self.o(out.transpose(1, 2).reshape(b, n, HEADS * DV))
"""

FLEX = """
from torch.nn.attention.flex_attention import create_block_mask, flex_attention
def per_head(b, h, q_idx, kv_idx):
    local = (h == LOCAL_HEADS[0]) | (h == LOCAL_HEADS[1])
    return (q_idx >= kv_idx) & ((q_idx - kv_idx < WINDOW) | ~local)
class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(DIM, 3 * HEADS * D)
        self.o = nn.Linear(HEADS * D, DIM)
    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, HEADS, D).permute(2, 0, 3, 1, 4)
        mask = create_block_mask(per_head, None, HEADS, n, n, device=x.device)
        out = flex_attention(q, k, v, block_mask=mask)
        return self.o(out.transpose(1, 2).reshape(b, n, HEADS * D))
"""


def _pairs(n: int, local: bool) -> int:
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    ok = j <= i
    if local:
        ok &= (i - j) < WINDOW
    return int(ok.sum())


def _real_flops(model, inputs, flex: bool) -> int:
    """FlopCounterMode over a real forward; FlexAttention does not run under
    it on a CPU, so that model is counted by hand: per layer, the qkv and
    output projections 2·B·N·(32·3·H·D + H·D·32), and the call 2·2·B·H·N²·D."""
    if not flex:
        return count_flops(model, inputs)
    b, n, dim = inputs[0].shape
    per_layer = 2 * b * n * (dim * 3 * HEADS * D + HEADS * D * dim) + 4 * b * HEADS * n * n * D
    return len(model.layers) * per_layer


def _model(tmp_path, body: str):
    path = tmp_path / "mixed_heads.py"
    path.write_text(textwrap.dedent(HEADER) + textwrap.dedent(body))
    return path


@pytest.mark.parametrize("body, dv", [(UNFUSED, DV), (FLEX, D)], ids=["unfused", "flex"])
def test_heads_that_differ_are_one_site_per_kind(tmp_path, body, dv):
    flex = body is FLEX
    path = _model(tmp_path, body)
    a = attncost.analyze(path, seq_len=64, device="cpu")
    kinds = sorted((s.variant, s.causal, s.window, s.heads, tuple(s.head_indices or ()))
                   for s in a.sites)
    assert kinds == sorted([("local", True, WINDOW, 2, LOCAL_HEADS),
                            ("dense", True, None, 2, (1, 3))] * 2), kinds
    # Each kind's useful FLOPs: its heads' pairs by brute force, at 8× the
    # traced length (FlexAttention's trace holds up to one block of 128).
    n = min(512, a.n_range[1] or 512)
    for s in a.sites:
        per_pair = 2 * (D + dv)
        assert a.at(s.useful_flops, n, 1) == s.heads * per_pair * _pairs(n, s.variant == "local")
    # The sites' FLOPs together are the real forward's attention: the model's
    # total against FlopCounterMode, at the traced length and one never traced.
    mod = load_module(path)
    torch.manual_seed(0)
    model = mod.build_model().eval()
    for length, batch in ((64, 1), (96, 2)):
        assert a.at(a.flops, length, batch) == _real_flops(model, mod.example_inputs(length, batch), flex)
    halves = {s.name: a.at(s.flops, 96, 1) for s in a.sites}
    assert len(set(halves.values())) == 1 and len(halves) == 4, halves


def test_heads_that_agree_stay_one_site(tmp_path):
    body = UNFUSED.replace("local if h in LOCAL_HEADS else causal", "local")
    a = attncost.analyze(_model(tmp_path, body), seq_len=64, device="cpu")
    assert [(s.variant, s.heads, s.head_indices) for s in a.sites] == [("local", HEADS, None)] * 2
