"""transformers configs, measured against the truth.

Each entry is a config.json written here (tiny sizes, nothing downloaded)
for a model family whose layers mix attention patterns, analysed the way a
user would: ``attncost.analyze(folder, seq_len=..., device="cpu")``.  The
truth of each site was read from transformers' source (the version pinned
in TRANSFORMERS below: masking_utils.py's mask functions, each model's
config ``layer_types``) and is checked here against transformers itself:
``test_truth_patterns`` runs each config eagerly with ``output_attentions``
and requires every head's attention weights to be non-zero exactly where
the predicate written below allows a pair.  The sdpa path builds its
boolean mask with the same mask function (``sdpa_mask``; ``eager_mask`` is
that mask turned into 0 / -inf), so the eager probe stands for both.

Per entry, as tests/realcode/test_published.py does for published code:

- ``sites``: one per attention module, keyed by module path, each with its
  variant, causal flag and ``window`` (the most keys one query attends to);
  ``heads`` are the query heads of the config, ``kv_heads`` its key/value
  heads;
- ``flops_traced`` / ``flops_elsewhere``: ``a.flops`` against
  FlopCounterMode on the real model (tests/oracle.py) at the traced length
  with batch 1, and at a length never traced with batch 2;
- ``useful_flops``: the sites' useful FLOPs summed at 8× the traced length,
  against the (query, key) pairs each site's predicate allows, counted by
  brute force, × 2·(d_qk + d_v) per pair and head × heads.

A property attncost gets wrong is a strict xfail (X below) whose reason
says what it reports beside the truth.
"""
from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import dataclass, field, replace
from itertools import chain
from pathlib import Path
from typing import Callable

import pytest
import torch

import attncost
from attncost.errors import ModelError

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

HERE = Path(__file__).parent
if str(HERE.parent) not in sys.path:  # the oracle is tests/oracle.py
    sys.path.insert(0, str(HERE.parent))

from oracle import count_flops  # noqa: E402

#: The transformers the truths below were read from.
TRANSFORMERS = "5.25.0"

HEADS, KV_HEADS, HEAD_DIM = 4, 2, 8
#: Q·Kᵀ and P·V of one (query, key) pair in one head: 2·(d_qk + d_v).
PER_PAIR = 2 * (HEAD_DIM + HEAD_DIM)


# ------------------------------------------------------------------ what a site lets through


@dataclass(frozen=True)
class Pattern:
    """One site's truth: what attncost should call it, and which (query i,
    key j) pairs the code lets through, as transformers' mask function says."""

    variant: str
    causal: bool
    window: int | None
    #: the mask predicate on broadcast index tensors i (rows) and j (columns)
    allowed: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = field(compare=False)
    #: keys of each query row i, derived by hand from ``allowed``: used where an
    #: N×N grid is too big to count (checked against the grid in test_row_counts)
    keys_per_row: Callable[[torch.Tensor, int], torch.Tensor] | None = field(
        default=None, compare=False)

    def describe(self) -> str:
        text = f"{self.variant} {'causal' if self.causal else 'bidirectional'}"
        return text + (f", window {self.window}" if self.window is not None else "")


# masking_utils.causal_mask_function: kv_idx <= q_idx.
CAUSAL = Pattern("dense", True, None, lambda i, j: j <= i)
# bidirectional_mask_function: every pair (T5's encoder and cross-attention
# get create_bidirectional_mask, with no padding that is all True).
FULL = Pattern("dense", False, None, lambda i, j: (i >= 0) & (j >= 0))


def sliding_causal(w: int) -> Pattern:
    """sliding_window_causal_mask_function(w) = sliding_window_overlay(w)
    (kv_idx > q_idx - w) and causal: query i sees keys i-w+1..i, w of them."""
    return Pattern("local", True, w, lambda i, j: (j > i - w) & (j <= i),
                   keys_per_row=lambda i, n: torch.clamp(i + 1, max=w))


def sliding_bidirectional(half: int) -> Pattern:
    """sliding_window_bidirectional_overlay(half): abs(q_idx - kv_idx) <= half,
    so query i sees keys i-half..i+half, 2·half + 1 of them."""
    return Pattern("local", False, 2 * half + 1, lambda i, j: (i - j).abs() <= half)


def chunked_causal(c: int) -> Pattern:
    """chunked_causal_mask_function(c, left_padding=0): kv_idx // c == q_idx // c
    and causal: query i sees the keys of its own chunk up to i, at most c."""
    return Pattern("local", True, c, lambda i, j: (j // c == i // c) & (j <= i))


GRID_ROWS = 2048  # rows of the (i, j) grid evaluated at once
GRID_LIMIT = 1 << 13  # past this many queries a pattern with keys_per_row counts by rows


def count_pairs(pattern: Pattern, n_q: int, n_k: int) -> int:
    """Allowed (query, key) pairs: the predicate evaluated on every (i, j),
    GRID_ROWS rows at a time, or, for a long sequence, the hand-derived
    count per row summed over the rows."""
    if pattern.keys_per_row is not None and n_q > GRID_LIMIT:
        assert n_q == n_k
        return int(pattern.keys_per_row(torch.arange(n_q), n_q).sum())
    j = torch.arange(n_k)[None, :]
    total = 0
    for start in range(0, n_q, GRID_ROWS):
        i = torch.arange(start, min(start + GRID_ROWS, n_q))[:, None]
        total += int(pattern.allowed(i, j).expand(len(i), n_k).sum())
    return total


# ------------------------------------------------------------------ the corpus


def _ids(n: int, batch: int) -> dict:
    return {"input_ids": torch.zeros(batch, n, dtype=torch.long)}


def _encoder_decoder_ids(n: int, batch: int) -> dict:
    """N is both the encoder's and the decoder's tokens (attncost's note for T5)."""
    return {"input_ids": torch.zeros(batch, n, dtype=torch.long),
            "decoder_input_ids": torch.zeros(batch, n, dtype=torch.long), "use_cache": False}


def _decoder_maps(out) -> list:
    return list(out.attentions)


def _t5_maps(out) -> list:
    """In forward order: the encoder's self-attention, then per decoder
    block its self-attention and its cross-attention."""
    return [*out.encoder_attentions, *chain(*zip(out.decoder_attentions, out.cross_attentions))]


@dataclass
class ConfigEntry:
    fields: dict           # the config.json
    traced: int            # the length analyze traces
    elsewhere: int         # a length never traced, for the FLOPs (batch 2)
    #: module path -> its truth, in forward order
    sites: dict[str, Pattern]
    attn_implementation: str | None = None   # None: attncost's default (sdpa)
    inputs: Callable[[int, int], dict] = _ids
    #: the attention weights of an eager forward with output_attentions, in site order
    maps: Callable[[object], list] = _decoder_maps
    #: the length test_truth_patterns probes at (past every window)
    probe: int = 40
    #: the FlopCounterMode forward at the traced length runs on fake tensors
    fake_traced: bool = False
    kv_heads: int = KV_HEADS

    def useful(self, n: int) -> int:
        """Useful FLOPs of all sites at batch 1 and length n (every site is n × n)."""
        return sum(HEADS * PER_PAIR * count_pairs(p, n, n) for p in self.sites.values())


def _layers(prefix: str, patterns: list[Pattern]) -> dict[str, Pattern]:
    return {f"{prefix}.{k}.self_attn": p for k, p in enumerate(patterns)}


def _real_config(fields: dict):
    return transformers.AutoConfig.for_model(**fields)


DECODER = dict(hidden_size=HEADS * HEAD_DIM, num_attention_heads=HEADS,
               num_key_value_heads=KV_HEADS, head_dim=HEAD_DIM, intermediate_size=64,
               vocab_size=128, max_position_embeddings=512)

# Mistral-7B-v0.1's attention, scaled down: 32 query heads over 8 KV heads
# (here 4 over 1), sliding_window 4096, 32k positions.  Every layer gets
# create_sliding_window_causal_mask.  At N = 32768 a real forward takes
# 40 s on two cores (the N×N mask, and SDPA under it): the traced length's
# FLOPs are counted on a forward over fake tensors (FlopCounterMode counts
# from shapes; that forward gave 276,287,193,088, the same as a real one),
# the length never traced (N = 4500, past the window) runs for real.
MISTRAL_32K = dict(DECODER, model_type="mistral", architectures=["MistralForCausalLM"],
                   num_key_value_heads=1, num_hidden_layers=2, sliding_window=4096,
                   max_position_embeddings=32768)

# Gemma-2: Gemma2Config's layer_types are "sliding_attention" where (i + 1) % 2,
# i.e. layers 0, 2 slide and 1, 3 are global.  Eager only:
# Gemma2PreTrainedModel._supports_sdpa = False (sdpa has no logit softcapping).
GEMMA2 = dict(DECODER, model_type="gemma2", architectures=["Gemma2ForCausalLM"],
              num_hidden_layers=4, sliding_window=16)

# ModernBERT: layer_types "sliding_attention" where i % global_attn_every_n_layers,
# so layers 0, 3 are global; config.sliding_window = local_attention // 2 = 8
# and create_bidirectional_sliding_window_mask lets |i - j| <= 8 through
# (ModernBertAttention's sliding_window + 1 is flash attention's argument;
# sdpa and eager read the mask).
MODERNBERT = dict(model_type="modernbert", architectures=["ModernBertForMaskedLM"],
                  hidden_size=HEADS * HEAD_DIM, num_attention_heads=HEADS, intermediate_size=64,
                  num_hidden_layers=4, vocab_size=128, max_position_embeddings=512,
                  global_attn_every_n_layers=3, local_attention=16, pad_token_id=0,
                  bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2)

# Qwen2 with use_sliding_window: Qwen2Config's layer_types are
# "sliding_attention" where i >= max_window_layers, so layers 2, 3 slide.
QWEN2 = dict(DECODER, model_type="qwen2", architectures=["Qwen2ForCausalLM"],
             num_hidden_layers=4, use_sliding_window=True, sliding_window=16,
             max_window_layers=2)

# T5: the encoder's self-attention bidirectional, the decoder's causal,
# the decoder's cross-attention over every encoder token.
T5 = dict(model_type="t5", architectures=["T5ForConditionalGeneration"], d_model=32,
          d_kv=HEAD_DIM, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=HEADS,
          vocab_size=128, relative_attention_num_buckets=8)

# Llama-4 text: Llama4TextConfig's no_rope_layers default to
# int((i + 1) % no_rope_layer_interval != 0) (interval 4) and layer_types to
# "chunked_attention" where that is 1 (the RoPE layers 0, 1, 2) and
# "full_attention" on layer 3 (NoPE, temperature-tuned); chunked layers get
# create_chunked_causal_mask.  Every layer's feed-forward is a 2-expert MoE
# (moe_layers default to all with interleave_moe_layer_step 1).
LLAMA4 = dict(DECODER, model_type="llama4_text", architectures=["Llama4ForCausalLM"],
              num_hidden_layers=4, intermediate_size=32, intermediate_size_mlp=64,
              attention_chunk_size=16, num_local_experts=2)

# GPT-Neo: attention_types [[["global", "local"], 2]] expands to layers
# global, local, global, local.  Each GPTNeoSelfAttention keeps its mask as a
# non-persistent buffer built in __init__ (and again in _init_weights):
# tril(ones) for global, tril(ones) ^ tril(ones, -window_size) for local, so
# a local query i sees keys i-15..i.  Eager: the mask is read from the buffer.
GPT_NEO = dict(model_type="gpt_neo", architectures=["GPTNeoForCausalLM"], hidden_size=HEADS * HEAD_DIM,
               num_heads=HEADS, num_layers=4, attention_types=[[["global", "local"], 2]],
               window_size=16, intermediate_size=64, vocab_size=128, max_position_embeddings=512)

# XGLM: its own attention (no attention interface): Q·Kᵀ by bmm over B·H,
# plus the 4-D causal mask, then clamped from below by torch.max(scores,
# finfo.min) before the softmax.
XGLM = dict(model_type="xglm", architectures=["XGLMForCausalLM"], d_model=HEADS * HEAD_DIM,
            attention_heads=HEADS, ffn_dim=64, num_layers=2, vocab_size=128,
            max_position_embeddings=512)

CONFIGS = {
    "mistral_7b_32k": ConfigEntry(MISTRAL_32K, 32768, 4500,
                                  _layers("model.layers", [sliding_causal(4096)] * 2),
                                  probe=4120, fake_traced=True, kv_heads=1),
    "gemma2_eager": ConfigEntry(GEMMA2, 64, 100,
                                _layers("model.layers", [sliding_causal(16), CAUSAL] * 2),
                                attn_implementation="eager"),
    "modernbert": ConfigEntry(MODERNBERT, 64, 100, {
        f"model.layers.{k}.attn": p for k, p in enumerate(
            [FULL, sliding_bidirectional(8), sliding_bidirectional(8), FULL])},
        kv_heads=HEADS),
    "qwen2_sliding": ConfigEntry(QWEN2, 64, 100,
                                 _layers("model.layers", [CAUSAL] * 2 + [sliding_causal(16)] * 2)),
    "t5": ConfigEntry(T5, 64, 100, {
        "encoder.block.0.layer.0.SelfAttention": FULL,
        "encoder.block.1.layer.0.SelfAttention": FULL,
        "decoder.block.0.layer.0.SelfAttention": CAUSAL,
        "decoder.block.0.layer.1.EncDecAttention": FULL,
        "decoder.block.1.layer.0.SelfAttention": CAUSAL,
        "decoder.block.1.layer.1.EncDecAttention": FULL,
    }, inputs=_encoder_decoder_ids, maps=_t5_maps, kv_heads=HEADS),
    "llama4_text": ConfigEntry(LLAMA4, 64, 100,
                               _layers("model.layers", [chunked_causal(16)] * 3 + [CAUSAL])),
    "gpt_neo": ConfigEntry(GPT_NEO, 64, 100, {
        f"transformer.h.{k}.attn.attention": p for k, p in enumerate(
            [CAUSAL, sliding_causal(16)] * 2)},
        attn_implementation="eager", kv_heads=HEADS),
    "xglm": ConfigEntry(XGLM, 64, 100, _layers("model.layers", [CAUSAL] * 2),
                        attn_implementation="eager", kv_heads=HEADS),
}


@dataclass
class Refusal:
    """A config and an implementation transformers does not build it with:
    attncost must refuse with a ModelError naming the implementations that work."""

    fields: dict
    attn_implementation: str

    def works(self) -> list[str]:
        """What transformers builds the model with, from the class's flags."""
        cls = getattr(transformers, self.fields["architectures"][0])
        flags = {"eager": True, "sdpa": cls._supports_sdpa,
                 "flex_attention": cls._supports_flex_attn,
                 "flash_attention_2": cls._supports_flash_attn}
        return [impl for impl, ok in flags.items() if ok and impl != self.attn_implementation]


REFUSALS = {
    # Gemma2PreTrainedModel._supports_sdpa = False, flex and flash True.
    "gemma2_sdpa": Refusal(GEMMA2, "sdpa"),
}

# ------------------------------------------------------------------ where attncost stands

#: (entry, property) -> what attncost says beside the truth, measured on main.
X: dict[tuple[str, str], str] = {}


def cases(prop: str):
    out = []
    for name in CONFIGS:
        reason = X.get((name, prop))
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        out.append(pytest.param(name, marks=marks, id=name))
    return out


# ------------------------------------------------------------------ running attncost and the oracle


def write_config(name: str, fields: dict, root: Path) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(fields))
    return folder


_ANALYSES: dict[str, object] = {}


def analysed(name: str, root: Path):
    """attncost's analysis of one entry, done once; a failure is re-raised in
    every test of the entry."""
    entry = CONFIGS[name]
    if name not in _ANALYSES:
        options = {} if entry.attn_implementation is None else {
            "attn_implementation": entry.attn_implementation}
        try:
            _ANALYSES[name] = attncost.analyze(write_config(name, entry.fields, root),
                                               seq_len=entry.traced, device="cpu", **options)
        except Exception as exc:  # noqa: BLE001 - the tests report it
            _ANALYSES[name] = exc
    got = _ANALYSES[name]
    if isinstance(got, BaseException):
        raise AssertionError(f"attncost.analyze failed: {type(got).__name__}: {got}") from got
    return got


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("configs")


def real_model(fields: dict, impl: str = "sdpa"):
    """The real model of a config, with real (random) weights."""
    config = _real_config(fields)
    config._attn_implementation = impl
    torch.manual_seed(0)
    return getattr(transformers, fields["architectures"][0])(config).eval()


_MODELS: dict[str, torch.nn.Module] = {}


def oracle_flops(name: str, n: int, batch: int, fake: bool = False) -> int:
    entry = CONFIGS[name]
    if name not in _MODELS:
        _MODELS[name] = real_model(entry.fields, entry.attn_implementation or "sdpa")
    model = _MODELS[name]
    if not fake:
        return count_flops(model, (), entry.inputs(n, batch))
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True):
        return count_flops(model, (), entry.inputs(n, batch))


def _describe(a) -> str:
    return "; ".join(f"{s.name}: {s.variant} causal={s.causal} heads={s.heads} window={s.window}"
                     for s in a.sites) or "no sites"


def _by_site(a, prop: str) -> dict:
    return {s.name: getattr(s, prop) for s in a.sites}


# ------------------------------------------------------------------ what attncost must say


@pytest.mark.parametrize("name", cases("sites"))
def test_sites(name, root):
    a = analysed(name, root)
    assert [s.name for s in a.sites] == list(CONFIGS[name].sites), _describe(a)


@pytest.mark.parametrize("name", cases("variant"))
def test_variant(name, root):
    a = analysed(name, root)
    want = {site: p.variant for site, p in CONFIGS[name].sites.items()}
    assert _by_site(a, "variant") == want, _describe(a)


@pytest.mark.parametrize("name", cases("causal"))
def test_causal(name, root):
    a = analysed(name, root)
    want = {site: p.causal for site, p in CONFIGS[name].sites.items()}
    assert _by_site(a, "causal") == want, _describe(a)


@pytest.mark.parametrize("name", cases("heads"))
def test_heads(name, root):
    a = analysed(name, root)
    assert a.sites and {s.heads for s in a.sites} == {HEADS}, _describe(a)


@pytest.mark.parametrize("name", cases("kv_heads"))
def test_kv_heads_and_head_dim(name, root):
    a = analysed(name, root)
    want = {(CONFIGS[name].kv_heads, HEAD_DIM)}
    assert a.sites and {(s.kv_heads, s.head_dim) for s in a.sites} == want, _describe(a)


@pytest.mark.parametrize("name", cases("window"))
def test_window(name, root):
    a = analysed(name, root)
    want = {site: p.window for site, p in CONFIGS[name].sites.items()}
    assert _by_site(a, "window") == want, _describe(a)


@pytest.mark.parametrize("name", cases("patterns"))
def test_patterns_as_a_multiset(name, root):
    """The (variant, causal, window) of the sites, whatever their names."""
    a = analysed(name, root)
    want = Counter((p.variant, p.causal, p.window) for p in CONFIGS[name].sites.values())
    assert Counter((s.variant, s.causal, s.window) for s in a.sites) == want, _describe(a)


@pytest.mark.parametrize("name", cases("flops_traced"))
def test_flops_traced(name, root):
    a = analysed(name, root)
    entry = CONFIGS[name]
    n = entry.traced
    assert a.at(a.flops, n, 1) == oracle_flops(name, n, 1, fake=entry.fake_traced)


@pytest.mark.parametrize("name", cases("flops_elsewhere"))
def test_flops_elsewhere(name, root):
    a = analysed(name, root)
    n = CONFIGS[name].elsewhere
    assert a.at(a.flops, n, 2) == oracle_flops(name, n, 2)


@pytest.mark.parametrize("name", cases("useful_flops"))
def test_useful_flops(name, root):
    a = analysed(name, root)
    n = 8 * CONFIGS[name].traced
    got = sum(a.at(s.useful_flops, n, 1) for s in a.sites)
    assert got == CONFIGS[name].useful(n), _describe(a)


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_refused_naming_what_works(name, root):
    """transformers has no sdpa for Gemma-2: a ModelError, one line, naming
    exactly the implementations transformers builds it with."""
    refusal = REFUSALS[name]
    folder = write_config(name, refusal.fields, root)
    with pytest.raises(ModelError) as err:
        attncost.analyze(folder, seq_len=64, device="cpu",
                         attn_implementation=refusal.attn_implementation)
    message = str(err.value)
    assert "\n" not in message
    cls = refusal.fields["architectures"][0]
    assert f"no {refusal.attn_implementation} attention for {cls}" in message
    named = message.split("it builds with ", 1)[1].split(":", 1)[0].split(", ")
    assert sorted(named) == sorted(refusal.works()), message


# ------------------------------------------------------------------ the truth, on transformers


@pytest.mark.parametrize("name", list(CONFIGS))
def test_truth_patterns(name):
    """Every head's attention weights in an eager forward are non-zero
    exactly where the site's predicate allows a pair."""
    entry = CONFIGS[name]
    model = real_model(entry.fields, "eager")
    n = entry.probe
    assert n > max(p.window or 0 for p in entry.sites.values())
    torch.manual_seed(1)
    inputs = {k: (torch.randint(0, 128, v.shape) if k.endswith("input_ids") else v)
              for k, v in entry.inputs(n, 1).items()}
    with torch.no_grad():
        maps = entry.maps(model(**inputs, output_attentions=True))
    assert len(maps) == len(entry.sites)
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    for (site, pattern), weights in zip(entry.sites.items(), maps):
        allowed = pattern.allowed(i, j).expand(n, n)
        assert weights.shape == (1, HEADS, n, n), site
        for head in weights[0]:
            assert torch.equal(head != 0, allowed), site


def test_truth_layer_types():
    """Which layers slide or chunk, as the configs say it (the patterns above
    are keyed by layer in this order)."""
    def types(fields):
        return list(_real_config(fields).layer_types)

    assert types(GEMMA2) == ["sliding_attention", "full_attention"] * 2
    assert types(MODERNBERT) == ["full_attention", "sliding_attention", "sliding_attention",
                                 "full_attention"]
    assert types(QWEN2) == ["full_attention"] * 2 + ["sliding_attention"] * 2
    assert types(LLAMA4) == ["chunked_attention"] * 3 + ["full_attention"]
    assert _real_config(MODERNBERT).sliding_window == 8


@pytest.mark.parametrize("pattern, n", [(sliding_causal(16), 100), (sliding_causal(4096), 9000)])
def test_row_counts(pattern, n):
    """The count by rows (used past GRID_LIMIT queries) is the grid's count."""
    by_rows = int(pattern.keys_per_row(torch.arange(n), n).sum())
    assert by_rows == count_pairs(replace(pattern, keys_per_row=None), n, n)
