"""vit-pytorch (lucidrains) 1.26.14: attention that mixes its heads with a
learned matrix (CaiT's talking heads, DeepViT's re-attention) and attention
pooling whose query is a learned parameter (PatchMerger's queries, CCT's
sequence pooling).  The truth of each is read from the package's source
(see each model file); attncost's total FLOPs are checked against
FlopCounterMode on a real forward at the traced length and at one never
traced (batch 2), and each site's FLOPs against a count by hand:
Q·Kᵀ and P·V each 2·d per (query, key) pair and head."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
for _folder in (HERE, HERE.parent):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

import torch  # noqa: E402

from corpus import analysed  # noqa: E402
from oracle import count_flops, load_module  # noqa: E402
from published_vit_support import vit_module  # noqa: E402

HEADS, DIM_HEAD, TRACED, UNTRACED = 2, 16, 32, 48


def _pair_work(d: int, d_v: int) -> int:
    """One (query, key) pair of one head: 2·d for its score, 2·d_v for ·V."""
    return 2 * d + 2 * d_v


def real_flops(name: str, n: int, batch: int) -> int:
    """FlopCounterMode over a real forward, the parameters frozen: a slice
    of a trainable parameter taken under no_grad (the positional tables,
    ``pos_embedding[:, :n]``) has no grad_fn, which its module tracker asks
    of every output that requires a gradient.  Freezing counts the same."""
    mod = load_module(HERE / f"published_{name}.py")
    torch.manual_seed(0)
    model = mod.build_model().eval().requires_grad_(False)
    return count_flops(model, mod.example_inputs(n, batch=batch))


def _check_totals(name: str, a) -> None:
    assert a.at(a.flops, TRACED, 1) == real_flops(name, TRACED, 1)
    assert a.at(a.flops, UNTRACED, 2) == real_flops(name, UNTRACED, 2)


def _check_site(a, s, heads: int, lengths, d: int) -> None:
    """Dense, bidirectional, ``heads`` heads, (queries, keys) = lengths(n),
    its FLOPs and useful FLOPs every pair's work, at two lengths and batches."""
    assert (s.variant, s.causal, s.heads) == ("dense", False, heads), s
    for n, b in ((TRACED, 1), (UNTRACED, 2)):
        n_q, n_k = lengths(n)
        assert (a.at(s.query_len, n, b), a.at(s.key_len, n, b)) == (n_q, n_k)
        pairs = b * heads * n_q * n_k
        assert a.at(s.flops, n, b) == a.at(s.useful_flops, n, b) == pairs * _pair_work(d, d)


def _products(s) -> int:
    return sum(name.startswith(("bmm", "mm", "addmm")) for name in s.nodes)


# ------------------------------------------------------------------ talking heads


def test_cait_talking_heads_and_class_attention():
    # the source: a heads × heads matrix on either side of the softmax
    vit_module("cait")
    a = analysed("vit_cait", TRACED)
    assert len(a.sites) == 4, [(s.name, s.variant) for s in a.sites]
    patches = [s for s in a.sites if s.name.startswith("patch_transformer")]
    classes = [s for s in a.sites if s.name.startswith("cls_transformer")]
    assert len(patches) == len(classes) == 2
    for s in patches:  # N patches attend to each other
        _check_site(a, s, HEADS, lambda n: (n, n), DIM_HEAD)
        # Q·Kᵀ, the mixing before the softmax and after it, and ·V
        assert _products(s) == 4, s.nodes
    for s in classes:  # the class token attends to itself and the N patches
        assert (s.causal, s.heads) == (False, HEADS)
        for n, b in ((TRACED, 1), (UNTRACED, 2)):
            assert (a.at(s.query_len, n, b), a.at(s.key_len, n, b)) == (1, n + 1)
            pairs = b * HEADS * 1 * (n + 1)
            assert a.at(s.flops, n, b) == a.at(s.useful_flops, n, b) == \
                pairs * _pair_work(DIM_HEAD, DIM_HEAD)
    assert classes[0].variant == "dense"
    _check_totals("vit_cait", a)


def test_cait_second_class_layer_is_dense():
    """The class token that attended through talking heads in the first
    class layer is a token of that attention, not a summary of the
    sequence: the second class layer is dense too."""
    vit_module("cait")
    a = analysed("vit_cait", TRACED)
    classes = [s for s in a.sites if s.name.startswith("cls_transformer")]
    assert [s.variant for s in classes] == ["dense", "dense"]


def test_deepvit_reattention():
    # re-attention: weights mixed across heads and normalised over them before ·V
    vit_module("deepvit")
    a = analysed("vit_deepvit", TRACED)
    assert len(a.sites) == 2, [(s.name, s.variant) for s in a.sites]
    for s in a.sites:  # N patches and the class token
        _check_site(a, s, HEADS, lambda n: (n + 1, n + 1), DIM_HEAD)
        assert _products(s) == 3, s.nodes  # Q·Kᵀ, the mixing, ·V
        assert any(name.startswith("native_layer_norm") for name in s.nodes)
    _check_totals("vit_deepvit", a)


# ------------------------------------------------------------------ pooling


def test_patch_merger_learned_queries():
    module = vit_module("vit_with_patch_merger")
    # the source: the queries are a parameter of their own, no projection
    assert tuple(module.PatchMerger(32, 8).queries.shape) == (8, 32)
    a = analysed("vit_patch_merger", TRACED)
    assert len(a.sites) == 3, [(s.name, s.variant) for s in a.sites]
    first, pooled, second = a.sites
    _check_site(a, first, HEADS, lambda n: (n, n), DIM_HEAD)
    # 8 learned queries meet the N normed tokens, one head of width dim = 32
    assert pooled.name.endswith("patch_merger")
    _check_site(a, pooled, 1, lambda n: (8, n), 32)
    assert pooled.head_dim == 32
    _check_site(a, second, HEADS, lambda n: (8, 8), DIM_HEAD)
    _check_totals("vit_patch_merger", a)


def test_cct_sequence_pooling():
    vit_module("cct")
    a = analysed("vit_cct", TRACED)
    assert len(a.sites) == 3, [(s.name, s.variant) for s in a.sites]
    *layers, pooled = a.sites
    for s in layers:  # 2N tokens from the tokenizer
        _check_site(a, s, HEADS, lambda n: (2 * n, 2 * n), DIM_HEAD)
    # one learned query (Linear(32, 1)) over the 2N tokens, the tokens as values
    _check_site(a, pooled, 1, lambda n: (1, 2 * n), 32)
    assert pooled.head_dim == 32
    _check_totals("vit_cct", a)


def test_twins_heads_folded_with_windows_after_a_pointwise_convolution():
    """Twins' queries come from a 1×1 convolution (a projection of each
    position), their heads folded into the batch with the windows: 8 heads
    over the 8N tokens, not 64 "heads" of N read off the batch axis."""
    vit_module("twins_svt")
    a = analysed("vit_twins", 8)
    local, glob = a.sites
    assert (local.variant, local.heads, local.window) == ("local", 8, 4)
    assert (glob.variant, glob.heads) == ("dense", 8)
    for n, b in ((8, 1), (12, 2)):
        assert a.at(local.query_len, n, b) == 8 * n
        tokens = 8 * n
        assert a.at(local.useful_flops, n, b) == b * 8 * tokens * 4 * _pair_work(64, 64)
        assert a.at(glob.useful_flops, n, b) == b * 8 * tokens * 2 * n * _pair_work(64, 64)
    assert a.at(a.flops, 8, 1) == real_flops("vit_twins", 8, 1)
    assert a.at(a.flops, 12, 2) == real_flops("vit_twins", 12, 2)


# ------------------------------------------------------------------ masks and weights


def test_locality_self_attention_masks_each_tokens_own_key():
    """The diagonal masked: (N + 1)·N pairs a head, dense and not causal,
    said as every key but its own; the positional table's bound and the
    trace's own condition said as one range."""
    vit_module("vit_for_small_dataset")
    a = analysed("vit_small_dataset", TRACED)
    assert len(a.sites) == 2
    for s in a.sites:
        assert (s.variant, s.causal, s.heads) == ("dense", False, HEADS)
        assert any("every key but its own" in note for note in s.notes), s.notes
        assert not any("prefix" in note for note in s.notes), s.notes
        for n in (TRACED, UNTRACED):
            pairs = HEADS * (n + 1) * n
            assert a.at(s.useful_flops, n, 1) == pairs * _pair_work(DIM_HEAD, DIM_HEAD)
    assert a.valid_for() == "2 <= N <= 256", a.valid_for()
    _check_totals("vit_small_dataset", a)


def test_nvit_unit_norm_weights_make_no_site_of_the_feed_forward():
    """nViT's weights are normalised by a parametrization on every forward:
    its gated feed-forward multiplies the tokens by those weights, a layer,
    not keys; the sites are the two SDPA calls."""
    vit_module("normalized_vit")
    a = analysed("vit_normalized", TRACED)
    assert [s.implementation for s in a.sites] == ["sdpa", "sdpa"], \
        [(s.name, s.implementation, str(s.key_len)) for s in a.sites]
    for s in a.sites:
        _check_site(a, s, HEADS, lambda n: (n, n), DIM_HEAD)
    _check_totals("vit_normalized", a)
