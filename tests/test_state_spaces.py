"""State space layers written as chunked scans (transformers' Mamba-2 and the
hybrids built on it), and recurrences written as a loop over chunks
(Qwen3-Next's gated delta rule), read as what they are: causal linear
attention.

transformers' ``Mamba2Mixer.torch_forward`` (the path without the CUDA
kernels) is the state space duality's chunked form: within each chunk of
``chunk_size`` tokens, C·Bᵀ scores masked by a causal decay, applied to x;
per chunk, a state Bᵀ·x (n × p per head); the states passed on across
chunks by a lower-triangular chunks × chunks decay matrix; each chunk's
queries C read the state passed to it.  Each token reaches every earlier
one, in time linear in N (the chunk-to-chunk matrix is (N/L)², a small
quadratic the code computes).

Oracles, independent of attncost:
* causality from the real model: perturbing token j changes no output
  before j, and changes outputs after it;
* useful FLOPs derived by hand from the config: a linear attention with
  state size r = d_state and value width d_v = head_dim builds and applies
  its states in 2·B·H·N·r·d_v FLOPs each;
* FlopCounterMode over a real forward at the traced length and at another.
"""
import pytest
import torch

import attncost
from oracle import count_flops, transformers_config

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

MAMBA_HEADS, MAMBA_HEAD_DIM, STATE, CHUNK = 8, 16, 16, 16

MAMBA2 = dict(model_type="mamba2", architectures=["Mamba2ForCausalLM"], hidden_size=64,
              num_hidden_layers=2, num_heads=MAMBA_HEADS, head_dim=MAMBA_HEAD_DIM,
              state_size=STATE, expand=2, n_groups=1, chunk_size=CHUNK, vocab_size=128,
              conv_kernel=4, use_cache=False)
#: attention in layer 1 only (4 query heads over 2 key/value heads)
BAMBA = dict(model_type="bamba", architectures=["BambaForCausalLM"], hidden_size=64,
             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=128, vocab_size=128, attn_layer_indices=[1],
             mamba_n_heads=MAMBA_HEADS, mamba_d_head=MAMBA_HEAD_DIM, mamba_d_state=STATE,
             mamba_n_groups=1, mamba_chunk_size=CHUNK, mamba_expand=2, use_cache=False)


def _real(fields):
    config = transformers_config(fields)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    return getattr(transformers, fields["architectures"][0])(config).eval()


def _analysed(write_config, fields):
    folder = write_config(fields["model_type"], **fields)
    return attncost.analyze(folder, seq_len=64, device="cpu", attn_implementation="eager",
                            dtype="float32")


def _scan_useful(n: int, batch: int) -> int:
    """States built (Bᵀ·x) and applied (C·state): 2·B·H·N·r·d_v each."""
    return 2 * 2 * batch * MAMBA_HEADS * n * STATE * MAMBA_HEAD_DIM


def test_the_real_mixer_is_causal_and_mixes_every_earlier_token():
    """The truth the analysis must say: a change at token j reaches every
    output from j on (across chunks) and none before it."""
    model = _real(MAMBA2)
    ids = torch.randint(0, 128, (1, 64))
    with torch.no_grad():
        out = model(input_ids=ids).logits
        changed = ids.clone()
        changed[0, 20] = (ids[0, 20] + 1) % 128
        after = model(input_ids=changed).logits
    moved = (after - out).abs().amax(dim=-1)[0]
    assert bool((moved[:20] == 0).all())
    assert bool((moved[20:] > 0).all())  # tokens 48..63, three chunks on, too


def test_mamba2_chunked_scan_is_linear_causal(write_config):
    a = _analysed(write_config, MAMBA2)
    assert [s.name for s in a.sites] == ["backbone.layers.0.mixer", "backbone.layers.1.mixer"]
    for site in a.sites:
        assert (site.variant, site.causal) == ("linear", True), site
        assert (site.heads, site.head_dim, site.feature_dim) == (MAMBA_HEADS, MAMBA_HEAD_DIM,
                                                                 STATE)
        for n, batch in ((64, 1), (1024, 3)):
            assert a.at(site.useful_flops, n, batch) == _scan_useful(n, batch)
    model = _real(MAMBA2).requires_grad_(False)
    for n, batch in ((64, 1), (96, 2)):
        ids = torch.randint(0, 128, (batch, n))
        assert a.at(a.flops, n, batch) == count_flops(model, (), {"input_ids": ids})


def test_a_hybrid_reads_its_scans_beside_its_attention(write_config):
    """Bamba: a Mamba-2 mixer in layer 0, grouped-query causal attention in
    layer 1; each read as its own kind."""
    a = _analysed(write_config, BAMBA)
    sites = {s.name: s for s in a.sites}
    assert set(sites) == {"model.layers.0.mamba", "model.layers.1.self_attn"}
    scan, attention = sites["model.layers.0.mamba"], sites["model.layers.1.self_attn"]
    assert (scan.variant, scan.causal) == ("linear", True)
    assert a.at(scan.useful_flops, 256, 2) == _scan_useful(256, 2)
    assert (attention.variant, attention.causal, attention.heads, attention.kv_heads) == \
        ("dense", True, 4, 2)
    model = _real(BAMBA).requires_grad_(False)
    ids = torch.randint(0, 128, (2, 96))
    assert a.at(a.flops, 96, 2) == count_flops(model, (), {"input_ids": ids})


# ------------------------------------------------------------------ a loop over chunks: Qwen3-Next

#: two gated delta net layers (4 value heads over 2 key heads, 16 wide), dense MLPs
QWEN3_NEXT = dict(model_type="qwen3_next", architectures=["Qwen3NextForCausalLM"],
                  hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, intermediate_size=128, vocab_size=128,
                  linear_num_value_heads=4, linear_num_key_heads=2, linear_key_head_dim=16,
                  linear_value_head_dim=16, linear_conv_kernel_dim=4, num_experts=4,
                  num_experts_per_tok=2, moe_intermediate_size=32, mlp_only_layers=[0, 1],
                  full_attention_interval=4, use_cache=False)


def test_a_loop_over_chunks_carrying_a_state_is_linear_causal(write_config):
    """transformers' torch_chunk_gated_delta_rule: scores within each chunk of
    64 tokens, then a Python loop over the chunks that reads the state the
    previous chunk left (H × d_k × d_v) and leaves its own.  At N=192 the
    loop runs 3 times: one linear causal site per layer, each token written
    into the state and read from it (4·H·d_k·d_v FLOPs a token).  The trace
    holds for 3 chunks (N=129..192, a multiple of 64: N=192) only."""
    folder = write_config("qwen3_next", **QWEN3_NEXT)
    a = attncost.analyze(folder, seq_len=192, device="cpu", attn_implementation="eager",
                         dtype="float32")
    assert [s.name for s in a.sites] == ["model.layers.0.linear_attn",
                                         "model.layers.1.linear_attn"]
    heads, d_k, d_v = 4, 16, 16
    for site in a.sites:
        assert (site.variant, site.causal, site.heads) == ("linear", True, heads), site
        assert a.at(site.useful_flops, 192, 2) == 4 * heads * d_k * d_v * 192 * 2
    assert a.holds_at(192) and not a.holds_at(256)  # the loop's count is fixed by the trace
    model = _real(QWEN3_NEXT).requires_grad_(False)
    for n, batch in ((192, 1), (192, 3)):
        ids = torch.randint(0, 128, (batch, n))
        assert a.at(a.flops, n, batch) == count_flops(model, (), {"input_ids": ids})


#: lightning attention in layer 0 (blocks of 16), softmax attention in layer 1
MINIMAX = dict(model_type="minimax", architectures=["MiniMaxForCausalLM"], hidden_size=64,
               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
               intermediate_size=128, vocab_size=128, num_local_experts=2,
               num_experts_per_tok=1, layer_types=["linear_attention", "full_attention"],
               block_size=16, use_cache=False)


def test_a_loop_over_slices_of_the_sequence_is_one_site(write_config):
    """MiniMax's lightning attention: a Python loop over blocks of 16 tokens,
    each taking ``q[:, :, 16·i : 16·i + 16]``, its scores within the block
    masked by a decay, the state Kᵀ·V of the blocks before it read by its
    queries.  One linear causal site, not one per block; the softmax layer
    beside it, in traces at fixed lengths, stays dense causal (its keys are
    not picked by the router of the layer before).  The loop's costs are
    fitted in N and its count of blocks, and hold at lengths never traced
    (the site named as a trace of whole blocks reads it: a short last block
    is sliced apart)."""
    folder = write_config("minimax", **MINIMAX)  # experts' grouped products run in bfloat16
    a = attncost.analyze(folder, seq_len=64, device="cpu", attn_implementation="eager")
    kinds = [(s.name, s.variant, s.causal, s.content_based) for s in a.sites]
    assert kinds == [("model.layers.0.self_attn", "linear", True, False),
                     ("model.layers.1.self_attn", "dense", True, False)], kinds
    assert a.at(a.sites[0].useful_flops, 64, 1) == 4 * 4 * 16 * 16 * 64
    model = _real(MINIMAX).requires_grad_(False)
    # each token goes to one expert in each layer: gate, up and down
    # projections, which FlopCounterMode counts as 0 (aten._grouped_mm)
    routed = 2 * 3 * (2 * 64 * 128)
    for n, b in ((64, 2), (100, 1)):
        ids = torch.randint(0, 128, (b, n))
        assert a.at(a.flops, n, b) == count_flops(model, (), {"input_ids": ids}) + routed * n * b
    assert a.holds_at(100) and a.n_range[1] is None


def test_a_loop_over_chunks_is_fitted_in_their_count(write_config):
    """Past 64 chunks a trace would record every step of Qwen3-Next's loop
    over chunks of 64 (5,000 tokens: 79 steps a layer), so its costs are
    fitted from traces at two to four chunks, in N and ceiling(N/64): the
    sequence is padded to whole chunks, each chunk costs the same.  The
    formulas then hold at lengths never traced, in every chunk count, the
    last chunk full or not."""
    from memtrack import measure as measure_live

    folder = write_config("qwen3_next", **QWEN3_NEXT)
    a = attncost.analyze(folder, seq_len=5000, device="cpu", attn_implementation="eager",
                         dtype="float32")
    assert any("chunks of 64 tokens" in note for note in a.notes), a.notes
    assert a.holds_at(129) and a.holds_at(100_000) and not a.holds_at(128)
    heads, d_k, d_v = 4, 16, 16
    assert [(s.variant, s.causal, s.heads) for s in a.sites] == [("linear", True, heads)] * 2
    model = _real(QWEN3_NEXT).requires_grad_(False)
    for n, batch in ((5000, 1), (700, 2)):
        ids = torch.randint(0, 128, (batch, n))
        assert a.at(a.flops, n, batch) == count_flops(model, (), {"input_ids": ids}), n
        for site in a.sites:  # each token written into the state and read from it
            assert a.at(site.useful_flops, n, batch) == 4 * heads * d_k * d_v * n * batch
    ids = torch.randint(0, 128, (2, 700))
    with torch.no_grad():
        real = measure_live(model, {"input_ids": ids})
    assert a.at(a.peak_memory_bytes, 700, 2) == real.peak_bytes


def test_a_loop_over_chunks_padded_only_when_short_is_fitted_in_their_count():
    """torchscale's chunkwise RetNet pads the length to whole chunks of 16
    only where the last one is short: a length that fills it runs two ops
    fewer than the lengths inside a chunk, and the chunk is still read as 16
    (one token past it the loop runs once more).  Past 64 chunks its costs
    are fitted in N and ceiling(N/16) and hold at lengths never traced; the
    traces at fixed lengths read the loop as one linear causal site, its
    state's pieces taken from Kᵀ·V per chunk (no axis of positions after
    the chunks)."""
    from conftest import MODELS
    from memtrack import measure as measure_live
    from oracle import load_module

    path = MODELS / "padded_chunk_loop.py"
    pc = load_module(path)
    a = attncost.analyze(path, seq_len=1100, device="cpu")
    assert any(f"chunks of {pc.CHUNK} tokens" in note for note in a.notes), a.notes
    assert a.holds_at(1100) and a.holds_at(4096) and a.n_range[1] is None
    assert [(s.variant, s.causal) for s in a.sites] == [("linear", True)] * 2
    torch.manual_seed(0)
    model = pc.build_model().eval().requires_grad_(False)
    for n, batch in ((1100, 1), (2048, 2), (100, 3)):
        assert a.at(a.flops, n, batch) == count_flops(model, pc.example_inputs(n, batch)), n
    with torch.no_grad():
        real = measure_live(model, pc.example_inputs(700, 2))
    assert a.at(a.peak_memory_bytes, 700, 2) == real.peak_bytes


def test_a_config_saved_by_transformers_with_an_infinite_limit_is_read(tmp_path):
    """transformers writes a float JSON has no literal for as
    ``{"__float__": "Infinity"}`` (Bamba's ``time_step_limit = (0.0, inf)``);
    its own reader decodes it, and so must attncost's, not refuse the file."""
    from attncost.loader import load

    config = transformers.BambaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      num_key_value_heads=2, attn_layer_indices=[1],
                                      vocab_size=64, mamba_d_head=8, mamba_n_heads=8)
    config.save_pretrained(tmp_path)
    assert '"__float__": "Infinity"' in (tmp_path / "config.json").read_text()
    loaded = load(tmp_path)
    assert list(loaded.config.time_step_limit) == [0.0, float("inf")]
