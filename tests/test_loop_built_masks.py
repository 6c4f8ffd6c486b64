"""A sliding-window mask built by a Python loop over the length (as litgpt
builds it) fixes N while tracing, so the cost is fitted from short traces;
up to the window every trace sees all causal pairs, another polynomial than
past it, so the fit is made past the window and holds for every N there.
Truth: FlopCounterMode on the real model, and the window's pairs counted by
brute force."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import attncost
from oracle import count_flops

PATH = Path(__file__).parent / "models" / "loop_built_window.py"


def _module():
    spec = importlib.util.spec_from_file_location("loop_built_window", PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _window_pairs(n: int, window: int) -> int:
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    return int(((j <= i) & (i - j < window)).sum())


@pytest.mark.parametrize("seq_len", [64, 256])
def test_a_window_built_by_a_loop_is_fitted_past_the_window(seq_len):
    mod = _module()
    a = attncost.analyze(PATH, seq_len=seq_len, device="cpu", dtype="float32")
    assert [(s.variant, s.causal, s.window) for s in a.sites] == [("local", True, 16)] * 2
    per_pair = mod.HEADS * 2 * (2 * mod.DIM // mod.HEADS)  # 2·(d_qk + d_v) a pair and head
    model = mod.build_model().eval()
    for n in (40, 100, 300):  # never traced
        assert a.holds_at(n, 2), (n, a.n_range)
        assert a.at(a.flops, n, 2) == count_flops(model, mod.example_inputs(n, 2)), n
        for site in a.sites:
            assert a.at(site.useful_flops, n, 2) == 2 * per_pair * _window_pairs(n, 16), n
