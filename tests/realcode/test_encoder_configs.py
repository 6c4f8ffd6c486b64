"""Encoders built from transformers configs whose input is not token ids:
N is what their attention runs over, and the input is built for it.  Each
is measured against FlopCounterMode on the real model, and its sites
against the truth read from transformers' source.

Speech encoders take ``input_values``, samples that a stack of strided
convolutions cuts into frames, which the transformer reads.  N is those
frames; the waveform is the fewest samples that make N of them,
S·(N − 1) + R (S the strides' product, R the receptive field:
transformers' ``_get_feat_extract_output_lengths``, checked here):

- wav2vec 2.0: bidirectional attention over the N frames;
- WavLM: bidirectional, with a relative-position bias gated by the hidden
  states (``WavLMAttention.compute_bias``: buckets of ``memory - context``,
  both signs); its positional convolution is weight-normalised, so with
  the weights read as zeros the hidden states are 0/0;
- SEW-D: the frames pooled by ``squeeze_factor`` (2) before DeBERTa's
  disentangled attention, whose softmax (``XSoftmax``) zeroes the masked
  rows of its weights in place, and whose position terms (content to
  position and position to content, ``position_buckets`` 16: 2·16
  relative positions) count in its work; upsampled back after, with a pad
  where N is odd (a branch on the length).

Vision encoders take pixels:

- ViT: its position table is made for the config's grid (14 × 14 = 196
  patches here) and interpolated to any other
  (``ViTEmbeddings.interpolate_pos_encoding``, which returns the table as
  it is when ``num_patches == num_positions`` and the image is square).
  Asked at N = 196 the trace meets that comparison; the image attncost
  builds is one patch tall, so the table is interpolated at 196 as well,
  at the same cost: one dense bidirectional site over the N patches and
  the class token, for every N.  CLIP's vision tower (8 × 8 = 64) makes
  the same comparison, which its trace keeps as a guard ``Eq(N, 64)``;
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

from oracle import analysed_configs, count_flops, transformers_config  # noqa: E402

HEADS, DIM_HEAD = 2, 16
CONV = dict(conv_dim=[16, 16], conv_stride=[5, 2], conv_kernel=[10, 3])
COMMON = dict(vocab_size=32, hidden_size=HEADS * DIM_HEAD, num_hidden_layers=2,
              num_attention_heads=HEADS, intermediate_size=64, num_conv_pos_embeddings=16,
              num_conv_pos_embedding_groups=2, **CONV)
#: samples for n frames by hand: strides 5·2 = 10; receptive field 10 + (3 − 1)·5 = 20
SAMPLES = lambda n: 10 * (n - 1) + 20  # noqa: E731

CONFIGS = {
    "wav2vec2": dict(COMMON, model_type="wav2vec2", architectures=["Wav2Vec2ForCTC"]),
    "wavlm": dict(COMMON, model_type="wavlm", architectures=["WavLMForCTC"], num_buckets=32,
                  max_bucket_distance=64),
    "sew-d": dict(COMMON, model_type="sew-d", architectures=["SEWDForCTC"], squeeze_factor=2,
                  position_buckets=16, max_position_embeddings=64),
}
IMPLEMENTATION = {"wav2vec2": "sdpa", "wavlm": "eager", "sew-d": "eager"}


def _real(fields: dict, implementation: str):
    """The real model of a config, with random weights."""
    config = transformers_config(fields)
    config._attn_implementation = implementation
    torch.manual_seed(0)
    return getattr(transformers, fields["architectures"][0])(config).eval() \
        .requires_grad_(False)


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    return analysed_configs(tmp_path_factory, CONFIGS, IMPLEMENTATION)


def test_the_waveform_makes_n_frames():
    model = _real(CONFIGS["wav2vec2"], "sdpa")
    for n in (7, 64, 101):
        assert int(model._get_feat_extract_output_lengths(SAMPLES(n))) == n


@pytest.mark.parametrize("name", list(CONFIGS))
def test_speech_encoders_flops_and_sites(analysed, name):
    a = analysed[name]
    frames = N / 2 if name == "sew-d" else N
    assert [(s.variant, s.causal, s.heads, s.query_len, s.key_len) for s in a.sites] == \
        [("dense", False, HEADS, frames, frames)] * 2, name
    model = _real(CONFIGS[name], IMPLEMENTATION[name])
    for n, b in ((64, 1), (96, 2)):
        inputs = {"input_values": torch.randn(b, SAMPLES(n))}
        assert a.at(a.flops, n, b) == count_flops(model, (), inputs), (name, n, b)
        per_pair = 2 * (DIM_HEAD + DIM_HEAD)
        pairs = (n // 2) ** 2 if name == "sew-d" else n ** 2
        by_hand = b * HEADS * pairs * per_pair
        if name == "sew-d":  # c2p and p2c: each query (key) against 2·16 relative positions
            by_hand += 2 * b * HEADS * 2 * (n // 2) * (2 * 16) * DIM_HEAD
        assert a.at(a.sites[0].useful_flops, n, b) == by_hand, (name, n, b)


def test_a_pad_on_odd_lengths_says_n_even(analysed):
    assert "N even" in analysed["sew-d"].valid_for()
    assert "N even" not in (analysed["wav2vec2"].valid_for() or "")


# ------------------------------------------------------------------ vision

PATCH = 4
VIT = dict(model_type="vit", architectures=["ViTModel"], hidden_size=32, intermediate_size=64,
           num_hidden_layers=2, num_attention_heads=HEADS, image_size=56, patch_size=PATCH)
SWIN = dict(model_type="swin", architectures=["SwinModel"], embed_dim=16, depths=[2],
            num_heads=[HEADS], window_size=4, image_size=32, patch_size=PATCH)


def _analysed(tmp_path, fields, seq_len):
    (tmp_path / "config.json").write_text(json.dumps(fields))
    return attncost.analyze(tmp_path, seq_len=seq_len, device="cpu", dtype="float32")


#: CLIP's vision tower: an 8 × 8 grid, the same comparison in its embeddings
CLIP = dict(model_type="clip_vision_model", architectures=["CLIPVisionModel"], hidden_size=32,
            intermediate_size=64, num_hidden_layers=2, num_attention_heads=HEADS, image_size=32,
            patch_size=PATCH)


@pytest.mark.parametrize("fields", [VIT, CLIP], ids=["vit", "clip"])
def test_vit_asked_at_its_own_grid_holds_for_every_n(tmp_path, fields):
    grid = (fields["image_size"] // PATCH) ** 2
    a = _analysed(tmp_path, fields, grid)
    assert a.n_range[1] is None and a.valid_for() in (None, "N >= 2"), \
        (a.n_range, a.valid_for())
    # traced with N a symbol, not fitted from short traces as a loop over N would be
    assert any("another branch" in note for note in a.notes), a.notes
    assert not any("fitted" in note for note in a.notes), a.notes
    assert [(s.variant, s.causal, s.query_len, s.key_len) for s in a.sites] == \
        [("dense", False, N + 1, N + 1)] * 2
    model = _real(fields, "sdpa")
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
    model = _real(SWIN, "sdpa")
    for n, b in ((64, 1), (96, 2), (300, 1)):
        pixels = torch.randn(b, 3, PATCH * rows, PATCH * n)
        assert a.at(a.flops, n, b) == count_flops(model, (), {"pixel_values": pixels}), (n, b)
