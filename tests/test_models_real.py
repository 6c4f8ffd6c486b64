"""Real model code that used to end the analysis or make its numbers wrong.

Oracles, each independent of attncost's own trace:
* FlopCounterMode over a real forward of the real model (tests/oracle.py adds
  the fused-attention term it misses on a CPU), at a traced length and at
  one never traced;
* hand counts from the real shapes, where FlopCounterMode counts 0
  (aten._grouped_mm in mixture-of-experts layers): the tokens each expert
  really received, read with a hook on a real forward;
* a full trace, against the repeated-layer shortcut.
"""

import pytest
import torch

import attncost
from attncost.errors import ModelError
from attncost.loader import load
from attncost.rules.flops import node_flops
from attncost.tracing import trace
from attncost.tracing.repeat import find_repeated
from conftest import MODELS
from memtrack import measure as measure_live
from oracle import count_flops, load_module, transformers_config

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()


def _real(fields, impl="sdpa"):
    """The real model of a config, with real (random) weights."""
    config = transformers_config(fields)
    config._attn_implementation = impl
    torch.manual_seed(0)
    return getattr(transformers, fields["architectures"][0])(config).eval()


def _ops(t):
    return [str(n.target) for n in t.graph_module.graph.nodes
            if n.op == "call_function" and "sym_size" not in str(n.target)]


def _total(t):
    return sum(node_flops(t, n) for n in t.graph_module.graph.nodes)


def _outputs(t):
    return len(list(t.graph_module.graph.nodes)[-1].args[0])


def _shortcut_equals_full_trace(loaded, monkeypatch, n=40):
    """The shortcut was taken (the replay succeeded) and its graph is a full trace's."""
    import attncost.tracing as tracing

    replayed = []

    def spy(*args):
        replayed.append(real_replay(*args))
        return replayed[-1]

    real_replay = tracing.replay_layers
    monkeypatch.setattr(tracing, "replay_layers", spy)
    reused, full = (trace(loaded, n, 1, reuse_layers=r) for r in (True, False))
    assert replayed == [True]
    assert _ops(reused) == _ops(full)
    assert _total(reused) - _total(full) == 0
    assert _outputs(reused) == _outputs(full)


# ------------------------------------------- 1. nothing real ends the analysis


def test_modulelist_holding_none_analyses_and_replays_its_period(monkeypatch):
    """x-transformers' layout (ModuleLists holding None, attention and
    feed-forward alternating): traced two periods deep, equal to a full
    trace, and equal to FlopCounterMode at lengths never traced."""
    path = MODELS / "none_in_modulelist.py"
    loaded = load(path)
    block = find_repeated(loaded.module)
    assert (block.path, block.period, block.count) == ("layers", 2, 8)
    _shortcut_equals_full_trace(loaded, monkeypatch)
    a = attncost.analyze(path, seq_len=40, device="cpu")
    assert [s.layer for s in a.sites] == [f"layers.{i}" for i in (0, 2, 4, 6)]
    assert all((s.heads, s.head_dim, s.causal) == (4, 8, True) for s in a.sites)
    model = load_module(path).build_model().eval()
    for n in (9, 70):
        assert a.at(a.flops, n, 1) == count_flops(model, (torch.zeros(1, n, dtype=torch.long),))


LLAMA = dict(model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=64,
             num_attention_heads=4, num_key_value_heads=2, intermediate_size=96,
             num_hidden_layers=2, vocab_size=128, max_position_embeddings=512)
MISTRAL = dict(LLAMA, model_type="mistral", architectures=["MistralForCausalLM"], sliding_window=16)


def _no_square_tensor(a, n=4096):
    """The peak at N = 4096 is below one N×N byte mask (weights are ~100 KB)."""
    return a.at(a.peak_memory_bytes, n, 1) < n * n


@pytest.mark.parametrize("impl", ["flex_attention", "flash_attention_2"])
def test_fused_implementations_of_a_config_analyse(write_config, impl):
    """flex_attention (transformers compiles it: traced through the HOP) and
    flash_attention_2 (modelled by aten's flash kernel) on a sliding-window
    Mistral: the FLOPs of the real SDPA forward, the window honoured, no N×N
    mask in memory where the SDPA path keeps one."""
    folder = write_config("mistral", **MISTRAL)
    # Past one 128-wide block: FlexAttention's block mask branches on it.
    a = attncost.analyze(folder, seq_len=300, attn_implementation=impl, kv_cache=False,
                         device="cpu")
    assert a.attn_implementation == impl and len(a.sites) == 2
    for s in a.sites:
        assert (s.heads, s.kv_heads, s.head_dim, s.causal) == (4, 2, 16, True)
    model = _real(MISTRAL)
    for n in (300, 1000):
        ids = torch.zeros(1, n, dtype=torch.long)
        assert a.at(a.flops, n, 1) == count_flops(model, (ids,), {"use_cache": False}), n
    assert _no_square_tensor(a)
    sdpa = attncost.analyze(folder, seq_len=300, kv_cache=False, device="cpu")
    assert not _no_square_tensor(sdpa)
    if impl == "flex_attention":
        assert all(s.implementation == "flex" and s.window == 16 for s in a.sites)
    else:
        flash = [n for n in a.traced.nodes if n.target == torch.ops.aten._flash_attention_forward.default]
        assert len(flash) == 2
        assert all(n.kwargs["window_size_left"] == 15 and n.kwargs["window_size_right"] == 0
                   for n in flash)
        # what the kernel allocates: a bf16 output and an fp32 log-sum-exp per
        # query row, plus its 2 + 1 uint64 of RNG state
        for s in a.sites:
            assert a.at(s.allocated_bytes, 100, 1) == 100 * 4 * 16 * 2 + 4 * 100 * 4 + 24


def test_flash_attention_2_needs_half_precision(write_config):
    folder = write_config("llama", **LLAMA)
    with pytest.raises(ModelError, match="--dtype bfloat16"):
        load(folder, attn_implementation="flash_attention_2", dtype="float32")


GEMMA2 = dict(model_type="gemma2", architectures=["Gemma2ForCausalLM"], hidden_size=32,
              num_attention_heads=4, num_key_value_heads=2, head_dim=8, intermediate_size=64,
              num_hidden_layers=6, vocab_size=128, max_position_embeddings=512,
              sliding_window=16)
BLOOM = dict(model_type="bloom", architectures=["BloomForCausalLM"], hidden_size=32, n_head=4,
             n_layer=2, vocab_size=128)


@pytest.mark.parametrize("fields, works", [(GEMMA2, "eager, flex_attention, flash_attention_2"),
                                           (BLOOM, "eager")])
def test_sdpa_incompatible_config_names_what_works(write_config, fields, works):
    """sdpa asked for: refused, naming what works.  None asked for: eager, as
    transformers builds the model when none is asked for, and said so."""
    folder = write_config(fields["model_type"], **fields)
    with pytest.raises(ModelError) as err:
        load(folder, attn_implementation="sdpa")
    message = str(err.value)
    assert "\n" not in message and len(message) < 300
    assert f"no sdpa attention for {fields['architectures'][0]}" in message
    assert f"it builds with {works}: pass --attn-implementation eager" in message
    loaded = load(folder)
    assert loaded.attn_implementation == "eager"
    assert any("analysed with eager" in note for note in loaded.notes), loaded.notes
    config = transformers_config(fields)
    with torch.device("meta"):
        built = getattr(transformers, fields["architectures"][0])(config)
    assert built.config._attn_implementation == "eager"  # transformers' own choice


# --------------------------------------- 2. every config gets its inputs


T5 = dict(model_type="t5", architectures=["T5ForConditionalGeneration"], d_model=32, d_kv=8,
          d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4, vocab_size=128,
          relative_attention_num_buckets=8)
VIT = dict(model_type="vit", architectures=["ViTModel"], hidden_size=32, num_hidden_layers=2,
           num_attention_heads=4, intermediate_size=64, image_size=32, patch_size=8)
WHISPER = dict(model_type="whisper", architectures=["WhisperForConditionalGeneration"],
               d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
               decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=8,
               max_source_positions=24, max_target_positions=256, vocab_size=128, pad_token_id=0,
               bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
CLIP = dict(model_type="clip", architectures=["CLIPModel"], projection_dim=16,
            text_config=dict(hidden_size=32, intermediate_size=64, num_attention_heads=4,
                             num_hidden_layers=2, vocab_size=128, max_position_embeddings=256),
            vision_config=dict(hidden_size=32, intermediate_size=64, num_attention_heads=4,
                               num_hidden_layers=2, image_size=32, patch_size=8))


def _ids(n):
    return torch.zeros(1, n, dtype=torch.long)


def _strip(n):  # one 8×8 patch tall, n patches wide
    return torch.zeros(1, 3, 8, 8 * n)


#: name -> (config, real inputs at n, (query, key) lengths of each site with N=n,
#: note that says what N means)
INPUTS = {
    "t5": (T5, lambda n: {"input_ids": _ids(n), "decoder_input_ids": _ids(n), "use_cache": False},
           lambda n: [(n, n)] * 6, "encoder's and the decoder's tokens"),
    "vit": (VIT, lambda n: {"pixel_values": _strip(n), "interpolate_pos_encoding": True},
            lambda n: [(n + 1, n + 1)] * 2, "image's patches"),
    "whisper": (WHISPER, lambda n: {"input_features": torch.zeros(1, 8, 48),
                                    "decoder_input_ids": _ids(n), "use_cache": False},
                lambda n: [(24, 24)] * 2 + [(n, n), (n, 24)] * 2, "decoder's tokens"),
    "clip": (CLIP, lambda n: {"input_ids": _ids(n), "pixel_values": _strip(n),
                              "interpolate_pos_encoding": True},
             lambda n: [(n + 1, n + 1)] * 2 + [(n, n)] * 2, "text's tokens"),
}


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_config_folder_alone_gets_the_inputs_its_forward_needs(write_config, name):
    fields, real_inputs, lengths, meaning = INPUTS[name]
    folder = write_config(name, **fields)
    a = attncost.analyze(folder, seq_len=40, kv_cache=False, device="cpu")
    assert any(meaning in note for note in a.loaded.notes)
    model = _real(fields)
    for n in (40, 67):
        assert a.at(a.flops, n, 1) == count_flops(model, (), real_inputs(n)), (name, n)
        got = [(a.at(s.query_len, n, 1), a.at(s.key_len, n, 1)) for s in a.sites]
        assert sorted(got) == sorted(lengths(n)), (name, n)
    assert all((s.heads, s.head_dim) == (4, 8) for s in a.sites)


#: a vision tower whose 4 features per image replace image tokens of the text
GEMMA3 = dict(model_type="gemma3", architectures=["Gemma3ForConditionalGeneration"],
              text_config=dict(model_type="gemma3_text", hidden_size=64, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                               intermediate_size=128, vocab_size=300, sliding_window=16,
                               max_position_embeddings=512),
              vision_config=dict(model_type="siglip_vision_model", hidden_size=32,
                                 num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                 image_size=32, patch_size=8),
              mm_tokens_per_image=4, image_token_index=260, boi_token_index=258,
              eoi_token_index=259)


def test_a_vision_language_config_is_its_language_model_over_text(write_config):
    """Gemma 3's config.json is a vision-language model: pixels were built as
    a strip of N patches, which its projector (a fixed 4 tokens per image)
    refused ('the model raised while being traced').  Its images take the
    place of image tokens in the text: N is the text's tokens, no image."""
    folder = write_config("gemma3", **GEMMA3)
    a = attncost.analyze(folder, seq_len=64, attn_implementation="eager", kv_cache=False,
                         device="cpu", dtype="float32")
    assert any("text's tokens, with no image" in note for note in a.notes), a.notes
    # Gemma3TextConfig: layers 0..4 of every 6 slide (window 16 here)
    assert [(s.variant, s.causal, s.window) for s in a.sites] == [("local", True, 16)] * 2
    model = _real(GEMMA3, impl="eager").requires_grad_(False)
    for n, batch in ((64, 1), (100, 2)):
        ids = torch.randint(0, 250, (batch, n))
        assert a.at(a.flops, n, batch) == count_flops(model, (ids,), {"use_cache": False}), n


# ----------------------------------------------- 3. grouped matmuls (MoE)


MIXTRAL = dict(model_type="mixtral", architectures=["MixtralForCausalLM"], hidden_size=32,
               num_attention_heads=4, num_key_value_heads=2, intermediate_size=48,
               num_hidden_layers=2, vocab_size=128, max_position_embeddings=512,
               num_local_experts=4, num_experts_per_tok=2)
DEEPSEEK_MOE = dict(model_type="deepseek_v3", architectures=["DeepseekV3ForCausalLM"],
                    hidden_size=64, num_attention_heads=4, num_key_value_heads=4,
                    qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=12, kv_lora_rank=32,
                    q_lora_rank=48, num_hidden_layers=3, first_k_dense_replace=1,
                    intermediate_size=96, moe_intermediate_size=32, n_routed_experts=8,
                    n_shared_experts=1, num_experts_per_tok=2, n_group=2, topk_group=1,
                    vocab_size=128, max_position_embeddings=512)


def _expert_work(model, routed: list):
    """Hook every experts module: per call, Σ_e tokens_e · (2·h·2i + 2·i·h)
    from the routing it received and its weights' shapes."""
    def hook(mod, args):
        counts = torch.bincount(args[1].reshape(-1), minlength=mod.num_experts)
        _, up_out, up_in = mod.gate_up_proj.shape
        _, down_out, down_in = mod.down_proj.shape
        routed.append(int(counts.sum()) * (2 * up_out * up_in + 2 * down_out * down_in))
        assert int(counts.sum()) == args[1].numel()  # every routed pair reaches one expert

    return [m.register_forward_pre_hook(hook) for m in model.modules()
            if type(m).__name__.endswith("Experts")]


@pytest.mark.parametrize("fields", [MIXTRAL, DEEPSEEK_MOE], ids=["mixtral", "deepseek_v3"])
def test_grouped_matmuls_count_the_experts_real_work(write_config, fields):
    """FlopCounterMode counts aten._grouped_mm as 0: the oracle is its count
    plus the experts' work read off the real routing."""
    folder = write_config(fields["model_type"], **fields)
    a = attncost.analyze(folder, seq_len=40, kv_cache=False, device="cpu")
    model = _real(fields)
    routed: list[int] = []
    _expert_work(model, routed)
    for n in (40, 77):
        routed.clear()
        counted = count_flops(model, (torch.randint(0, 128, (1, n)),), {"use_cache": False})
        assert routed and sum(routed) > 0
        assert a.at(a.flops, n, 1) == counted + sum(routed), n


def test_experts_in_float32_are_traced_as_a_cpu_runs_them(write_config):
    """torch._grouped_mm's fake kernel takes bfloat16 only (the checks of its
    CUDA kernel) while a real CPU run takes float32 too: the trace takes
    transformers' own loop over the experts, the same products and outputs
    (it raised before).  Oracles: FlopCounterMode plus the experts' work read
    off the real routing, and a live-storage tracker on the real forward."""
    folder = write_config("mixtral", **MIXTRAL)
    a = attncost.analyze(folder, seq_len=40, kv_cache=False, device="cpu", dtype="float32")
    model = _real(MIXTRAL).requires_grad_(False)
    routed: list[int] = []
    _expert_work(model, routed)
    for n in (40, 77):
        routed.clear()
        ids = torch.randint(0, 128, (2, n))
        counted = count_flops(model, (ids,), {"use_cache": False})
        assert a.at(a.flops, n, 2) == counted + sum(routed), n
        with torch.no_grad():
            real = measure_live(model, {"input_ids": ids, "use_cache": False})
        assert a.at(a.peak_memory_bytes, n, 2) == real.peak_bytes, (n, real)


GPT_OSS = dict(model_type="gpt_oss", architectures=["GptOssForCausalLM"], hidden_size=32,
               num_attention_heads=4, num_key_value_heads=2, head_dim=8, intermediate_size=48,
               num_hidden_layers=2, vocab_size=128, max_position_embeddings=512,
               num_local_experts=4, num_experts_per_tok=2, sliding_window=16,
               layer_types=["sliding_attention", "full_attention"])


def test_attention_sinks_are_read_through(write_config):
    """GPT-OSS appends a learned sink logit to every score row
    (``cat([scores, sinks], -1)``, less the row's maximum, softmax, the sink
    column dropped before ·V): the scores under it are the site's, their
    masks its pattern (no site was found)."""
    folder = write_config("gpt_oss", **GPT_OSS)
    a = attncost.analyze(folder, seq_len=64, attn_implementation="eager", kv_cache=False,
                         device="cpu")
    assert [(s.variant, s.causal, s.window, s.heads, s.kv_heads) for s in a.sites] == \
        [("local", True, 16, 4, 2), ("dense", True, None, 4, 2)]
    n = 512
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    pairs = [int(((j <= i) & (j > i - 16)).sum()), int((j <= i).sum())]
    for site, count in zip(a.sites, pairs):  # 2·(8 + 8) FLOPs per pair and head
        assert a.at(site.useful_flops, n, 1) == 4 * 2 * (8 + 8) * count
    model = _real(GPT_OSS, impl="eager")
    routed: list[int] = []
    _expert_work(model, routed)
    for n in (64, 100):
        routed.clear()
        counted = count_flops(model, (torch.randint(0, 128, (1, n)),), {"use_cache": False})
        assert a.at(a.flops, n, 1) == counted + sum(routed), n


#: layer 0 slides (window 16, 4 heads over 2 of 8), layer 1 is global (4 heads
#: over 1 of 16): each computes its own sink logit from the hidden state
INKLING2 = dict(model_type="inkling2_text", architectures=["Inkling2ForCausalLM"],
                hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=1, head_dim=16, swa_num_attention_heads=4,
                swa_num_key_value_heads=2, swa_head_dim=8, sliding_window_size=16,
                intermediate_size=128, vocab_size=128, max_position_embeddings=512,
                bos_token_id=0, eos_token_id=1, pad_token_id=2,
                layer_types=["hybrid_sliding", "hybrid"])


def test_a_sink_projected_from_each_query_is_read_through(write_config):
    """Inkling2's sink logit is no parameter: ``sink_proj(hidden_states)``, one
    logit per query and head, concatenated to its score row, dropped after
    the softmax.  A product itself, it is not the scores (no site was found)."""
    folder = write_config("inkling2_text", **INKLING2)
    a = attncost.analyze(folder, seq_len=64, attn_implementation="eager", kv_cache=False,
                         device="cpu", dtype="float32")
    assert [(s.variant, s.causal, s.window, s.heads, s.kv_heads, s.head_dim)
            for s in a.sites] == [("local", True, 16, 4, 2, 8), ("dense", True, None, 4, 1, 16)]
    n = 300
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    pairs = [(int(((j <= i) & (j > i - 16)).sum()), 8), (int((j <= i).sum()), 16)]
    for site, (count, d) in zip(a.sites, pairs):  # 2·(d + d) FLOPs per pair and head
        assert a.at(site.useful_flops, n, 1) == 4 * 2 * (d + d) * count
    model = _real(INKLING2, impl="eager").requires_grad_(False)
    routed: list[int] = []
    _expert_work(model, routed)
    for n, batch in ((64, 1), (100, 2)):
        routed.clear()
        ids = torch.randint(3, 128, (batch, n))
        counted = count_flops(model, (ids,), {"use_cache": False})
        assert a.at(a.flops, n, batch) == counted + sum(routed), n


def test_a_bias_projected_from_hidden_states_leaves_the_causal_mask_readable(
        write_config, monkeypatch):
    """Inkling adds to its scores a position bias projected from the hidden
    states (``r_proj``, relative logits gathered by distance) beside the
    causal mask.  Read with weights as zeros, that bias is zeros; but behind
    it lie every earlier layer's weights, which at a real size are more than
    the evaluator gives (here: its limit made small).  The bias is then read
    as the zeros it is with weights zeros, and the full layer stays causal."""
    from attncost.detect import evaluate

    monkeypatch.setattr(evaluate, "MAX_WEIGHT_BYTES", 4096)
    fields = dict(INKLING2, model_type="inkling_text", architectures=["InklingForCausalLM"])
    folder = write_config("inkling_text", **fields)
    a = attncost.analyze(folder, seq_len=64, attn_implementation="eager", kv_cache=False,
                         device="cpu", dtype="float32")
    assert [(s.variant, s.causal, s.window) for s in a.sites] == \
        [("local", True, 16), ("dense", True, None)]
    n = 300
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    pairs = [(int(((j <= i) & (j > i - 16)).sum()), 8), (int((j <= i).sum()), 16)]
    for site, (count, d) in zip(a.sites, pairs):  # 2·(d + d) FLOPs per pair and head
        assert a.at(site.useful_flops, n, 1) == 4 * 2 * (d + d) * count


#: FlauBERT (XLM's code): a mask from the ids, ``lengths = (ids != pad_index).sum(1)``
FLAUBERT = dict(model_type="flaubert", architectures=["FlaubertWithLMHeadModel"], emb_dim=64,
                n_layers=2, n_heads=4, vocab_size=128, max_position_embeddings=512,
                pad_index=2, eos_index=1, unk_index=3, bos_index=0, causal=False)


def test_a_mask_built_from_the_ids_sees_text_not_padding(write_config):
    """XLM's code builds its mask from the token ids: the lengths of the
    sequences are the ids that are not ``pad_index``, and a key is kept when
    its position is below them.  Fed ids of ordinary text (none the config
    names special), the mask is full: bidirectional dense; the lengths read
    from data are N at every length, so the formulas hold beyond it."""
    folder = write_config("flaubert", **FLAUBERT)
    a = attncost.analyze(folder, seq_len=64, attn_implementation="eager", device="cpu",
                         dtype="float32")
    assert [(s.variant, s.causal) for s in a.sites] == [("dense", False)] * 2
    assert a.holds_at(100, 2)
    n = 100  # every pair, 4 heads of 16: 2·(16 + 16) FLOPs a pair and head
    for site in a.sites:
        assert a.at(site.useful_flops, n, 1) == 4 * 2 * (16 + 16) * n * n
    model = _real(FLAUBERT, impl="eager").requires_grad_(False)
    for n, batch in ((64, 1), (100, 2)):
        ids = torch.randint(4, 128, (batch, n))
        assert a.at(a.flops, n, batch) == count_flops(model, (ids,)), n
    with torch.no_grad():
        real = measure_live(model, {"input_ids": torch.randint(4, 128, (2, 100))})
    assert a.at(a.peak_memory_bytes, 100, 2) == real.peak_bytes


#: experts sized by routing: top-2 of 8 per token, in the MLP and in the
#: attention's query projection (a mixture of attention heads)
JETMOE = dict(model_type="jetmoe", architectures=["JetMoeForCausalLM"], hidden_size=64,
              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, kv_channels=16,
              intermediate_size=128, num_local_experts=8, num_experts_per_tok=2,
              vocab_size=128, max_position_embeddings=512)


def test_pieces_sized_by_routing_are_equal_shares_of_what_they_split(write_config):
    """JetMoE splits the routed rows with ``expert_size.tolist()``: sizes read
    from values, unbacked symbols in every formula (the analysis ended in
    'needs values for u0, u1, ...').  They cover the rows they split, and an
    expert's work is the same per row: the FLOPs are exact at any routing."""
    folder = write_config("jetmoe", **JETMOE)
    a = attncost.analyze(folder, seq_len=64, attn_implementation="eager", kv_cache=False,
                         device="cpu", dtype="float32")
    assert any("equal share" in note for note in a.notes), a.notes
    # each token's 2 experts give 2 query heads each over the layer's 2 key/value
    # heads, which ``key.repeat(1, top_k, 1, 1)`` copies for them
    assert [(s.variant, s.causal, s.heads, s.kv_heads) for s in a.sites] == \
        [("dense", True, 4, 2)] * 2
    model = _real(JETMOE, impl="eager").requires_grad_(False)
    for n, batch in ((64, 1), (96, 2), (300, 3)):
        ids = torch.randint(0, 128, (batch, n))
        assert a.at(a.flops, n, batch) == count_flops(model, (ids,), {"use_cache": False}), n


LAYOUTS = {  # (a, b, offsets): the four layouts torch._grouped_mm takes
    "2d x 3d": ((24, 8), (3, 8, 16), [8, 16, 24]),
    "3d x 2d": ((3, 16, 8), (8, 24), [8, 16, 24]),
    "2d x 2d": ((16, 24), (24, 8), [8, 16, 24]),
    "3d x 3d": ((3, 16, 8), (3, 8, 16), None),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_grouped_mm_rule_equals_its_groups_as_separate_products(layout):
    """The rule against FlopCounterMode over the same product split into one
    mm per group (which it does count)."""
    from torch.utils.flop_counter import FlopCounterMode

    from attncost.rules.flops import grouped_mm_flops

    sa, sb, offs = LAYOUTS[layout]
    a, b = torch.randn(sa), torch.randn(sb)
    ends = offs or list(range(1, sa[0] + 1))
    starts = [0] + ends[:-1]
    with FlopCounterMode(display=False) as fc:
        for g, (s, e) in enumerate(zip(starts, ends)):
            if layout == "2d x 3d":
                a[s:e] @ b[g]
            elif layout == "3d x 2d":
                a[g] @ b[:, s:e]
            elif layout == "2d x 2d":
                a[:, s:e] @ b[s:e]
            else:
                a[g] @ b[g]
    assert grouped_mm_flops(sa, sb) == fc.get_total_flops()
    out = torch._grouped_mm(a, b, torch.tensor(offs, dtype=torch.int32) if offs else None)
    assert out.numel() > 0


# ------------------------------------------ 4. repeated structure by its period


@pytest.mark.parametrize("layers", [6, 7])
def test_alternating_layers_trace_one_period_and_replay(write_config, monkeypatch, layers):
    """Gemma-2's local/global layers (a period of 2; 7 layers end on a
    partial period): two periods traced, the rest replayed, the same graph
    as a full trace, the FLOPs of the real model."""
    fields = dict(GEMMA2, num_hidden_layers=layers)
    folder = write_config("gemma2", **fields)
    loaded = load(folder, attn_implementation="eager", kv_cache=True)
    block = find_repeated(loaded.module, loaded.config)
    assert (block.path, block.period, block.count) == ("model.layers", 2, layers)
    _shortcut_equals_full_trace(loaded, monkeypatch)
    a = attncost.analyze(loaded, seq_len=40, device="cpu")
    assert [s.layer for s in a.sites] == [f"model.layers.{i}" for i in range(layers)]
    assert [s.variant for s in a.sites] == (["local", "dense"] * 4)[:layers]
    model = _real(fields, "eager")
    for n in (20, 70):
        assert a.at(a.flops, n, 1) == count_flops(model, (_ids(n),), {"use_cache": True})


DEEPSEEK_V32 = dict(model_type="deepseek_v32", architectures=["DeepseekV32ForCausalLM"],
                    hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                    vocab_size=128, kv_lora_rank=16, q_lora_rank=32, qk_rope_head_dim=8,
                    v_head_dim=16, qk_nope_head_dim=16, head_dim=8, n_routed_experts=4,
                    num_experts_per_tok=2, n_group=1, topk_group=1, first_k_dense_replace=2,
                    index_topk=16, index_head_dim=16, index_n_heads=2, use_cache=False)


def test_a_top_k_indexer_counts_the_keys_it_keeps_at_every_length(write_config):
    """DeepSeek-V3.2's sparse attention: an indexer scores the keys from the
    input and keeps its top 16 per query, under the causal mask.  Which keys
    it keeps is the input's choice (content-based); how many is not,
    min(16, i + 1) for query i, so the useful work is a formula in N (it
    was a density measured at N=1,024, 14x too small at N=64)."""
    folder = write_config("deepseek_v32", **DEEPSEEK_V32)
    a = attncost.analyze(folder, seq_len=64, device="cpu", attn_implementation="eager")
    model = _real(DEEPSEEK_V32, impl="eager")
    ids = torch.randint(0, 128, (1, 64))
    with torch.no_grad():
        weights = model(input_ids=ids, output_attentions=True).attentions
    per_pair = 2 * (16 + 8 + 16) * 4  # Q·Kᵀ over d_qk = 16 + 8, P·V over d_v = 16; 4 heads
    for site, w in zip(a.sites, weights):
        assert (site.variant, site.causal, site.content_based) == ("sparse", True, True)
        kept = int((w[0] > 0).sum()) // 4  # each head's weights that are not zero
        assert a.at(site.useful_flops, 64, 1) == per_pair * kept
        assert a.at(site.useful_flops, 1000, 2) == 2 * per_pair * sum(min(16, i + 1)
                                                                     for i in range(1000))


DEBERTA = dict(model_type="deberta-v2", architectures=["DebertaV2ForMaskedLM"], hidden_size=64,
               intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
               vocab_size=128, relative_attention=True, position_buckets=32,
               max_relative_positions=-1, pos_att_type=["p2c", "c2p"],
               max_position_embeddings=512, position_biased_input=False, type_vocab_size=0)


def test_disentangled_position_terms_are_the_scores_work(write_config):
    """DeBERTa adds to Q·Kᵀ the queries against 2·32 relative position keys
    and the keys against 2·32 position queries (each gathered to N×N): the
    site's FLOPs are all three products and ·V, derived by hand; the model's
    total is FlopCounterMode's."""
    folder = write_config("deberta", **DEBERTA)
    a = attncost.analyze(folder, seq_len=64, attn_implementation="eager", device="cpu",
                         dtype="float32")
    heads, d, span = 4, 16, 2 * 32
    for n, b in ((64, 1), (200, 2)):
        by_hand = 2 * (2 * b * heads * n * n * d) + 2 * (2 * b * heads * n * span * d)
        assert [a.at(s.flops, n, b) for s in a.sites] == [by_hand, by_hand]
    config = transformers.AutoConfig.for_model(**DEBERTA)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = transformers.DebertaV2ForMaskedLM(config).eval().requires_grad_(False)
    ids = torch.randint(0, 128, (2, 200))
    assert a.at(a.flops, 200, 2) == count_flops(model, (ids,))



YOSO = dict(model_type="yoso", architectures=["YosoForMaskedLM"], hidden_size=64,
            intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, vocab_size=128,
            max_position_embeddings=512)


def test_scores_weighed_by_any_function_of_one_are_attention(write_config):
    """YOSO (its default expectation form) weighs each score by
    ``(1 - acos(q·k) / π) ** τ``, not a softmax, and applies the weights to
    V: dense attention over every pair, 2·N²·(16 + 16) per head by hand."""
    folder = write_config("yoso", **YOSO)
    a = attncost.analyze(folder, seq_len=64, attn_implementation="eager", device="cpu",
                         dtype="float32")
    assert len(a.sites) == 2
    assert all((s.variant, s.causal, s.heads) == ("dense", False, 4) for s in a.sites)
    heads, d = 4, 16
    for n, b in ((64, 1), (200, 2)):
        by_hand = 2 * b * heads * n * n * (d + d)
        assert [a.at(s.useful_flops, n, b) for s in a.sites] == [by_hand, by_hand]
    model = _real(YOSO, impl="eager").requires_grad_(False)
    ids = torch.randint(0, 128, (2, 200))
    assert a.at(a.flops, 200, 2) == count_flops(model, (ids,))


#: blocks of 16 local tokens and 4 global ones; every second encoder layer
#: staggers its blocks by half a block
PEGASUS_X = dict(model_type="pegasus_x", architectures=["PegasusXForConditionalGeneration"],
                 d_model=64, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4,
                 decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128,
                 vocab_size=128, max_position_embeddings=512, block_size=16,
                 num_global_tokens=4, stagger_local_blocks=True, pad_token_id=0,
                 eos_token_id=1, decoder_start_token_id=0)


def test_local_blocks_beside_global_tokens_are_a_site(write_config):
    """PEGASUS-X's encoder: the global tokens attend to every token, and each
    block of local tokens to its own block and the global tokens, their
    scores concatenated and masked under one softmax, each slice of the
    weights applied to its own values.  Both are sites: the local one a
    window of 16 + 4 keys per query, by hand; the global one dense over a
    fixed number of queries, in the second layer too, where the global
    tokens have attended to the sequence once already and the staggered
    blocks pad it by 16 keys that no query needs."""
    folder = write_config("pegasus_x", **PEGASUS_X)
    a = attncost.analyze(folder, seq_len=64, attn_implementation="eager", device="cpu",
                         dtype="float32")
    local = [s for s in a.sites if s.variant == "local"]
    assert [(s.name, s.causal, s.window, s.heads) for s in local] == [
        (f"model.encoder.layers.{i}.self_attn#2", False, 16 + 4, 4) for i in range(2)]
    overall = [s for s in a.sites if s.name.startswith("model.encoder") and s not in local]
    assert [(s.variant, s.causal, s.query_len) for s in overall] == [("dense", False, 4)] * 2
    model = _real(PEGASUS_X, impl="eager").requires_grad_(False)
    for n, batch in ((64, 1), (96, 2)):
        ids = torch.randint(2, 128, (batch, n))
        assert a.at(a.flops, n, batch) == count_flops(model, (ids,), {"decoder_input_ids": ids})
        per_pair = 4 * 2 * (16 + 16)  # 4 heads of 16: 2·(d + d_v) a pair and head
        assert a.at(local[0].useful_flops, n, batch) == batch * n * (16 + 4) * per_pair
        for site in overall:  # 4 global queries over the 4 global and N real tokens
            assert a.at(site.useful_flops, n, batch) == batch * 4 * (4 + n) * per_pair
