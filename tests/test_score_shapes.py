"""Attention written with its scores shaped otherwise than Q·Kᵀ -> softmax
over the keys: a softmax over the queries (slot attention), and a second
product added to the scores (relative position keys).  The oracles:
FlopCounterMode on a real forward, at lengths and batches never traced, and
the pairs counted here by hand."""
from __future__ import annotations

from pathlib import Path

import torch

import attncost
from oracle import count_flops, load_module

MODELS = Path(__file__).parent / "models"


def _flops_equal(module, a, points):
    torch.manual_seed(0)
    model = module.build_model().eval().requires_grad_(False)
    for n, b in points:
        assert a.at(a.flops, n, b) == count_flops(model, module.example_inputs(n, b)), (n, b)


def test_slots_compete_for_each_input():
    """A softmax over the slots (dim=1 of slots × inputs), renormalised over
    the inputs, then ·V over the inputs: one site per iteration, every
    slot meeting every input."""
    sa = load_module(MODELS / "slot_attention.py")
    a = attncost.analyze(MODELS / "slot_attention.py", seq_len=64, device="cpu")
    assert len(a.sites) == sa.ITERS
    for site in a.sites:
        assert (site.variant, site.causal, site.heads) == ("dense", False, 1)
        assert (site.query_len, str(site.key_len)) == (sa.SLOTS, "N")
        assert any("over the queries" in note for note in site.notes)
    for n in (64, 300):
        per_iteration = sa.SLOTS * n * 2 * (sa.DIM + sa.DIM_V)
        assert sum(a.at(s.useful_flops, n, 1) for s in a.sites) == sa.ITERS * per_iteration
    _flops_equal(sa, a, [(64, 1), (300, 2)])


def test_a_position_term_cut_to_the_length_is_part_of_the_scores():
    """q·R[-N:]ᵀ, a learned table sliced to the keys, added to Q·Kᵀ: the
    site's work and its useful work are three products per pair (Q·Kᵀ,
    the position term, P·V), under the causal mask."""
    rp = load_module(MODELS / "relative_positions.py")
    a = attncost.analyze(MODELS / "relative_positions.py", seq_len=64, device="cpu")
    assert len(a.sites) == 2 and all(s.causal and s.variant == "dense" for s in a.sites)
    per_pair = rp.HEADS * 2 * (rp.DIM_HEAD + rp.DIM_HEAD + rp.DIM_V)
    for n in (64, 200):
        assert a.at(a.sites[0].flops, n, 1) == n * n * per_pair
        pairs = n * (n + 1) // 2
        assert sum(a.at(s.useful_flops, n, 1) for s in a.sites) == 2 * pairs * per_pair, n
    _flops_equal(rp, a, [(64, 1), (200, 2)])


def test_a_bias_cached_from_the_weights_is_read_as_zeros():
    """A bias the module computed from its parameters and cached during the
    trace is a constant with no values in the graph; read as zeros (as the
    weights are), the causal mask beside it is read."""
    cb = load_module(MODELS / "cached_bias.py")
    a = attncost.analyze(MODELS / "cached_bias.py", seq_len=64, device="cpu")
    assert len(a.sites) == 2 and all(s.causal and s.variant == "dense" for s in a.sites)
    per_pair = cb.HEADS * 2 * (cb.DIM_HEAD + cb.DIM_HEAD)
    for n in (64, 200):
        assert sum(a.at(s.useful_flops, n, 1) for s in a.sites) == 2 * n * (n + 1) // 2 * per_pair
    _flops_equal(cb, a, [(64, 1), (200, 2)])


def test_a_cache_filled_in_place_is_emptied_after_a_trace():
    """A dict the module fills on first use holds the trace's fake tensor
    afterwards unless its entries are put back (the cause of the above)."""
    from attncost.tracing.fake import module_state_kept

    cb = load_module(MODELS / "cached_bias.py")
    model = cb.build_model().eval()
    layer = model[0]
    kept = {"before": torch.zeros(1)}
    layer.cache = kept
    with module_state_kept(model):
        layer.biases(torch.device("cpu"))
        assert set(layer.cache) == {"before", "cpu"}
    assert layer.cache is kept and set(kept) == {"before"}


def test_a_model_that_rejects_a_symbolic_length_is_traced_at_numbers():
    """Its code raises with the length a symbol (an int check): it is costed
    from traces at fixed lengths, as a model that writes the length as a
    number is, and the note says why."""
    ic = load_module(MODELS / "int_checked_length.py")
    a = attncost.analyze(MODELS / "int_checked_length.py", seq_len=64, device="cpu")
    assert any("does not run with the length a symbol" in note and "TypeError" in note
               for note in a.notes)
    assert len(a.sites) == 1 and a.sites[0].causal and a.n_range[1] is None
    _flops_equal(ic, a, [(64, 1), (100, 2), (300, 2)])


def test_a_model_that_runs_at_multiples_only_is_fitted_at_multiples():
    """It asserts the length divides into pairs of buckets: traces at 8, 12
    and 16 raise, so it is fitted at multiples of 32, where its formulas
    hold (a length between them is not claimed).  Each trace is at one
    length, where the keys, a row for each token cut into buckets, are
    read as windows, not a context of their own."""
    bl = load_module(MODELS / "bucketed_length.py")
    a = attncost.analyze(MODELS / "bucketed_length.py", seq_len=64, device="cpu")
    assert a.multiple_of() == 32 and a.holds_at(96) and not a.holds_at(80)
    assert any("multiple of 32" in note for note in a.notes)
    site = a.sites[0]
    assert len(a.sites) == 1 and (site.variant, site.window) == ("local", bl.BUCKET)
    per_pair = bl.HEADS * 2 * (bl.DIM_HEAD + bl.DIM_HEAD)
    assert a.at(a.sites[0].useful_flops, 320, 1) == 320 * bl.BUCKET * per_pair
    _flops_equal(bl, a, [(64, 1), (96, 2), (320, 2)])


def test_scores_learned_as_a_table_are_attention_over_the_values():
    """The Random Synthesizer's scores are a parameter, no Q·Kᵀ: a causal
    softmax over N keys applied to values of the input.  Its work is ·V
    alone, 2·d_v per pair and head, over N·(N + 1)/2 pairs."""
    from attncost.expr import N

    rs = load_module(MODELS / "learned_scores.py")
    a = attncost.analyze(MODELS / "learned_scores.py", seq_len=64, device="cpu")
    assert [(s.variant, s.causal, s.heads, s.query_len, s.key_len) for s in a.sites] == \
        [("dense", True, rs.HEADS, N, N)] * 2
    for n, b in ((64, 1), (300, 2)):
        by_hand = b * rs.HEADS * n * (n + 1) // 2 * 2 * rs.DIM_V
        assert a.at(a.sites[0].useful_flops, n, b) == by_hand
        assert a.at(a.sites[0].flops, n, b) == b * rs.HEADS * n * n * 2 * rs.DIM_V
    _flops_equal(rs, a, [(64, 1), (300, 2)])



def test_tokens_pooled_by_learned_queries_laid_out_tokens_first():
    """Fastformer's two poolings a layer: HEADS learned queries of width
    DIM score the N tokens, a softmax over dim=1 of (b, n, h), and the
    weights sum the tokens' values of DIM_HEAD.  Each is a site of HEADS
    queries against N keys (no site was found with the tokens first)."""
    from attncost.expr import N

    fa = load_module(MODELS / "additive_attention.py")
    a = attncost.analyze(MODELS / "additive_attention.py", seq_len=64, device="cpu")
    assert [(s.variant, s.query_len, s.key_len) for s in a.sites] == \
        [("dense", fa.HEADS, N)] * 4
    for n, b in ((64, 1), (300, 2)):
        by_hand = b * n * fa.HEADS * 2 * (fa.DIM + fa.DIM_HEAD)  # logits, then ·V
        assert [a.at(s.useful_flops, n, b) for s in a.sites] == [by_hand] * 4
    _flops_equal(fa, a, [(64, 1), (300, 2)])


def test_a_learned_table_weighed_by_exp_and_normalised_after_is_one_site():
    """AFT-full: exp of a learned N×N table meets exp(K) ⊙ V and exp(K) in
    two products, normalised after; no softmax, no Q·Kᵀ.  One dense site a
    layer (no site was found), both products its work."""
    from attncost.expr import N

    aft = load_module(MODELS / "attention_free.py")
    a = attncost.analyze(MODELS / "attention_free.py", seq_len=64, device="cpu")
    assert [(s.variant, s.causal, s.heads, s.query_len, s.key_len) for s in a.sites] == \
        [("dense", False, 1, N, N)] * 2
    for n, b in ((64, 1), (300, 2)):
        by_hand = b * n * n * 2 * (aft.HIDDEN + aft.HIDDEN)
        assert [a.at(s.useful_flops, n, b) for s in a.sites] == [by_hand] * 2
    _flops_equal(aft, a, [(64, 1), (300, 2)])


def test_weights_combined_across_heads_before_the_values_are_one_site():
    """Differential attention: a softmax over 2·H heads, two maps of each
    pair subtracted, then ·V with H heads of twice the width.  Per causal
    pair, Q·Kᵀ does 2·(2H)·d_qk and P·V 2·H·d_v."""
    da = load_module(MODELS / "differential_attention.py")
    a = attncost.analyze(MODELS / "differential_attention.py", seq_len=64, device="cpu")
    assert len(a.sites) == 2
    for site in a.sites:
        assert (site.variant, site.causal) == ("dense", True)
        assert (site.heads, site.kv_heads, site.head_dim) == (2 * da.HEADS, 2 * da.KV_HEADS,
                                                              da.DIM_QK)
    per_pair = 2 * (2 * da.HEADS) * da.DIM_QK + 2 * da.HEADS * da.DIM_V
    for n in (64, 250):
        pairs = n * (n + 1) // 2
        assert a.at(a.sites[0].useful_flops, n, 1) == pairs * per_pair, n
        assert a.at(a.sites[0].flops, n, 1) == n * n * per_pair, n
    _flops_equal(da, a, [(64, 1), (250, 2)])


def test_a_fixed_number_of_last_tokens_querying_all_causally():
    """Perceiver AR: M queries over N keys, the causal mask offset to the
    keys' end; linear in N, every key of the prefix and a triangle of
    their own kept, counted exactly at the length asked (not fitted
    elsewhere and called an estimate)."""
    pa = load_module(MODELS / "last_tokens_query_all.py")
    a = attncost.analyze(MODELS / "last_tokens_query_all.py", seq_len=64, device="cpu")
    cross = [s for s in a.sites if str(s.key_len) == "N"]
    assert len(cross) == 1 and len(a.sites) == 3
    site = cross[0]
    assert (site.variant, site.causal, site.query_len) == ("dense", True, pa.M)
    assert site.complexity == "N*M*d" and site.notes == []
    per_pair = pa.HEADS * 2 * (pa.DIM_HEAD + pa.DIM_HEAD)
    for n in (64, 300):
        pairs = pa.M * (n - pa.M) + pa.M * (pa.M + 1) // 2
        assert a.at(site.useful_flops, n, 1) == pairs * per_pair, n
    _flops_equal(pa, a, [(64, 1), (300, 2)])


def test_scores_convolved_over_queries_and_keys_are_one_site():
    """Multi-token attention: the key-query convolution between Q·Kᵀ and the
    softmax is passed on the way back and its work joins the site's; per
    causal pair and head, 2·d for Q·Kᵀ, 2·CQ·CK for the convolution, 2·d
    for P·V."""
    kq = load_module(MODELS / "key_query_convolution.py")
    a = attncost.analyze(MODELS / "key_query_convolution.py", seq_len=64, device="cpu")
    assert [(s.variant, s.causal, s.heads) for s in a.sites] == [("dense", True, kq.HEADS)] * 2
    per_pair = kq.HEADS * 2 * (kq.DH + kq.CQ * kq.CK + kq.DH)
    for n in (64, 200):
        assert a.at(a.sites[0].flops, n, 1) == n * n * per_pair
        assert a.at(a.sites[0].useful_flops, n, 1) == n * (n + 1) // 2 * per_pair
    _flops_equal(kq, a, [(64, 1), (200, 2)])
