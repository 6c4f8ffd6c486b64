"""Speech encoders that read a raw waveform, built from transformers configs.

wav2vec 2.0, HuBERT, WavLM and SEW-D take ``input_values``: samples that a
stack of strided convolutions cuts into frames, which the transformer
reads.  N is those frames; the waveform is the fewest samples that make N
of them, S·(N − 1) + R (S the strides' product, R the receptive field:
transformers' ``_get_feat_extract_output_lengths``, checked here on the
real model).  The truth of each site was read from transformers' source:

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
"""
from __future__ import annotations

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


def _real(name: str):
    config = transformers_config(CONFIGS[name])
    config._attn_implementation = IMPLEMENTATION[name]
    torch.manual_seed(0)
    return getattr(transformers, CONFIGS[name]["architectures"][0])(config).eval() \
        .requires_grad_(False)


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    import json

    done = {}
    for name, fields in CONFIGS.items():
        folder = tmp_path_factory.mktemp(name)
        (folder / "config.json").write_text(json.dumps(fields))
        done[name] = attncost.analyze(folder, seq_len=64, device="cpu", dtype="float32",
                                      attn_implementation=IMPLEMENTATION[name])
    return done


def test_the_waveform_makes_n_frames():
    model = _real("wav2vec2")
    for n in (7, 64, 101):
        assert int(model._get_feat_extract_output_lengths(SAMPLES(n))) == n


@pytest.mark.parametrize("name", list(CONFIGS))
def test_speech_encoders_flops_and_sites(analysed, name):
    a = analysed[name]
    frames = N / 2 if name == "sew-d" else N
    assert [(s.variant, s.causal, s.heads, s.query_len, s.key_len) for s in a.sites] == \
        [("dense", False, HEADS, frames, frames)] * 2, name
    model = _real(name)
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
