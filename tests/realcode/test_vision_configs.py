"""Vision encoders built from transformers configs, measured against
FlopCounterMode on the real model and against the truth read from
transformers' source:

- ViT: its position table is made for the config's grid (14 × 14 = 196
  patches here) and interpolated to any other
  (``ViTEmbeddings.interpolate_pos_encoding``, which returns the table as
  it is when ``num_patches == num_positions`` and the image is square).
  Asked at N = 196 the trace meets that comparison; the image attncost
  builds is one patch tall, so the table is interpolated at 196 as well,
  at the same cost: one dense bidirectional site over the N patches and
  the class token, for every N.
- Swin: attention within windows of 4 × 4 patches (16 keys a query), every
  other block shifted and masked (``SwinLayer.get_attn_mask``); an image
  shorter than a window makes Swin shrink its window to the image, for
  good (``set_shift_and_window_size``), so the image is a window tall.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import attncost
from attncost.expr import N

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

HERE = Path(__file__).parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from oracle import count_flops, transformers_config  # noqa: E402

HEADS, PATCH = 2, 4
VIT = dict(model_type="vit", architectures=["ViTModel"], hidden_size=32, intermediate_size=64,
           num_hidden_layers=2, num_attention_heads=HEADS, image_size=56, patch_size=PATCH)
SWIN = dict(model_type="swin", architectures=["SwinModel"], embed_dim=16, depths=[2],
            num_heads=[HEADS], window_size=4, image_size=32, patch_size=PATCH)


def _real(fields):
    config = transformers_config(fields)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return getattr(transformers, fields["architectures"][0])(config).eval().requires_grad_(False)


def _analysed(tmp_path, fields, seq_len):
    (tmp_path / "config.json").write_text(json.dumps(fields))
    return attncost.analyze(tmp_path, seq_len=seq_len, device="cpu", dtype="float32")


def test_vit_asked_at_its_own_grid_holds_for_every_n(tmp_path):
    grid = (VIT["image_size"] // PATCH) ** 2
    a = _analysed(tmp_path, VIT, grid)
    assert a.n_range[1] is None and a.valid_for() is None, (a.n_range, a.valid_for())
    # traced with N a symbol, not fitted from short traces as a loop over N would be
    assert any("another branch" in note for note in a.notes), a.notes
    assert not any("fitted" in note for note in a.notes), a.notes
    assert [(s.variant, s.causal, s.query_len, s.key_len) for s in a.sites] == \
        [("dense", False, N + 1, N + 1)] * 2
    model = _real(VIT)
    for n, b in ((grid, 1), (100, 2)):
        pixels = torch.randn(b, 3, PATCH, PATCH * n)
        truth = count_flops(model, (), {"pixel_values": pixels, "interpolate_pos_encoding": True})
        assert a.at(a.flops, n, b) == truth, (n, b)
        assert a.at(a.sites[0].useful_flops, n, b) == b * HEADS * (n + 1) ** 2 * 2 * 32


def test_swin_windows_are_read_on_an_image_a_window_tall(tmp_path):
    a = _analysed(tmp_path, SWIN, 64)
    rows = SWIN["window_size"]
    assert [(s.variant, s.causal, s.window, s.query_len) for s in a.sites] == \
        [("local", False, rows * rows, rows * N)] * 2
    assert "N >= 8, N a multiple of 4" in a.valid_for()
    model = _real(SWIN)
    for n, b in ((64, 1), (96, 2), (300, 1)):
        pixels = torch.randn(b, 3, PATCH * rows, PATCH * n)
        assert a.at(a.flops, n, b) == count_flops(model, (), {"pixel_values": pixels}), (n, b)
