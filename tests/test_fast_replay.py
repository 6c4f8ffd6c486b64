"""The eager replay of a repeated stack run two periods deep and extended
(attncost/memory/periodic.py).

The oracle: the replay of every layer (``periodic=False``).  The extended
replay must record the same ops, storages and deaths, and the memory model
built from it the same peak expression and breakdowns, on transformers
configs (identical layers, Gemma-2's alternation, mixture of experts) and
on a Python stack of period 3 that keeps each layer's output to the end.
A stack the extension cannot stand for (a partial last period, work after
the stack that grows with its depth) replays in full.  A mask whose batch
matrices are copies of one is read on the first only (detect/masks.py):
the oracle is patterns.mask.allowed_pairs on the whole mask.
"""
from __future__ import annotations

import importlib
import json
import textwrap
from pathlib import Path

import pytest
import sympy
import torch

from attncost.detect.masks import _allowed
from attncost.loader import load
from attncost.memory import peak_memory
from attncost.tracing import trace
from attncost.patterns.mask import allowed_pairs
from attncost.tracing.repeat import find_repeated

replay_module = importlib.import_module("attncost.memory.replay")
ROOT = Path(__file__).resolve().parent.parent

GEMMA2 = dict(model_type="gemma2", architectures=["Gemma2ForCausalLM"], hidden_size=64,
              intermediate_size=128, num_hidden_layers=6, num_attention_heads=4,
              num_key_value_heads=2, head_dim=16, vocab_size=256, max_position_embeddings=512,
              sliding_window=16, query_pre_attn_scalar=16, attn_logit_softcapping=50.0,
              final_logit_softcapping=30.0)
MIXTRAL = dict(model_type="mixtral", architectures=["MixtralForCausalLM"], hidden_size=64,
               intermediate_size=128, num_hidden_layers=5, num_attention_heads=4,
               num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
               vocab_size=256, max_position_embeddings=512, sliding_window=None)

#: Layers of three kinds (period 3); every layer's output is kept in a list
#: to the end, so storages of each period outlive the stack.  STACKED reads
#: them all after the stack: work whose size grows with the depth.
KEPT = '''
import torch
import torch.nn as nn

DIM = 32


class Mix(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.a = nn.Linear(DIM, DIM)
        self.b = nn.Linear(DIM, DIM)

    def forward(self, x):
        if self.kind == "attn":
            scores = (self.a(x) @ self.b(x).transpose(-1, -2)).softmax(-1)
            return x + scores @ x
        if self.kind == "gate":
            return x * torch.sigmoid(self.a(x)) + self.b(x)
        return x + self.b(torch.relu(self.a(x)))


class Kept(nn.Module):
    def __init__(self, kinds):
        super().__init__()
        self.emb = nn.Embedding(64, DIM)
        self.layers = nn.ModuleList(Mix(k) for k in kinds)
        self.head = nn.Linear(DIM, 64)

    def forward(self, ids):
        x = self.emb(ids)
        outs = []
        for layer in self.layers:
            x = layer(x)
            outs.append(x)
        if STACKED:
            return self.head(torch.stack(outs).sum(0))
        return self.head(outs[0] + outs[-1])


def build_model():
    return Kept(KINDS)


def example_inputs(seq_len, batch=1):
    return (torch.zeros(batch, seq_len, dtype=torch.long),)
'''


def _config(tmp_path, name, fields) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(fields))
    return folder


def _kept(tmp_path, kinds, stacked=False) -> Path:
    path = tmp_path / f"kept_{len(kinds)}_{stacked}.py"
    path.write_text(f"KINDS = {kinds!r}\nSTACKED = {stacked}\n" + textwrap.dedent(KEPT))
    return path


def _records(r):
    return ([(str(op.func), op.new, op.half_softmax) for op in r.ops],
            [(s.op, s.output, s.nbytes, s.death) for s in r.storages], r.end, r.batch)


def _same_memory(loaded, traced, monkeypatch):
    """The memory model from the extended replay and from the full one."""
    models = {}
    for periodic in (True, False):
        monkeypatch.setattr(replay_module, "PERIODIC", periodic)
        models[periodic] = peak_memory(traced, loaded)
    fast, full = models[True], models[False]
    assert full.liveness == fast.liveness == "eager replay"
    assert sympy.srepr(fast.peak_bytes) == sympy.srepr(full.peak_bytes)
    assert fast.notes == full.notes
    for n, b in ((48, 1), (48, 2), (300, 3)):
        assert fast.breakdown(n, b) == full.breakdown(n, b)
        assert fast.layer_peaks_at(n, b) == full.layer_peaks_at(n, b)


CASES = {
    "tinyllama": (lambda tmp: ROOT / "examples" / "tinyllama", {}),
    "llama-gqa": (lambda tmp: ROOT / "examples" / "llama-gqa", {}),
    "gemma2": (lambda tmp: _config(tmp, "gemma2", GEMMA2), {"attn_implementation": "eager"}),
    "mixtral": (lambda tmp: _config(tmp, "mixtral", MIXTRAL), {}),
    "kept-period-3": (lambda tmp: _kept(tmp, ["attn", "gate", "mlp"] * 4), {}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_extended_replay_is_the_full_replay(name, tmp_path, monkeypatch):
    make, options = CASES[name]
    loaded = load(make(tmp_path), **options)
    block = find_repeated(loaded.module, loaded.config)
    assert block is not None and block.count >= 3 * block.period
    traced = trace(loaded, 40, 1)
    for batch in (traced.batch_hint, 1):
        extended = replay_module._periodic(traced, loaded, batch)
        assert extended is not None, "the stack should be extended from two periods"
        full = replay_module.replay(traced, loaded, batch, periodic=False)
        assert _records(extended) == _records(full)
    _same_memory(loaded, traced, monkeypatch)


@pytest.mark.parametrize("kinds, stacked", [
    (["attn", "gate", "mlp"] * 3 + ["attn"], False),  # a partial last period
    (["attn", "gate", "mlp"] * 4, True),              # torch.stack of every layer's output
])
def test_stacks_the_extension_cannot_stand_for_replay_every_layer(kinds, stacked, tmp_path,
                                                                  monkeypatch):
    loaded = load(_kept(tmp_path, kinds, stacked))
    block = find_repeated(loaded.module)
    assert (block.period, block.count) == (3, len(kinds))
    traced = trace(loaded, 40, 1)
    assert replay_module._periodic(traced, loaded, 2) is None
    _same_memory(loaded, traced, monkeypatch)


# ------------------------------------------------------------------ masks read once per batch


def _two_level(n: int) -> torch.Tensor:
    i = torch.arange(n)
    return torch.where(i[None, :] <= i[:, None], 0.0, -100.0)


@pytest.mark.parametrize("polarity", ["allowed", "additive", "blocked", "masked_fill"])
@pytest.mark.parametrize("make", [
    lambda: _two_level(12).expand(2, 1, 12, 12),                       # a batch of copies
    lambda: torch.stack([_two_level(12), _two_level(12).T])[:, None],  # matrices that differ
    lambda: (torch.rand(3, 2, 9, 9) > 0.5),                            # random, boolean
    lambda: torch.full((2, 1, 5, 5), float("nan")),                     # never equal to itself
    lambda: torch.tensor([[1.0, 0.0], [0.0, 1.0]]).expand(4, 2, 2),    # ones and zeros
])
def test_mask_read_on_one_matrix_equals_the_whole(make, polarity):
    """The oracle: patterns.mask.allowed_pairs on every matrix of the mask."""
    value = make()
    whole = allowed_pairs(value, polarity)
    allowed, one = _allowed(value, polarity)
    assert allowed.shape == whole.shape and torch.equal(allowed, whole)
    assert bool(one.all()) == bool(whole.all())
