"""Attention computed in blocks (memory-efficient-attention-pytorch): the
queries and keys split into chunks along the sequence, a Python loop over
the pairs of chunks.  The blocks are one attention per layer: one site,
named by the pairs of every block placed at its offsets.  The truth is
checked on the package (its chunked attention equals its plain attention);
the work is counted by hand from the package's skip rule and checked
against FlopCounterMode on a real forward at the traced length and at one
never traced (batch 2)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import attncost

HERE = Path(__file__).parent
for _folder in (HERE, HERE.parent):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

from corpus import analysed, real_flops  # noqa: E402
from published_support import require  # noqa: E402

HEADS, DIM_HEAD, Q_CHUNK, K_CHUNK = 2, 16, 32, 64


def blocks_computed(n: int, causal: bool) -> list[tuple[int, int, int, int]]:
    """(query start, queries, key start, keys) of each pair of chunks the
    package computes: a pair whose first key follows its last query is
    skipped when causal (memory_efficient_attention's loop)."""
    out = []
    for qs in range(0, n, Q_CHUNK):
        rows = min(Q_CHUNK, n - qs)
        for ks in range(0, n, K_CHUNK):
            if causal and ks > qs + rows - 1:
                continue
            out.append((qs, rows, ks, min(K_CHUNK, n - ks)))
    return out


def hand_flops(n: int, causal: bool) -> int:
    # per block and head: Q·Kᵀ and P·V, 2·d FLOPs per (query, key) pair each
    return sum(HEADS * rows * keys * 2 * (2 * DIM_HEAD)
               for _, rows, _, keys in blocks_computed(n, causal))


@pytest.mark.parametrize("name,causal", [("mea_causal", True), ("mea_bidirectional", False)])
def test_blocks_are_one_site_per_layer(name, causal):
    a = analysed(name, 256)
    assert len(a.sites) == 2, [(s.name, s.variant, s.implementation) for s in a.sites]
    for s in a.sites:
        assert (s.variant, s.causal, s.heads, s.implementation) == \
            ("dense", causal, HEADS, "chunked")
        assert a.at(s.flops, 256, 1) == hand_flops(256, causal)
        pairs = 256 * 257 // 2 if causal else 256 * 256
        assert a.at(s.useful_flops, 256, 1) == HEADS * pairs * 2 * (2 * DIM_HEAD)
    assert len(blocks_computed(256, causal)) == (20 if causal else 32)


@pytest.mark.parametrize("name", ["mea_causal", "mea_bidirectional"])
def test_blocks_flops_against_a_real_forward(name):
    a = analysed(name, 256)
    # the trace holds while the length cuts into 8 query chunks (and 4 key chunks)
    assert a.n_range == (226, 256)
    assert a.at(a.flops, 256, 1) == real_flops(name, 256, 1)
    assert a.at(a.flops, 240, 2) == real_flops(name, 240, 2)
    site = a.sites[0]
    causal = site.causal
    assert a.at(site.flops, 240, 2) == 2 * hand_flops(240, causal)


def test_chunked_attention_is_exact_attention_on_the_package():
    mea = require("memory_efficient_attention_pytorch.memory_efficient_attention")
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, HEADS, 100, DIM_HEAD) for _ in range(3))
    for causal in (True, False):
        chunked = mea.memory_efficient_attention(q, k, v, causal=causal, q_bucket_size=Q_CHUNK,
                                                 k_bucket_size=K_CHUNK)
        plain = mea.attention(q, k, v, causal=causal)
        assert torch.allclose(chunked, plain, atol=1e-5)
    # causal: query i reaches keys 0..i (V = the identity, no scaling of rows)
    eye = torch.eye(100).expand(1, HEADS, 100, 100)
    out = mea.memory_efficient_attention(q, k, eye, causal=True, q_bucket_size=Q_CHUNK,
                                         k_bucket_size=K_CHUNK)
    assert torch.equal(out[0, 0] > 0, torch.tril(torch.ones(100, 100, dtype=torch.bool)))


def test_more_chunks_than_a_trace_unrolls_is_refused_not_misfitted():
    # at 4k the loop runs 128 query chunks: costed from short traces (one
    # chunk each), the fit would miss the chunks; the trace that checks it
    # at 4k runs past what the fit expects, and the analysis says so
    from attncost.errors import AttncostError

    with pytest.raises(AttncostError, match="not what the fit says"):
        attncost.analyze(HERE / "published_mea_causal.py", seq_len=4096, device="cpu")
