"""Layers traced one period deep and replayed (attncost/tracing/repeat.py).

The oracles: FlopCounterMode over a real forward at lengths never traced,
a full trace of every layer (the replay must give the same graph), and
periods counted by hand on lists of layer kinds.
"""
from __future__ import annotations

import textwrap

import pytest
import torch

import attncost
import attncost.tracing as tracing
from attncost.detect.evaluate import Evaluations
from attncost.loader import load
from attncost.rules.flops import node_flops
from attncost.tracing import trace
from attncost.tracing.repeat import find_repeated, period_of
from conftest import MODELS
from oracle import count_flops, load_module

# ------------------------------------------------------------------ periods, by hand


@pytest.mark.parametrize("kinds, period", [
    ("aaaa", 1),                 # identical layers
    ("abababab", 2),             # Gemma-2's local/global alternation
    ("ababababa", 2),            # a partial last period
    ("aaaaabaaaaabaaaaab", 6),   # Gemma-3's 5:1
    ("aaaaab" * 3 + "aa", 6),    # 5:1 with a partial last period
    ("aaaaabaaaaabaa", None),    # 14 layers: fewer than three periods of 6
    ("aaabaaabaaab", 4),         # Llama-4's 3:1
    ("abab", None),              # saves nothing: two periods are traced anyway
    ("aab", None),               # too few layers
    ("abcabd", None),            # no period
])
def test_period_of_lists_of_kinds(kinds, period):
    assert period_of(list(kinds)) == period


# ------------------------------------------------------------------ a stack of three kinds

#: Ten layers of three kinds, repeating with period 3 (the last period
#: partial): a windowed causal attention, a full causal one, a feed-forward.
#: The window is a mask built inside the layer from N, so its formula in N
#: must be the one the layer computes at every length.
STACK = '''
import torch
import torch.nn as nn
import torch.nn.functional as F

DIM, HEADS = 32, 2
KINDS = ["window", "causal", "mlp"] * 3 + ["window"]


class Attention(nn.Module):
    def __init__(self, window):
        super().__init__()
        self.window = window
        self.qkv = nn.Linear(DIM, 3 * DIM, bias=False)
        self.out = nn.Linear(DIM, DIM, bias=False)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, HEADS, DIM // HEADS).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / (DIM // HEADS) ** 0.5
        i = torch.arange(n, device=x.device)
        blocked = i[None, :] > i[:, None]
        if self.window:
            blocked = blocked | (i[:, None] - i[None, :] >= self.window)
        scores = scores.masked_fill(blocked, float("-inf"))
        o = scores.softmax(-1) @ v
        return x + self.out(o.transpose(1, 2).reshape(b, n, DIM))


class FeedForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.Linear(DIM, 3 * DIM)
        self.down = nn.Linear(3 * DIM, DIM)

    def forward(self, x):
        return x + self.down(F.gelu(self.up(x)))


class Stack(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(64, DIM)
        self.layers = nn.ModuleList(
            FeedForward() if k == "mlp" else Attention(8 if k == "window" else 0) for k in KINDS)
        self.head = nn.Linear(DIM, 64, bias=False)

    def forward(self, ids):
        x = self.emb(ids)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def build_model():
    return Stack()


def example_inputs(seq_len, batch=1):
    return (torch.zeros(batch, seq_len, dtype=torch.long),)
'''


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    path = tmp_path_factory.mktemp("replay") / "stack.py"
    path.write_text(textwrap.dedent(STACK))
    return path


def _ops(t):
    return [(str(n.target), str(t.shape(n))) for n in t.graph_module.graph.nodes
            if n.op == "call_function" and "sym_size" not in str(n.target)]


def _layer_flops(t):
    """FLOP formula of each layer, by the module path of its nodes."""
    out: dict[str, object] = {}
    for n in t.graph_module.graph.nodes:
        f = node_flops(t, n)
        if f != 0:
            layer = ".".join(t.module_path(n).split(".")[:2])
            out[layer] = out.get(layer, 0) + f
    return out


def test_three_kinds_replayed_equal_a_full_trace(stack, monkeypatch):
    loaded = load(stack)
    block = find_repeated(loaded.module)
    assert (block.path, block.period, block.count) == ("layers", 3, 10)
    replayed = []

    def spy(*args):
        replayed.append(real_replay(*args))
        return replayed[-1]

    real_replay = tracing.replay_layers
    monkeypatch.setattr(tracing, "replay_layers", spy)
    reused = trace(loaded, 40, 1, reuse_layers=True)
    assert replayed == [True]  # the shortcut was taken, not a fallback to a full trace
    full = trace(loaded, 40, 1, reuse_layers=False)
    assert _ops(reused) == _ops(full)
    # layer by layer, each copied layer has the formula the full trace gives it
    assert _layer_flops(reused) == _layer_flops(full)
    assert len(_layer_flops(full)) == 11  # ten layers and the head


def test_three_kinds_flops_equal_flopcountermode_where_never_traced(stack):
    a = attncost.analyze(stack, seq_len=40, device="cpu")
    assert [s.layer for s in a.sites] == [f"layers.{i}" for i in (0, 1, 3, 4, 6, 7, 9)]
    model = load_module(stack).build_model().eval()
    for n, b in ((40, 1), (23, 2), (97, 1)):
        assert a.at(a.flops, n, b) == count_flops(model, (torch.zeros(b, n, dtype=torch.long),))


# ------------------------------------------------------------------ sizes written otherwise

PADDED = MODELS / "padded_blocks_stack.py"


def test_layers_holding_their_position_and_nesting_sizes_are_replayed(monkeypatch):
    """Each layer of the padded stack holds its own ``layer_id`` and hands
    the next one its length written more nested: still one repeated layer,
    and replayed (a full trace of it, each layer's sizes nested once more,
    takes minutes: the spy stops one at once).  The replay's FLOPs are
    checked against FlopCounterMode below."""
    loaded = load(PADDED)
    block = find_repeated(loaded.module)
    assert (block.path, block.period, block.count) == ("layers", 1, 8)

    def spy(*args):
        if not real_replay(*args):
            raise AssertionError("the traced layers were not replayed")
        return True

    real_replay = tracing.replay_layers
    monkeypatch.setattr(tracing, "replay_layers", spy)
    reused = trace(loaded, 64, 1, reuse_layers=True)
    assert len(_layer_flops(reused)) == 8


def test_padded_stack_flops_equal_flopcountermode_where_never_traced():
    a = attncost.analyze(PADDED, seq_len=64, device="cpu")
    assert len(a.sites) == 8 and {(s.variant, s.window) for s in a.sites} == {("local", 16)}
    model = load_module(PADDED).build_model().eval()
    module = load_module(PADDED)
    for n, b in ((64, 1), (48, 2), (160, 1)):
        assert a.at(a.flops, n, b) == count_flops(model, module.example_inputs(n, b))


def _evaluations_run(path, monkeypatch) -> int:
    runs = []
    real = Evaluations.__setitem__
    monkeypatch.setattr(Evaluations, "__setitem__",
                        lambda self, key, value: (runs.append(key), real(self, key, value)))
    attncost.analyze(path, seq_len=64, device="cpu")
    return len(runs)


def test_copied_layers_read_their_masks_from_the_layer_they_copy(tmp_path, monkeypatch):
    """Reading which pairs a blocked site lets through runs its layer's
    ops at several lengths; a copied layer runs the same ops on the same
    values, so eight layers run what four do (layers 0 and 1 differ: the
    first reads the plain length)."""
    counts = {}
    for layers in (4, 8):
        path = tmp_path / f"stack{layers}.py"
        path.write_text(PADDED.read_text().replace("LAYERS = 8", f"LAYERS = {layers}"))
        counts[layers] = _evaluations_run(path, monkeypatch)
    assert counts[4] > 0 and counts[8] == counts[4]
