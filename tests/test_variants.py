"""Each attention variant is classified correctly, counted as written
(FlopCounterMode) and as needed (a count derived here by hand)."""
import pytest
import torch

import attncost
from attncost.expr import N, degree
from attncost.render.sentences import site_notes
from conftest import MODELS
from memprofile import allocation_peak
from oracle import count_flops, load_module


def oracle(name, n, batch=1):
    mod = load_module(MODELS / f"{name}.py")
    torch.manual_seed(0)
    return count_flops(mod.build_model().eval(), mod.example_inputs(n, batch=batch))


def analyze(name, n=64, **kw):
    return attncost.analyze(MODELS / f"{name}.py", seq_len=n, device="cpu", **kw)


def test_unfold_local():
    a = analyze("local_unfold")
    (s,) = a.sites
    assert (s.variant, s.implementation, s.window, s.heads, s.head_dim) == ("local", "unfold", 9, 2, 16)
    assert degree(s.flops, attncost.N) == 1
    for n in (16, 40, 64):
        assert a.at(a.flops, n) == oracle("local_unfold", n)
        # as written each query meets 9 keys, padding included: Q·Kᵀ and P·V, 2 heads of 16
        assert a.at(s.flops, n) == 2 * (2 * 2 * n * 9 * 16)
        # needed: the real positions within 4 of each query, counted here
        pairs = sum(min(i + 4, n - 1) - max(i - 4, 0) + 1 for i in range(n))
        assert a.at(s.useful_flops, n) == 2 * 2 * pairs * (16 + 16)


def test_local_unfold_with_the_values_on_the_left():
    """The product with the weights may take them as its right operand."""
    a = analyze("local_unfold_values_left")
    (s,) = a.sites
    assert (s.variant, s.implementation, s.window, s.heads, s.head_dim) == ("local", "unfold", 7, 2, 16)
    for n in (16, 40, 64):
        assert a.at(a.flops, n) == oracle("local_unfold_values_left", n)
        # as written each query meets 7 keys, padding included: Q·Kᵀ over 16, weights·V over 24
        assert a.at(s.flops, n) == 2 * 2 * n * 7 * (16 + 24)
        # needed: the real positions within 3 of each query, counted here
        pairs = sum(min(i + 3, n - 1) - max(i - 3, 0) + 1 for i in range(n))
        assert a.at(s.useful_flops, n) == 2 * 2 * pairs * (16 + 24)


def test_masked_sparse_costs_n_squared_but_needs_its_nonzeros():
    from models.masked_sparse import pattern

    n = 96
    a = analyze("masked_sparse", n)
    (s,) = a.sites
    assert (s.variant, s.implementation, s.causal) == ("sparse", "masked", False)
    assert degree(s.flops, attncost.N) == 2
    for m in (32, 96, 200):
        assert a.at(a.flops, m) == oracle("masked_sparse", m)
    kept = int(pattern(n).sum())
    assert a.at(s.useful_flops) == 2 * (2 * 2 * kept * 8)
    assert s.density == pytest.approx(kept / n**2)
    assert any("block-sparse kernel would skip them" in note for note in site_notes(s))


def test_attention_within_blocks_cut_by_a_reshape_is_local():
    """Keys per query fixed, taken from the sequence itself: local, not dense."""
    a = analyze("block_reshape")
    (s,) = a.sites
    assert (s.variant, s.implementation, s.window, s.heads, s.head_dim) == ("local", "blocked", 8, 2, 16)
    assert degree(s.flops, attncost.N) == 1
    for n in (16, 64, 512):
        assert a.at(a.flops, n) == oracle("block_reshape", n)
        # every query meets the 8 keys of its block: 2·8·(16 + 16) per head
        assert a.at(s.useful_flops, n) == 2 * n * 8 * 2 * (16 + 16)


def test_cross_attention_to_a_fixed_context_stays_dense():
    a = analyze("cross_attention")
    fixed = [s for s in a.sites if s.key_len == 77]
    assert fixed and all(s.variant == "dense" for s in fixed)


def test_causal_linear_attention_by_prefix_sums():
    """A cumsum along the sequence mixes tokens: one causal linear site."""
    a = analyze("scan_linear")
    (s,) = a.sites
    assert (s.variant, s.implementation, s.causal, s.heads) == ("linear", "scan", True, 2)
    assert degree(s.flops, attncost.N) == 1
    for n in (5, 64, 300):
        assert a.at(a.flops, n) == oracle("scan_linear", n)
        # phi(q)·state per position: 2·d·e; the normalizer phi(q)·sum(phi(k)): 2·d
        assert a.at(s.flops, n) == 2 * n * 2 * 8 * 12 + 2 * n * 2 * 8
    assert not a.quadratic


def test_linear_einsum():
    a = analyze("linear_einsum")
    (s,) = a.sites
    assert (s.variant, s.implementation, s.feature_dim, s.head_dim) == ("linear", "einsum", 12, 20)
    assert degree(s.flops, attncost.N) == 1
    for n in (5, 64, 300):
        assert a.at(a.flops, n) == oracle("linear_einsum", n)
        # phi(K)ᵀV and phi(Q)·state: 2·N·r·d each; normalizer 2·N·r
        assert a.at(s.useful_flops, n) == 2 * 2 * n * 12 * 20 + 2 * n * 12
    assert not a.quadratic


def _pairs_causal_window(n, w):
    return sum(min(i + 1, w) for i in range(n))


def _pairs_band(n, h):
    return sum(min(i + h, n - 1) - max(i - h, 0) + 1 for i in range(n))


def test_banded_masks_are_local():
    n = 80
    a = analyze("banded", n)
    causal, band = a.sites
    assert (causal.variant, causal.window, causal.causal) == ("local", 6, True)
    assert (band.variant, band.window, band.causal) == ("local", 7, False)
    for m in (20, 80, 333):
        assert a.at(a.flops, m) == oracle("banded", m)
        assert a.at(causal.useful_flops, m) == 4 * 4 * 8 * _pairs_causal_window(m, 6)
        assert a.at(band.useful_flops, m) == 4 * 4 * 8 * _pairs_band(m, 3)
    assert degree(causal.flops, attncost.N) == 2
    assert degree(causal.useful_flops, attncost.N) == 1


def test_block_gather_is_sparse_and_linear_in_n():
    a = analyze("block_gather", 64)
    (s,) = a.sites
    assert (s.variant, s.implementation) == ("sparse", "gather")
    assert degree(s.flops, attncost.N) == 1
    for n in (32, 64, 256):
        assert a.at(a.flops, n) == oracle("block_gather", n)
        # every query meets 2 blocks of 8 keys, 2 heads of 8
        assert a.at(s.flops, n) == 2 * (2 * 2 * n * 16 * 8)


def test_flex_sliding_window():
    n = 128
    a = analyze("flex_window", n)
    (s,) = a.sites
    assert (s.variant, s.implementation, s.window, s.causal) == ("local", "flex", 16, True)
    # FlexAttention counts as dense, as FlopCounterMode counts it
    assert a.at(s.flops) == 4 * 4 * n * n * 16
    assert a.at(s.useful_flops) == 4 * 4 * 16 * _pairs_causal_window(n, 16)


def test_causal_sdpa_useful_is_about_half():
    a = analyze("sdpa_causal_gqa", 50)
    s = a.sites[0]
    n = 50
    assert a.at(s.useful_flops) == 4 * 8 * 8 * n * (n + 1) // 2


def test_no_false_positives():
    assert analyze("not_attention").sites == []
    assert analyze("mlp_only").sites == []


def test_mistral_sliding_window_reports_the_hidden_quadratic(write_config):
    folder = write_config("mistral", model_type="mistral", architectures=["MistralForCausalLM"],
                          hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                          intermediate_size=96, num_hidden_layers=2, vocab_size=128,
                          max_position_embeddings=4096, sliding_window=32)
    a = attncost.analyze(folder, seq_len=256, attn_implementation="sdpa", device="cpu")
    assert [(s.variant, s.window, s.causal, s.kv_heads) for s in a.sites] == [("local", 32, True, 2)] * 2
    hidden = a.hidden_quadratics()
    assert hidden, "the N×N mask built for SDPA must be reported"
    n = 256
    # the boolean mask of B×1×N×N that SDPA receives
    assert any(a.at(q.bytes, n, 1) == n * n and q.dtype == "bool" for q in hidden)
    assert all(q.layer for q in hidden)
    assert a.to_dict()["hidden_quadratic"] is True


def test_per_head_and_gqa():
    """Per query head a dense site does Q·Kᵀ (N_q·N_k dot products of length
    d_qk) and P·V (N_q·N_k multiply-adds into each of d_v columns):
    2·B·N_q·N_k·(d_qk + d_v), whatever the number of K/V heads."""
    torch.manual_seed(0)
    gqa, plain = load_module(MODELS / "sdpa_causal_gqa.py").build_model()
    a = analyze("sdpa_causal_gqa", 32)
    assert len(a.sites) == 2
    for s, layer in zip(a.sites, (gqa, plain)):
        d_qk = layer.q.out_features // layer.h     # query projection: h heads of d_qk
        d_v = layer.kv_proj.out_features // (2 * layer.kv)  # K and V: kv heads each
        for n, b in ((17, 1), (32, 2), (100, 3)):
            assert a.at(s.flops_per_head, n, b) == 2 * b * n * n * (d_qk + d_v)
        assert s.heads == layer.h
    assert (a.sites[0].heads, a.sites[0].kv_heads) == (gqa.h, gqa.kv) == (8, 2)

    # d_v != d_qk, and GQA 6:2 in the first layer (tests/models/mla_sdpa.py)
    a = analyze("mla_sdpa", 32)
    mla = load_module(MODELS / "mla_sdpa.py").build_model()
    for s, layer in zip(a.sites, mla.layers):
        d_qk = layer.q.out_features // layer.h
        d_v = layer.o.in_features // layer.h
        for n, b in ((17, 1), (100, 3)):
            assert a.at(s.flops_per_head, n, b) == 2 * b * n * n * (d_qk + d_v)


def test_formulas_match_canonical_specs():
    for name in ("local_unfold", "linear_einsum", "dense_unfused", "masked_sparse", "block_gather"):
        for s in analyze(name).sites:
            assert s.matches_formula, (name, s.name, s.formula)


def test_causal_mask_precomputed_in_a_buffer():
    """nanoGPT keeps tril(ones) in a buffer: its data is read, not guessed."""
    a = analyze("nanogpt_buffer", 100)
    (s,) = a.sites
    assert (s.variant, s.causal, s.mask) == ("dense", True, "causal")
    # the buffer is block_size = 256 long: the trace holds up to there
    assert a.n_range == (1, 256)
    for n in (10, 100, 256):
        assert a.at(a.flops, n) == oracle("nanogpt_buffer", n)
        # query i sees keys 0..i: 2 heads of 16, Q·Kᵀ and P·V
        assert a.at(s.useful_flops, n) == 2 * 2 * 2 * 16 * sum(range(1, n + 1))


def test_multihead_attention_with_a_causal_attn_mask():
    a = analyze("mha_causal", 64)
    (s,) = a.sites
    assert (s.variant, s.causal, s.heads, s.head_dim) == ("dense", True, 4, 8)
    for n in (16, 64, 100):
        assert a.at(a.flops, n) == oracle("mha_causal", n)
        assert a.at(s.useful_flops, n) == 2 * 2 * 4 * 8 * sum(range(1, n + 1))


def test_plain_tensor_attributes_are_constants_of_the_graph():
    # neither parameters nor buffers: a real run reads them as they are
    path = MODELS / "plain_tensor_attribute.py"
    a = attncost.analyze(path, seq_len=256, device="cpu")
    assert [(s.variant, s.causal, s.heads) for s in a.sites] == [("dense", False, 2)]
    mod = load_module(path)
    model = mod.build_model().eval()
    for n, b in ((300, 1), (77, 2)):
        assert a.at(a.flops, n, b) == count_flops(model, mod.example_inputs(n, b))


def test_factorized_attention_at_one_length_is_linear():
    """CoaT's factorized attention (softmax of K over the tokens, Kᵀ·V, then
    Q·state) in a model that runs at one length only: every size is a
    number, yet the product summing the tokens into a features × features
    state is the linear form, not scores of 16 "queries" against 24 "keys"."""
    fx_model = load_module(MODELS / "factorized_fixed_length.py")
    n = fx_model.LENGTH
    a = attncost.analyze(MODELS / "factorized_fixed_length.py", seq_len=n, device="cpu")
    assert a.n_range == (n, n) and len(a.sites) == 2
    tokens = n + 1  # the class token
    for s in a.sites:
        assert (s.variant, s.heads, s.query_len, s.key_len) == ("linear", fx_model.HEADS,
                                                                tokens, tokens)
        assert (s.feature_dim, s.head_dim) == (fx_model.DIM_QK, fx_model.DIM_V)
        # Kᵀ·V and Q·state, 2·T·d_qk·d_v each per head; no normalizer
        per_head = 2 * 2 * tokens * fx_model.DIM_QK * fx_model.DIM_V
        assert a.at(s.useful_flops, n, 1) == fx_model.HEADS * per_head
    torch.manual_seed(0)
    model = fx_model.build_model().eval().requires_grad_(False)
    assert a.at(a.flops, n, 1) == count_flops(model, fx_model.example_inputs(n, 1))


def test_a_state_applied_to_tokens_as_columns_is_linear_over_every_token():
    """Channels-first linear attention (Sana's ``b h d n``): the state is
    applied from the left, its output a column per token.  It is still H
    heads over N queries, not H·d_v heads of one query."""
    lin = load_module(MODELS / "linear_tokens_as_columns.py")
    a = analyze("linear_tokens_as_columns", 64)
    assert len(a.sites) == 2
    for s in a.sites:
        assert (s.variant, s.heads, s.query_len, s.key_len) == ("linear", lin.HEADS, N, N)
        assert (s.feature_dim, s.head_dim) == (lin.DIM_QK, lin.DIM_V)
        for n in (64, 300):  # V·φ(K)ᵀ, S·φ(Q) and the normalizer z·φ(Q), per head
            per_head = 2 * 2 * n * lin.DIM_QK * lin.DIM_V + 2 * n * lin.DIM_QK
            assert a.at(s.useful_flops, n, 1) == lin.HEADS * per_head, n
    for n, b in ((64, 1), (100, 2)):
        assert a.at(a.flops, n, b) == oracle("linear_tokens_as_columns", n, b), (n, b)


def test_scores_laid_out_sequence_first_are_read_through_their_axes():
    """Scores (queries, keys, batch, heads) from a sequence-first einsum, the
    softmax over dim 1 in an ``nn.Softmax`` child: one site per attention
    module (named for it), its mask read with the queries and keys where
    the einsum put them: causal, a window of 8."""
    sf = load_module(MODELS / "sequence_first.py")
    a = analyze("sequence_first", 64)
    assert [s.name for s in a.sites] == ["layers.0", "layers.1"]
    per_pair = sf.HEADS * 2 * (sf.DIM_QK + sf.DIM_V)
    for s in a.sites:
        assert (s.variant, s.causal, s.window, s.heads) == ("local", True, sf.WINDOW, sf.HEADS)
        assert (s.head_dim, s.query_len, s.key_len) == (sf.DIM_QK, N, N)
        for n in (64, 300):
            pairs = sum(min(i + 1, sf.WINDOW) for i in range(n))
            assert a.at(s.useful_flops, n, 1) == pairs * per_pair, n
    for n, b in ((64, 1), (100, 2)):
        assert a.at(a.flops, n, b) == oracle("sequence_first", n, b), (n, b)


def test_scores_written_keys_first_are_read_by_the_softmax_axis():
    """K·Qᵀ with the softmax over its rows, the weights transposed onto the
    values: the rows are the keys (they are summed with the values), not
    queries competing as in slot attention.  A causal window of 8, and
    cross-attention to 8 context tokens with d_v ≠ d_qk."""
    kf = load_module(MODELS / "keys_first.py")
    a = analyze("keys_first", 64)
    window, cross = a.sites
    assert (window.variant, window.causal, window.window) == ("local", True, kf.WINDOW)
    assert (cross.variant, cross.causal, cross.key_len, cross.query_len) == \
        ("dense", False, kf.CONTEXT, N)
    assert not window.notes and not cross.notes
    per_pair = kf.HEADS * 2 * (kf.D_QK + kf.D_V)
    for n, b in ((64, 1), (100, 2)):
        pairs = sum(min(i + 1, kf.WINDOW) for i in range(n))
        assert a.at(window.useful_flops, n, b) == b * pairs * per_pair, n
        assert a.at(cross.useful_flops, n, b) == b * n * kf.CONTEXT * per_pair, n
        assert a.at(a.flops, n, b) == oracle("keys_first", n, b), (n, b)


def test_keys_read_back_from_a_cache_written_in_place_are_activations():
    """Keys and values written into registered buffers and read back from
    them (a KV cache, forward under ``torch.inference_mode``) are the
    input's, not weights: one causal site per layer, 4 query heads sharing
    2 key heads."""
    kv = load_module(MODELS / "kv_cache_buffers.py")
    a = analyze("kv_cache_buffers", 64)
    assert len(a.sites) == 2
    for s in a.sites:
        assert (s.variant, s.causal, s.heads, s.kv_heads) == ("dense", True, kv.HEADS,
                                                              kv.KV_HEADS)
        for n in (64, 500):
            pairs = n * (n + 1) // 2
            assert a.at(s.useful_flops, n, 1) == \
                pairs * kv.HEADS * 2 * (kv.DIM_QK + kv.DIM_V), n
    torch.manual_seed(0)
    model = kv.build_model().eval()
    for n, b in ((64, 1), (100, 2)):
        assert a.at(a.flops, n, b) == oracle("kv_cache_buffers", n, b), (n, b)
        assert a.at(a.peak_memory_bytes, n, b) == \
            allocation_peak(model, kv.example_inputs(n, b)), (n, b)


def test_a_model_that_fixes_the_batch_it_ran_with_is_traced_at_the_batch_asked():
    """``torch.tensor([0] * batch)`` fixes B at the traced batch (a guard
    ``Eq(B, 2)``; B=1 is traced as B=2): the formulas hold at that batch
    only, so the batch asked is traced, and every other batch again."""
    a = analyze("batch_as_a_list", 64)
    assert a.batch_range == (1, 1)
    for n, b in ((64, 1), (100, 2), (80, 3)):
        assert a.at(a.flops, n, b) == oracle("batch_as_a_list", n, b), (n, b)
    assert not a.warnings
    at_two = analyze("batch_as_a_list", 64, batch=2)  # traced at B=2, asked at B=1
    assert at_two.batch_range == (2, 2)
    assert at_two.at(at_two.flops, 64, 1) == oracle("batch_as_a_list", 64, 1)


def test_a_condition_on_the_batch_that_holds_at_every_batch_fixes_none():
    """The Set Transformer cuts 2·B rows into pieces of B (``split(B, 0)``),
    a guard ``floor((3*B - 1)/B) == 2`` on B alone that every batch meets:
    B stays a symbol (it was traced at the batch asked, its formulas
    holding there only), two sites a block, INDUCING × N and N × INDUCING."""
    ip = load_module(MODELS / "induced_points.py")
    a = analyze("induced_points", 64)
    assert a.batch_range == (1, None)
    assert [(s.query_len, s.key_len) for s in a.sites] == \
        [(ip.INDUCING, N), (N, ip.INDUCING)] * 2
    for n, b in ((64, 1), (100, 3)):
        assert a.at(a.flops, n, b) == oracle("induced_points", n, b), (n, b)
        for s in a.sites:  # Q·Kᵀ and P·V over INDUCING·N pairs, heads of DIM/HEADS
            by_hand = b * ip.HEADS * ip.INDUCING * n * 2 * 2 * (ip.DIM // ip.HEADS)
            assert a.at(s.useful_flops, n, b) == by_hand, (n, b)


def test_a_site_with_no_batch_axis_needs_its_pairs_once():
    """Tokens with no batch axis (packed sequences): the site computes its
    pairs once whatever B, and so needs them once: N(N+1)/2 causal pairs
    per head, never more than it computes."""
    nb = load_module(MODELS / "no_batch_axis.py")
    a = analyze("no_batch_axis", 64)
    assert [(s.variant, s.causal, s.heads) for s in a.sites] == [("dense", True, nb.HEADS)] * 2
    for s in a.sites:
        for n, b in ((64, 1), (300, 2), (300, 5)):
            by_hand = n * (n + 1) // 2 * nb.HEADS * 2 * (2 * nb.DIM_HEAD)
            assert a.at(s.useful_flops, n, b) == by_hand, (n, b)
            assert a.at(s.useful_flops, n, b) <= a.at(s.flops, n, b)
    for n, b in ((64, 1), (100, 2)):
        assert a.at(a.flops, n, b) == oracle("no_batch_axis", n, b), (n, b)


def test_a_count_of_frames_given_as_a_number_follows_n():
    """``num_frames=N`` beside hidden states of B·N rows: the number follows
    the length as the tensor's rows do, so the frames' attention is over N
    keys at every length, not over the N it was first called with."""
    fr = load_module(MODELS / "frames_as_a_number.py")
    a = analyze("frames_as_a_number", 64)
    assert [(s.variant, s.heads, s.query_len, s.key_len) for s in a.sites] == \
        [("dense", fr.HEADS, N, N)] * 2
    for n, b in ((64, 1), (100, 2)):
        assert a.at(a.flops, n, b) == oracle("frames_as_a_number", n, b), (n, b)
        assert a.at(a.sites[0].useful_flops, n, b) == b * fr.HEADS * n * n * 2 * 2 * fr.DIM_HEAD


def test_inputs_with_a_list_as_long_as_the_batch_are_traced_at_the_batch_asked():
    """Per-sample entries in a list (a pipeline's image shapes): the
    inputs' structure follows the batch, so B is no symbol: the batch
    asked is traced, and every other batch again."""
    a = analyze("per_sample_shapes", 64)
    assert a.batch_range == (1, 1) and len(a.sites) == 2
    for n, b in ((64, 1), (100, 2), (80, 3)):
        assert a.at(a.flops, n, b) == oracle("per_sample_shapes", n, b), (n, b)


def test_a_prefix_seen_both_ways_is_dense_not_sparse():
    """A prefix-LM's mask (a prefix seen both ways, the rest causal): every
    query meets every earlier key, the prefix's queries later prefix keys
    too.  Dense and not causal, its useful work the pairs counted here."""
    plm = load_module(MODELS / "prefix_lm.py")
    a = analyze("prefix_lm", 64)
    assert [(s.variant, s.causal) for s in a.sites] == [("dense", False)] * 2
    assert all(any("prefix" in note for note in site_notes(s)) for s in a.sites)
    per_pair = plm.HEADS * 2 * (plm.DIM_QK + plm.DIM_V)
    for n in (64, 300):
        t = plm.PREFIX + n
        pairs = plm.PREFIX ** 2 + sum(i + 1 for i in range(plm.PREFIX, t))
        assert a.at(a.sites[0].useful_flops, n, 1) == pairs * per_pair, n
    for n, b in ((64, 1), (100, 2)):
        assert a.at(a.flops, n, b) == oracle("prefix_lm", n, b), (n, b)


def test_dilated_segments_are_local_to_their_kept_tokens():
    """LongNet's groups: segments of s tokens, every r-th kept, a causal
    triangle among each segment's s/r kept tokens.  The segment count and
    width, both sizes of N hashed as einops' shape keys, rule out no length
    (the length where they are equal, N = 256 for segments of 16, holds)."""
    mod = load_module(MODELS / "dilated_segments.py")
    a = analyze("dilated_segments")
    per_layer = 2 * len(mod.RATES)
    assert len(a.sites) == per_layer and {s.variant for s in a.sites} == {"local"}
    heads = mod.HEADS // len(mod.RATES)
    per_pair = heads * 2 * (mod.DIM_HEAD + mod.DIM_HEAD)
    for n in (64, 256, 1024):
        assert a.holds_at(n), (n, a.valid_for())
        by_hand = 0
        for s, r in zip(mod.SEGMENTS, mod.RATES):
            kept = s // r
            by_hand += (n // s) * kept * (kept + 1) // 2 * per_pair
        assert sum(a.at(x.useful_flops, n, 1) for x in a.sites) == 2 * by_hand, n
    assert a.at(a.flops, 256, 2) == oracle("dilated_segments", 256, batch=2)
    assert a.at(a.flops, 96, 1) == oracle("dilated_segments", 96)


def test_weights_normalised_each_forward_are_weights_not_keys():
    """A product with a weight computed from parameters alone (weight norm,
    unit-norm rows) weighed by SiLU is a gated feed-forward: the sites are
    the SDPA calls, and the FLOPs are a real forward's."""
    a = analyze("normalised_weights")
    assert [(s.implementation, s.variant, s.causal) for s in a.sites] == \
        [("sdpa", "dense", True)] * 2
    for n, b in ((64, 1), (150, 2)):
        assert a.at(a.flops, n, b) == oracle("normalised_weights", n, batch=b)


def _segment_pairs(n: int, segment: int) -> int:
    """Causal pairs within each segment, the last one shorter, one by one."""
    return sum(1 for i in range(n) for j in range(i + 1) if i // segment == j // segment)


def test_fused_calls_on_segments_in_a_loop_are_one_local_site():
    """One SDPA call per segment, sliced from the same Q, K and V: one site
    a layer, local with the segment as its window, fitted in N and the
    segment count from short traces; its pairs counted one by one, at a
    length the segments divide and at one they do not."""
    mod = load_module(MODELS / "segment_loop.py")
    a = analyze("segment_loop", 256)
    assert [(s.variant, s.causal, s.window) for s in a.sites] == [("local", True, mod.SEGMENT)] * 2
    per_pair = mod.HEADS * 2 * (mod.DH + mod.DH)
    for n in (256, 300):
        assert a.at(a.sites[0].useful_flops, n, 1) == _segment_pairs(n, mod.SEGMENT) * per_pair
    assert a.at(a.flops, 300, 2) == oracle("segment_loop", 300, batch=2)
    assert a.at(a.flops, 256, 1) == oracle("segment_loop", 256)


def test_fused_calls_on_segments_read_at_fixed_lengths_count_the_pairs_there():
    """Fitted from traces at fixed lengths, each read where its segments are
    numbers: the merged blocks' useful work is each computed pair's work
    times the pairs let through, not the work times a density of the whole
    matrix (a quarter of it at four segments)."""
    mod = load_module(MODELS / "segment_loop.py")
    a = analyze("segment_loop", 64)
    per_pair = mod.HEADS * 2 * (mod.DH + mod.DH)
    assert [(s.variant, s.window) for s in a.sites] == [("local", mod.SEGMENT)] * 2
    assert a.at(a.sites[0].useful_flops, 64, 1) == _segment_pairs(64, mod.SEGMENT) * per_pair


def test_a_loop_over_segments_with_a_memory_is_fitted_by_its_segments():
    """Infini-attention's loop over segments, asked at a length where it
    runs as many steps as tokens would: the segment length is still found
    (the loop's own count said none), the costs fitted in N and the segment
    count, the segments' attention one local site a layer."""
    mod = load_module(MODELS / "compressive_segments.py")
    a = analyze("compressive_segments", 512)
    assert a.n_range[1] is None, a.valid_for()
    local = [s for s in a.sites if s.variant == "local"]
    assert [(s.causal, s.window) for s in local] == [(True, mod.S)] * 2
    per_pair = mod.HEADS * 2 * (mod.DH + mod.DH)
    for n in (512, 300):
        assert a.at(local[0].useful_flops, n, 1) == _segment_pairs(n, mod.S) * per_pair
    assert a.at(a.flops, 512, 1) == oracle("compressive_segments", 512)
    assert a.at(a.flops, 300, 2) == oracle("compressive_segments", 300, batch=2)

