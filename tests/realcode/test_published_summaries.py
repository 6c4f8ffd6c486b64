"""Published attention that is not a softmax over N×N scores: keys
projected along the sequence (Linformer), landmarks pooled from it
(Nyström), gated attention units whose scores are weighed by a squared ReLU
instead of a softmax (FLASH), and Based's parallel form, weighed by a
polynomial with no weighing op at all, or a retention's, by a decay.  The truth of each was read from
the package's source (see each model file) and is checked on the package;
attncost's FLOPs are checked against FlopCounterMode on a real forward, at
the traced length and at one never traced (batch 2); the per-site counts
are derived by hand below."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import sympy
import torch
from torch.utils._python_dispatch import TorchDispatchMode

HERE = Path(__file__).parent
for _folder in (HERE, HERE.parent):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

from corpus import analysed, real_flops  # noqa: E402
from oracle import load_module  # noqa: E402
from published_support import require  # noqa: E402

HEADS, DIM_HEAD = 2, 16


def _per_layer(a) -> dict[str, list]:
    layers: dict[str, list] = {}
    for s in a.sites:
        layers.setdefault(s.layer, []).append(s)
    return layers


# ------------------------------------------------------------------ Linformer


def test_linformer_projects_keys_along_the_sequence():
    require("linformer")
    model = load_module(HERE / "published_linformer.py").build_model()
    projections = [p for name, p in model.named_parameters() if name.endswith("proj_k")]
    assert [tuple(p.shape) for p in projections] == [(512, 32)] * 2


def test_linformer_is_linear_in_n():
    require("linformer")
    a = analysed("linformer", 256)
    assert len(a.sites) == 2
    for s in a.sites:
        assert (s.variant, s.implementation, s.causal, s.heads) == ("linear", "low-rank", False,
                                                                   HEADS)
        assert s.complexity == "N*r*d"
        # Q·Kᵀ over 32 projected keys and P·V over 32 projected values, per head
        for n in (256, 384):
            assert a.at(s.flops, n, 1) == 2 * HEADS * n * 32 * (DIM_HEAD + DIM_HEAD)
    assert a.at(a.flops, 256, 1) == real_flops("linformer", 256, 1)
    assert a.at(a.flops, 200, 2) == real_flops("linformer", 200, 2)


# ------------------------------------------------------------------ Nyström


class _Shapes(TorchDispatchMode):
    """The last two axes of every tensor a real forward makes."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) and out.dim() >= 2:
            self.seen.append(tuple(out.shape[-2:]))
        return out


def test_nystrom_never_forms_n_by_n_scores():
    # the truth, on the package: every tensor of a forward at N=64, recorded;
    # scores are N × 16 and 16 × N, never N × N
    nystrom_attention = require("nystrom_attention")
    attend = nystrom_attention.NystromAttention(dim=32, dim_head=16, heads=2, num_landmarks=16,
                                                residual=False)
    with torch.no_grad(), _Shapes() as shapes:
        attend(torch.randn(1, 64, 32))
    assert (64, 16) in shapes.seen and (16, 64) in shapes.seen
    assert (64, 64) not in shapes.seen


def test_agent_tokens_meet_the_sequence_not_each_other():
    # the truth, on the package: scores are 16 × N and N × 16, never N × N
    agent = require("agent_attention_pytorch")
    attend = agent.AgentSelfAttention(32, num_agent_tokens=16, dim_head=16, heads=2)
    with torch.no_grad(), _Shapes() as shapes:
        attend(torch.randn(1, 64, 32))
    assert (64, 16) in shapes.seen and (16, 64) in shapes.seen
    assert (64, 64) not in shapes.seen
    # attncost: two dense sites per layer through the talking heads' 1×1
    # convolutions, a fixed number of queries or keys: linear in N
    a = analysed("agent", 256)
    for sites in _per_layer(a).values():
        lengths = sorted((str(s.query_len), str(s.key_len)) for s in sites)
        assert lengths == [("16", "N"), ("N", "16")], lengths
        for s in sites:
            assert (s.variant, s.causal, s.heads, s.complexity) == ("dense", False, HEADS, "N*M*d")
            # 16 × N pairs per head, 2·d for the scores and 2·d for the values
            assert a.at(s.flops, 512, 1) == a.at(s.useful_flops, 512, 1) == \
                HEADS * 16 * 512 * 2 * (DIM_HEAD + DIM_HEAD)
    assert a.at(a.flops, 256, 1) == real_flops("agent", 256, 1)
    assert a.at(a.flops, 384, 2) == real_flops("agent", 384, 2)


def test_xtransformers_talking_heads_after_the_softmax():
    # the softmax weights reach ·V through a 1×1 convolution over the heads
    require("x_transformers")
    a = analysed("xtransformers_talking_heads", 256)
    assert len(a.sites) == 2, [(s.name, s.variant) for s in a.sites]
    for s in a.sites:
        assert (s.variant, s.causal, s.heads) == ("dense", True, HEADS)
        assert any(name.startswith("convolution") for name in s.nodes)
        # Q·Kᵀ and P·V over N × N pairs, 2·d each
        assert a.at(s.flops, 512, 1) == HEADS * 512 * 512 * 2 * (DIM_HEAD + DIM_HEAD)
        assert a.at(s.useful_flops, 512, 1) == HEADS * 512 * 513 // 2 * 2 * (DIM_HEAD + DIM_HEAD)
    assert a.at(a.flops, 256, 1) == real_flops("xtransformers_talking_heads", 256, 1)
    assert a.at(a.flops, 384, 2) == real_flops("xtransformers_talking_heads", 384, 2)


def test_nystrom_three_softmaxes_per_layer():
    require("nystrom_attention")
    a = analysed("nystrom", 256)
    layers = _per_layer(a)
    assert len(layers) == 2
    m, d = 16, DIM_HEAD
    for sites in layers.values():
        by_variant = sorted(sites, key=lambda s: s.variant)
        assert [s.variant for s in by_variant] == ["dense", "linear", "linear"]
        landmarks, *linear = by_variant
        # 16 × 16: Q_l·K_lᵀ and the first product of the Newton iteration (x @ z)
        assert a.at(landmarks.flops, 256, 1) == a.at(landmarks.flops, 4096, 1) == \
            2 * HEADS * m * m * d + 2 * HEADS * m * m * m
        for s in linear:
            assert s.implementation == "low-rank" and s.heads == HEADS
            # N × 16 scores (or 16 × N), and their product with a 16-wide operand
            for n in (256, 4096):
                assert a.at(s.flops, n, 1) == 2 * HEADS * n * m * d + 2 * HEADS * n * m * d
    assert a.at(a.flops, 256, 1) == real_flops("nystrom", 256, 1)
    assert a.at(a.flops, 192, 2) == real_flops("nystrom", 192, 2)


def test_nystrom_formulas_read_back_from_json():
    require("nystrom_attention")
    d = analysed("nystrom", 256).to_dict()
    symbols = {"N": sympy.Symbol("N"), "B": sympy.Symbol("B")}
    for item in [d["totals"]["flops"], d["totals"]["peak_memory_bytes"]] + \
            [s["flops"] for s in d["sites"]]:
        expr = sympy.sympify(item["expr"], locals=symbols)
        assert expr.free_symbols <= set(symbols.values()), item["expr"]
        assert int(expr.subs({symbols["N"]: 256, symbols["B"]: 1})) == item["value"]


# ------------------------------------------------------------------ FLASH (gated attention units)


def _group_pairs(n: int, causal: bool) -> int:
    """(query, key) pairs within groups of 32, by brute force."""
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    ok = (i // 32) == (j // 32)
    if causal:
        ok &= j <= i
    return int(ok.sum())


@pytest.mark.parametrize("name, causal", [("flash_gau", True),
                                          ("flash_gau_bidirectional", False)])
def test_flash_squared_relu_within_groups(name, causal):
    require("flash_pytorch")
    a = analysed(name, 256)
    local = [s for s in a.sites if s.variant == "local"]
    assert len(local) == 2
    per_pair = 2 * (16 + 64)  # Q·Kᵀ over 16 dims, P·V over 64
    for s in local:
        assert (s.causal, s.window, s.heads) == (causal, 32, 1)
        assert a.at(s.useful_flops, 2048, 1) == per_pair * _group_pairs(2048, causal)
    assert a.at(a.flops, 256, 1) == real_flops(name, 256, 1)
    assert a.at(a.flops, 320, 2) == real_flops(name, 320, 2)


def test_flash_bidirectional_sums_one_state_across_groups():
    require("flash_pytorch")
    a = analysed("flash_gau_bidirectional", 256)
    linear = [s for s in a.sites if s.variant == "linear"]
    assert len(linear) == 2 and not any(s.causal for s in linear)


# ------------------------------------------------------------------ Based (no softmax, no weighing op)


@pytest.mark.parametrize("name", ["fla_based", "fla_rebased", "fla_simple_gla"])
def test_parallel_forms_without_softmax_are_causal_n_squared(name):
    # Based (a Taylor polynomial), ReBased (a square) and simple GLA (a decay
    # computed from the input's gate, kept on and below the diagonal)
    a = analysed(name, 128)
    assert len(a.sites) == 2, [(s.name, s.variant) for s in a.sites]
    for s in a.sites:
        assert (s.variant, s.causal, s.heads) == ("dense", True, HEADS)
        n = 1024
        assert a.at(s.useful_flops, n, 1) == HEADS * n * (n + 1) // 2 * 2 * (16 + 16)
    assert a.at(a.flops, 128, 1) == real_flops(name, 128, 1)
    assert a.at(a.flops, 200, 2) == real_flops(name, 200, 2)


def test_simple_gla_decay_is_causal_on_the_package():
    from published_support import fla_naive

    naive = fla_naive("simple_gla")
    torch.manual_seed(0)
    q, k = torch.randn(1, 12, 1, 16), torch.randn(1, 12, 1, 16)
    g = torch.nn.functional.logsigmoid(torch.randn(1, 12, 1))
    _, weights = naive.naive_parallel_simple_gla(q, k, torch.randn(1, 12, 1, 16), g)
    assert torch.equal(weights[0, 0] != 0, torch.tril(torch.ones(12, 12, dtype=torch.bool)))


def test_retention_decay_in_an_einsum_layout_is_causal():
    # the decay multiplies scores laid out (b, h, q, k, 1) by the einsum: its
    # pairs are read on the (q, k) axes, not on (k, 1); the model takes the
    # length as a number (range(seq_len)) and runs at multiples of its chunk
    # of 32 only, so it is fitted at such lengths and holds there
    a = analysed("fla_retention", 128)
    assert len(a.sites) == 2, [(s.name, s.variant) for s in a.sites]
    assert a.multiple_of() == 32 and not a.holds_at(100)
    for s in a.sites:
        assert (s.variant, s.causal, s.heads, s.window) == ("dense", True, HEADS, None)
        for n in (128, 256):
            assert a.at(s.useful_flops, n, 1) == HEADS * n * (n + 1) // 2 * 2 * (16 + 16)
    for n, b in ((128, 1), (64, 2), (256, 2)):
        assert a.at(a.flops, n, b) == real_flops("fla_retention", n, b), (n, b)


def test_mega_single_head_traced_at_fixed_lengths():
    # every size a number in each trace (the model runs at multiples of 16
    # only, and is fitted at such lengths): the rows of (B, N, N) scores are
    # the batch's queries, not N heads of one query
    a = analysed("mega", 256)
    assert len(a.sites) == 2, [(s.name, s.variant) for s in a.sites]
    assert a.multiple_of() == 16 and not a.holds_at(100)
    for s in a.sites:
        assert (s.variant, s.causal, s.heads, s.head_dim) == ("dense", True, 1, 16)
        for n in (256, 512):
            # causal pairs, each 2·d_qk for Q·Kᵀ and 2·d_v for P·V, d_v = 64
            assert a.at(s.useful_flops, n, 1) == n * (n + 1) // 2 * (2 * 16 + 2 * 64)
            assert a.at(s.flops, n, 1) == n * n * (2 * 16 + 2 * 64)
    for n, b in ((256, 1), (64, 2), (512, 2)):
        assert a.at(a.flops, n, b) == real_flops("mega", n, b), (n, b)


def test_beit_fixed_image_size_holds_at_one_length():
    # The width is 8·N pixels and the model takes 64 only (its PatchEmbed
    # asserts it; its bias table is 33 × 33): the trace fixes 8·N = 64, so
    # its formulas hold at N = 8, not at every N (they were said to).
    a = analysed("timm_beit", 8)
    assert a.n_range == (8, 8)
    assert [(s.variant, s.heads, s.head_dim) for s in a.sites] == [("dense", 2, 16)] * 2
    for s in a.sites:  # 33 tokens, every pair, 2·(16 + 16) FLOPs per pair and head
        assert a.at(s.useful_flops, 8, 1) == 2 * 33 * 33 * 2 * (16 + 16)
    assert a.at(a.flops, 8, 1) == real_flops("timm_beit", 8, 1)
    model = load_module(Path(__file__).parent / "published_timm_beit.py")
    with torch.no_grad(), pytest.raises(AssertionError):
        model.build_model().eval()(*model.example_inputs(9))


def test_xcit_cross_covariance_is_linear_in_the_tokens():
    # Scores of the head's 16 features against its 16 features, summed over
    # the 4·N tokens: no N × N matrix.  Qᵀ·K and the weights applied to V
    # each take 2·16·16 FLOPs per token and head.
    a = analysed("timm_xcit", 16)
    xca = [s for s in a.sites if s.implementation == "cross-covariance"]
    assert [(s.variant, s.heads, s.head_dim, s.causal) for s in xca] == \
        [("linear", 2, 16, False)] * 2
    for n, b in ((16, 1), (40, 2)):
        tokens = 4 * n
        for s in xca:
            assert a.at(s.flops, n, b) == a.at(s.useful_flops, n, b) == \
                b * 2 * tokens * 2 * (2 * 16 * 16)
        assert a.at(a.flops, n, b) == real_flops("timm_xcit", n, b)
    # the class token over every token: one query, 4·N + 1 keys
    (cls,) = [s for s in a.sites if s not in xca]
    assert (cls.variant, a.at(cls.query_len, 16, 1), a.at(cls.key_len, 16, 1)) == ("dense", 1, 65)


def test_retention_decay_is_causal_on_the_package():
    from published_support import fla_naive

    naive = fla_naive("retention")
    torch.manual_seed(0)
    q, k = torch.randn(1, 2, 12, 16), torch.randn(1, 2, 12, 16)
    # V = the identity: output row i is nonzero where query i reaches a key
    out = naive.naive_retention(q, k, torch.eye(12).expand(1, 2, 12, 12))
    for h in range(2):
        assert torch.equal(out[0, h] != 0, torch.tril(torch.ones(12, 12, dtype=torch.bool)))


def test_based_is_causal_on_the_package():
    from published_support import fla_naive

    naive = fla_naive("based")
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 12, 16), torch.randn(1, 1, 12, 16)
    # V = the identity: output row i is nonzero where query i reaches a key
    out = naive.naive_parallel_based(q, k, torch.eye(12)[None, None], use_norm=False)
    # query i reaches keys 0..i: the truth, on the package
    assert torch.equal(out[0, 0] != 0, torch.tril(torch.ones(12, 12, dtype=torch.bool)))


# ------------------------------------------------- chunked causal linear


def test_chunked_causal_linear_state_shifted_by_a_pad_is_a_scan():
    """The states' prefix sum padded by one chunk and cut (each chunk reads
    the chunks before it) is still the scan's state: a causal linear site
    beside the local heads' site in every layer."""
    a = analysed("lat_chunked", 64)
    mod = load_module(HERE / "published_lat_chunked.py")
    layers = _per_layer(a)
    assert len(layers) == mod.DEPTH
    for sites in layers.values():
        assert sorted((s.variant, s.causal) for s in sites) == [("linear", True), ("local", True)]
    for n, b in ((64, 1), (96, 2)):
        assert a.at(a.flops, n, b) == real_flops("lat_chunked", n, b), (n, b)


def test_linear_attention_without_a_normalizer_needs_what_it_computes():
    """K's softmax over the sequence stands for the normalizer: the two
    products, the state Kᵀ·V and Q·state, 2·(2·N·d·d) per head by hand,
    are all the work, none of it masked."""
    a = analysed("lat_bidirectional", 64)
    mod = load_module(HERE / "published_lat_bidirectional.py")
    linear = [s for s in a.sites if s.variant == "linear"]
    assert len(linear) == mod.DEPTH
    heads = mod.HEADS - mod.LOCAL_HEADS
    for n in (64, 200):
        by_hand = heads * 2 * (2 * n * mod.DIM_HEAD * mod.DIM_HEAD)
        assert [a.at(s.useful_flops, n, 1) for s in linear] == [by_hand] * mod.DEPTH
        assert all(a.at(s.flops, n, 1) == by_hand for s in linear)


def test_lambda_layer_heads_share_one_state():
    """A lambda layer sums its 4·N positions into one dim_k × dim_v state the
    four heads of queries share, and applies position lambdas to the same
    queries: a linear site of 4 heads over 4·N queries, whose products are
    all needed (no mask): Kᵀ·V once, the state and the position lambdas
    applied per head, 2·dim_k·dim_v per position each."""
    a = analysed("lambda", 64)
    mod = load_module(HERE / "published_lambda.py")
    assert len(a.sites) == mod.DEPTH
    for s in a.sites:
        assert (s.variant, s.heads, str(s.query_len), str(s.key_len)) == \
            ("linear", mod.HEADS, "4*N", "4*N")
    for n in (64, 200):
        positions = mod.HEIGHT * n
        per_product = 2 * positions * mod.DIM_K * mod.DIM_V
        by_hand = per_product * (1 + mod.HEADS + mod.HEADS)
        assert [a.at(s.useful_flops, n, 1) for s in a.sites] == [by_hand] * mod.DEPTH
    for n, b in ((64, 1), (96, 2)):
        assert a.at(a.flops, n, b) == real_flops("lambda", n, b), (n, b)


def test_stick_breaking_weights_from_log_sigmoids_are_strictly_causal():
    """Weights built from ``F.logsigmoid`` of the scores (an op with a buffer
    beside its output, which torch does not tag pointwise) and a reversed
    cumulative sum, exp'd: the chain from ·V back to Q·Kᵀ passes them; each
    query meets the keys before it, not its own (the truth read on the
    package: with V the identity, output row i is nonzero at j < i)."""
    from published_support import fla_naive

    naive = fla_naive("stickbreaking_attn")
    torch.manual_seed(0)
    q, k = torch.randn(1, 12, 1, 16), torch.randn(1, 12, 1, 16)
    out, _ = naive.naive_stickbreaking_attn(q, k, torch.eye(12)[None, :, None, :])
    assert torch.equal(out[0, :, 0] != 0, torch.tril(torch.ones(12, 12, dtype=torch.bool), -1))
    a = analysed("fla_stickbreaking", 64)
    assert [(s.variant, s.causal, s.heads) for s in a.sites] == [("dense", True, HEADS)] * 2
    for n in (64, 200):
        pairs = n * (n - 1) // 2
        assert sum(a.at(s.useful_flops, n, 1) for s in a.sites) == \
            2 * HEADS * pairs * 2 * (DIM_HEAD + DIM_HEAD)
    for n, b in ((64, 1), (96, 2)):
        assert a.at(a.flops, n, b) == real_flops("fla_stickbreaking", n, b), (n, b)
