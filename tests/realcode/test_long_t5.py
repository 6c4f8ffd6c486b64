"""LongT5's transient-global encoder attention, from a transformers config
(modeling_longt5.py, ``LongT5TransientGlobalAttention``): the tokens cut
into blocks of ``local_radius + 1``, each block's queries against its own
and its two neighbours' keys, masked to ``|i − j| <= local_radius`` (the
local attention, which test_data_dependent.py checks alone), plus one
summary token per ``global_block_size`` tokens, every query against every
summary (``_create_global_aggregates``: a one-hot of each token's block
id, over N // g + 1 classes, and ``torch.tensor`` of the count as the
spare class; both calls take the count as a number).  The length is
padded to a multiple of the block, a branch on N.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch


transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

HERE = Path(__file__).parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from oracle import analysed_configs, count_flops, transformers_config  # noqa: E402

HEADS, DIM_HEAD, RADIUS, GLOBAL_BLOCK = 2, 16, 15, 8
BLOCK = RADIUS + 1
CONFIGS = {"transient-global": dict(
    model_type="longt5", architectures=["LongT5EncoderModel"], vocab_size=64, d_model=32,
    d_kv=DIM_HEAD, d_ff=64, num_layers=2, num_heads=HEADS, local_radius=RADIUS,
    global_block_size=GLOBAL_BLOCK, encoder_attention_type="transient-global")}


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    return analysed_configs(tmp_path_factory, CONFIGS, "eager")


def _real(fields: dict):
    config = transformers_config(fields)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    return transformers.LongT5EncoderModel(config).eval().requires_grad_(False)


def _local_pairs(n: int) -> int:
    """(query, key) pairs with |i − j| <= RADIUS, counted one by one."""
    return sum(1 for i in range(n) for j in range(n) if abs(i - j) <= RADIUS)


def test_sites_keys_and_flops_at_lengths_never_traced(analysed):
    a = analysed["transient-global"]
    assert len(a.sites) == 2 and all(s.heads == HEADS and not s.causal for s in a.sites)
    model = _real(CONFIGS["transient-global"])
    for n, b in ((64, 1), (96, 2), (160, 1), (400, 1)):
        real = count_flops(model, (), {"input_ids": torch.randint(0, 64, (b, n))})
        assert a.at(a.flops, n, b) == real, (n, b)
        for site in a.sites:  # its blocks' keys, and a summary of every block
            assert a.at(site.key_len, n, b) == 3 * BLOCK + n // GLOBAL_BLOCK, n
            pairs = _local_pairs(n) + n * (n // GLOBAL_BLOCK)
            assert a.at(site.useful_flops, n, b) == b * HEADS * pairs * 4 * DIM_HEAD, n


def test_the_block_padding_is_said(analysed):
    for a in analysed.values():
        assert a.n_range[1] is None and "multiple of 16" in a.valid_for()
