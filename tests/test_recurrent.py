"""Models that loop over the sequence, costed from traces at small lengths.

Oracles, each independent of attncost's trace:
* FlopCounterMode over a real forward of the real model on CPU tensors, at
  two lengths no trace saw (N=100 and N=257, B=2);
* the state's shape written from the model's own sizes (Mamba:
  expand·hidden × state_size; performer: heads × features × head dim);
* exact polynomials and a value that follows none, written by hand.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import sympy
import torch
from click.testing import CliRunner

import attncost
from attncost.cli import main
from attncost.errors import ModelError
from attncost.expr import B, N, value_at
from attncost.tracing.loops import FIT_LENGTHS, HELD_OUT, fit
from conftest import MODELS
from memtrack import measure as measure_live
from oracle import count_flops, load_module

#: Lengths no trace of the fit sees, with batch 2.
UNTRACED = (100, 257)
MAMBA = dict(model_type="mamba", architectures=["MambaForCausalLM"], num_hidden_layers=2,
             hidden_size=64, state_size=8, vocab_size=256, expand=2)


# ------------------------------------------------------------------ the fit


def _points(f):
    shapes = [(n, b) for b in (1, 2) for n in FIT_LENGTHS]
    return {s: f(*s) for s in shapes}, {s: f(*s) for s in HELD_OUT}


def test_fit_reproduces_a_polynomial_in_n_and_b():
    truth = lambda n, b: 3 * n * n * b + 5 * n * b + 7 * b + 11  # noqa: E731
    points, held = _points(truth)
    expr = fit(points, held)
    assert sympy.expand(expr - (3 * N**2 * B + 5 * N * B + 7 * B + 11)) == 0


def test_fit_refuses_what_no_polynomial_holds():
    # One more block of work every 10 tokens: a step the fitted lengths cannot see.
    points, held = _points(lambda n, b: b * n * (n // 10))
    assert fit(points, held) is None


# ------------------------------------------------------------------ a Python loop over the tokens


@pytest.fixture(scope="module")
def loop_analysis():
    return attncost.analyze(MODELS / "recurrent_loop.py", seq_len=1000, device="cpu")


def test_loop_flops_equal_flopcounter_at_untraced_lengths(loop_analysis):
    a = loop_analysis
    mod = load_module(MODELS / "recurrent_loop.py")
    torch.manual_seed(0)
    model = mod.build_model().eval()
    for n in UNTRACED:
        assert a.at(a.flops, n, 2) == count_flops(model, mod.example_inputs(n, batch=2))


def test_loop_peak_memory_equals_live_storages_at_untraced_lengths(loop_analysis):
    a = loop_analysis
    mod = load_module(MODELS / "recurrent_loop.py")
    model = mod.build_model().eval()
    for n in UNTRACED:
        with torch.no_grad():
            real = measure_live(model, mod.example_inputs(n, batch=2))
        assert a.at(a.peak_memory_bytes, n, 2) == real.peak_bytes, (n, real)


def test_loop_is_one_recurrent_site_with_its_state(loop_analysis):
    a = loop_analysis
    assert [(s.name, s.variant, s.implementation, s.causal, s.heads) for s in a.sites] == \
        [("<root>", "linear", "recurrent", True, 1)]
    site = a.sites[0]
    # h = tanh(W·h + x_t): W is 16×16, applied once per token and sequence.
    assert value_at(site.flops, 100, 2) == 2 * 16 * 16 * 100 * 2
    assert any("state 16 " in n for n in site.notes)
    assert any("fitted from traces" in n and f"N={HELD_OUT[0][0]}" in n for n in a.notes)


def _stepped_loop(tmp_path) -> Path:
    """The recurrent loop, with more work past N=18: its cost steps between
    the lengths a fit is made from and those it is checked at."""
    path = tmp_path / "stepped_loop.py"
    path.write_text(
        (MODELS / "recurrent_loop.py").read_text()
        .replace("        return self.out(torch.stack(steps, dim=1))",
                 "        y = torch.stack(steps, dim=1)\n"
                 "        if x.shape[1] > 18:  # more work past the fitted lengths\n"
                 "            y = y + self.state(y)\n"
                 "        return self.out(y)"))
    return path


def test_loop_whose_cost_steps_past_the_fit_is_traced_where_asked(tmp_path):
    """No polynomial fits the short traces: the requested length is traced
    alone (a loop of 300 steps is short enough), its formulas said to hold
    there only, and its FLOPs are a real forward's there."""
    path = _stepped_loop(tmp_path)
    a = attncost.analyze(path, seq_len=300, device="cpu")
    assert a.n_range == (300, 300)
    assert any("no polynomial in N fits its FLOPs" in n and "N=300" in n for n in a.notes)
    model = load_module(path).build_model().eval()
    assert a.at(a.flops, 300, 1) == count_flops(model, (torch.zeros(1, 300, dtype=torch.long),))


def test_loop_whose_cost_steps_is_refused_where_its_trace_is_too_long(tmp_path, monkeypatch):
    import attncost.analysis as analysis

    monkeypatch.setattr(analysis, "FIXED_LENGTH_CALLS", 500)
    with pytest.raises(ModelError, match="no polynomial in N fits its FLOPs .* too long .*"
                                         "try a shorter --seq-len"):
        attncost.analyze(_stepped_loop(tmp_path), seq_len=1000, device="cpu")


# ------------------------------------------------------------------ Mamba (transformers' slow path)


@pytest.fixture(scope="module")
def mamba_json(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mamba")
    (folder / "config.json").write_text(json.dumps(MAMBA))
    start = time.perf_counter()
    result = CliRunner().invoke(main, ["analyze", str(folder), "--seq-len", "32k",
                                       "--attn-implementation", "eager", "--format", "json"])
    elapsed = time.perf_counter() - start
    print(f"attncost analyze mamba --seq-len 32k: {elapsed:.1f} s")
    assert result.exit_code == 0, result.output
    return json.loads(result.output), elapsed


def test_mamba_at_32k_is_analysed_quickly(mamba_json):
    _, elapsed = mamba_json
    assert elapsed < 120


def test_mamba_flops_equal_flopcounter_at_untraced_lengths(mamba_json):
    transformers = pytest.importorskip("transformers")
    data, _ = mamba_json
    flops = sympy.sympify(data["totals"]["flops"]["expr"], locals={"N": N, "B": B})
    config = transformers.MambaConfig(**{k: v for k, v in MAMBA.items()
                                         if k not in ("model_type", "architectures")})
    torch.manual_seed(0)
    # without gradients: transformers wraps the causal conv in a `kernels` layer,
    # where FlopCounterMode's module tracker cannot hook parameters that need them
    model = transformers.MambaForCausalLM(config).eval().requires_grad_(False)
    for n in UNTRACED:
        ids = torch.randint(0, MAMBA["vocab_size"], (2, n))
        assert value_at(flops, n, 2) == count_flops(model, (ids,))


def test_mamba_sites_are_its_mixers_with_their_state(mamba_json):
    data, _ = mamba_json
    d_inner, d_state = MAMBA["expand"] * MAMBA["hidden_size"], MAMBA["state_size"]
    sites = data["sites"]
    assert [s["name"] for s in sites] == [f"backbone.layers.{i}.mixer" for i in range(2)]
    for s in sites:
        assert (s["variant"], s["implementation"], s["causal"], s["heads"]) == \
            ("linear", "recurrent", True, 1)
        assert f"state {d_inner}×{d_state} per sequence" in " ".join(s["notes"])
        # Each token written into the state and read from it: 2 + 2 FLOPs per element.
        assert s["useful_flops"]["value"] == 4 * d_inner * d_state * 32 * 1024
    assert any("fitted from traces" in n for n in data["notes"])


FALCON_MAMBA = dict(model_type="falcon_mamba", architectures=["FalconMambaForCausalLM"],
                    hidden_size=64, num_hidden_layers=2, state_size=16, expand=2,
                    vocab_size=128, use_cache=False)


def test_a_loop_whose_peak_is_another_moment_at_short_lengths_is_fitted_past_them(write_config):
    """FalconMamba's peak at N=8 and 12 is not the loop's (its peak grows
    111,904 bytes a token from N=16 on, 106,784 and 111,136 before): no
    polynomial through N=8..16 holds at N=20, so the peak is fitted from
    longer traces, and the formulas hold in N from there, not at the
    requested N alone."""
    transformers = pytest.importorskip("transformers")
    a = attncost.analyze(write_config("falcon_mamba", **FALCON_MAMBA), seq_len=1000,
                         device="cpu", attn_implementation="eager", dtype="float32")
    assert a.holds_at(100) and a.holds_at(257) and not a.holds_at(16)
    assert any("peak memory is fitted from traces" in note for note in a.notes), a.notes
    config = transformers.AutoConfig.for_model(**FALCON_MAMBA)
    torch.manual_seed(0)
    model = transformers.FalconMambaForCausalLM(config).eval().requires_grad_(False)
    for n in UNTRACED:
        ids = torch.randint(0, FALCON_MAMBA["vocab_size"], (2, n))
        assert a.at(a.flops, n, 2) == count_flops(model, (ids,))
        with torch.no_grad():
            real = measure_live(model, (ids,))
        assert a.at(a.peak_memory_bytes, n, 2) == real.peak_bytes, (n, real)


# ------------------------------------------------------------------ attention + Mamba layers

JAMBA = dict(model_type="jamba", architectures=["JambaForCausalLM"], num_hidden_layers=4,
             hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
             vocab_size=256, mamba_d_state=8, mamba_expand=2, num_experts=1,
             attn_layer_period=2, attn_layer_offset=1, use_mamba_kernels=False)


def test_hybrid_flops_and_sites(write_config):
    transformers = pytest.importorskip("transformers")
    start = time.perf_counter()
    a = attncost.analyze(write_config("jamba", **JAMBA), seq_len=8192, device="cpu",
                         attn_implementation="eager")
    print(f"attncost.analyze jamba at 8k: {time.perf_counter() - start:.1f} s")
    config = transformers.JambaConfig(**{k: v for k, v in JAMBA.items()
                                         if k not in ("model_type", "architectures")})
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = transformers.JambaForCausalLM(config).eval().requires_grad_(False)
    for n in UNTRACED:
        ids = torch.randint(0, JAMBA["vocab_size"], (2, n))
        assert a.at(a.flops, n, 2) == count_flops(model, (ids,))
    kinds = [(s.name, s.variant, s.causal, s.heads) for s in a.sites]
    assert kinds == [("model.layers.0.mamba", "linear", True, 1),
                     ("model.layers.1.self_attn", "dense", True, JAMBA["num_attention_heads"]),
                     ("model.layers.2.mamba", "linear", True, 1),
                     ("model.layers.3.self_attn", "dense", True, JAMBA["num_attention_heads"])]
    # Causal attention at any N: 2·H·(d_qk + d_v) per (query, key) pair, N(N+1)/2 pairs.
    d = JAMBA["hidden_size"] // JAMBA["num_attention_heads"]
    for n in UNTRACED:
        assert a.at(a.sites[1].useful_flops, n, 2) == 2 * 2 * 4 * 2 * d * n * (n + 1) // 2


# ------------------------------------------------------------------ a fit that does not hold at N

REFORMER = dict(model_type="reformer", architectures=["ReformerModel"], hidden_size=64,
                num_attention_heads=2, attention_head_size=16, feed_forward_size=128,
                attn_layers=["local", "lsh"], num_hidden_layers=2, axial_pos_embds=False,
                vocab_size=128, max_position_embeddings=4096, lsh_attn_chunk_length=32,
                local_attn_chunk_length=32, num_buckets=8, num_hashes=1, is_decoder=False,
                pad_token_id=0)


def test_a_length_fixed_as_a_number_past_the_fitted_lengths_is_traced_there():
    """dense_then_levels.py reads the length through math.log2 (a number of
    levels), so its cost is fitted from traces at N=8..24, all dense; past 32
    it attends over levels of blocks, and neither that fit nor one in a count
    of chunks holds: attncost traces it at the requested length and says the
    formulas hold there only."""
    path = MODELS / "dense_then_levels.py"
    mod = load_module(path)
    n = 512
    a = attncost.analyze(path, seq_len=n, device="cpu")
    assert a.n_range == (n, n)
    assert any(f"does not hold at N={n}" in note for note in a.notes), a.notes
    torch.manual_seed(0)
    model = mod.build_model().eval()
    assert a.at(a.flops) == count_flops(model, mod.example_inputs(n))
    # traced with B a plain number too: another batch is analysed there
    assert not a.holds_at(n, 2)
    assert a.at(a.flops, n, 2) == count_flops(model, mod.example_inputs(n, batch=2))


def test_reformer_sizes_made_python_ints_stay_symbolic(write_config):
    """Reformer checks its buckets' shape with ``int(buckets.shape[-1])``:
    read as torch.compile reads it (torch.sym_int), the length stays a
    symbol, and one trace holds from 64 to max_position_embeddings at the
    multiples of its chunk of 32: FLOPs equal FlopCounterMode at lengths and
    batches never traced."""
    transformers = pytest.importorskip("transformers")
    folder = write_config("reformer", **REFORMER)
    a = attncost.analyze(folder, seq_len=512, attn_implementation="eager", device="cpu")
    assert a.n_range == (64, REFORMER["max_position_embeddings"])
    assert a.multiple_of() == REFORMER["lsh_attn_chunk_length"]
    assert not any("fixes the length" in note for note in a.notes), a.notes
    config = transformers.AutoConfig.for_model(**REFORMER)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = transformers.ReformerModel(config).eval()
    for n, b in ((512, 1), (256, 2), (1024, 1)):
        ids = torch.randint(1, REFORMER["vocab_size"], (b, n))
        assert a.at(a.flops, n, b) == count_flops(model, (ids,)), (n, b)


def test_model_that_cannot_run_at_short_lengths_is_traced_where_asked():
    # levels_of_blocks.py fixes its number of levels from N and asserts N is
    # a multiple of 64, so no fit from short traces can be made: it is traced
    # at the requested length, and says its formulas hold there only
    path = MODELS / "levels_of_blocks.py"
    for n in (256, 512):
        a = attncost.analyze(path, seq_len=n, device="cpu")
        mod = load_module(path)
        model = mod.build_model().eval()
        assert a.at(a.flops, n, 1) == count_flops(model, mod.example_inputs(n))
        assert a.n_range == (n, n)
        assert a.at(a.flops, n, 2) == count_flops(model, mod.example_inputs(n, batch=2))
        assert any("holds at that N only" in note or "hold at that N only" in note
                   for note in a.notes)
        levels = int(math.log2(n // 32))
        assert len(a.sites) == levels
        assert {s.heads for s in a.sites} == {2}
        # level l: n / 2**l pooled positions in blocks of 16, 2 heads of 16
        for s, level in zip(sorted(a.sites, key=lambda s: -a.at(s.flops, n, 1)), range(levels)):
            pooled = n // 2 ** level
            assert a.at(s.flops, n, 1) == 2 * 2 * pooled * 16 * (16 + 16)


def test_a_config_type_another_package_registered_is_transformers_own(write_config):
    """flash-linear-attention, once imported (transformers' Qwen3-Next imports
    it), registers its own "mamba" config and model with transformers' Auto
    classes; a Mamba config.json is still transformers' Mamba (it was fla's,
    whose Triton layer norm cannot run while tracing)."""
    pytest.importorskip("transformers")
    pytest.importorskip("fla.models")
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    assert CONFIG_MAPPING["mamba"].__module__.startswith("fla.")  # the registration happened
    from attncost.loader import load

    loaded = load(write_config("mamba", **MAMBA))
    assert type(loaded.config).__module__ == "transformers.models.mamba.configuration_mamba"
    assert type(loaded.module).__module__ == "transformers.models.mamba.modeling_mamba"


def test_a_chunked_fit_takes_whole_chunks_apart_where_padding_is_not_made():
    """A loop over chunks of 16, the sequence padded to whole chunks: a
    copy of the padded sequence (3 bytes a padded position) is made only
    where the last chunk is not full.  Fitted in N and ceiling(N/16) through
    lengths inside chunks and checked at whole ones, the two differ: the
    formula is the Piecewise of both, exact at lengths no fit saw."""
    from types import SimpleNamespace

    from attncost.tracing.fit import FitFailed, chunked, fit_number

    def truth(n, b):
        chunks = -(-n // 16)
        copy = 3 * b * 16 * chunks if n % 16 else 0
        return 5 * b * n + 7 * b * chunks + 11 * chunks * chunks + copy

    lengths = chunked(16)
    measured = [SimpleNamespace(seq_len=n, batch=b, value=truth(n, b))
                for n, b in lengths.shapes()]
    expr = fit_number(measured, lambda m: m.value, "bytes", lengths=lengths)
    assert isinstance(expr, sympy.Piecewise)
    for n in (129, 144, 1000, 1024, 4097):
        for b in (1, 3):
            assert value_at(expr, n, b) == truth(n, b), (n, b)
    stepped = [SimpleNamespace(seq_len=n, batch=b, value=b * n * (n // 10))
               for n, b in lengths.shapes()]
    with pytest.raises(FitFailed):
        fit_number(stepped, lambda m: m.value, "FLOPs", lengths=lengths)


def test_a_scan_from_the_last_position_back_is_not_causal():
    """A bidirectional recurrence: the scan from the first position is
    causal; the scans from the last back (positions in reverse order, or a
    flipped sequence scanned forward) reach the later tokens, and say so.
    Each writes every token into its heads' d_k × d_v state and reads it
    there: 4·d_k·d_v per token and head."""
    bs = load_module(MODELS / "backward_scans.py")
    a = attncost.analyze(MODELS / "backward_scans.py", seq_len=24, device="cpu")
    assert [(s.variant, s.implementation, s.causal) for s in a.sites] == \
        [("linear", "recurrent", True), ("linear", "recurrent", False),
         ("linear", "recurrent", False)]
    assert [any("last position back" in note for note in s.notes) for s in a.sites] == \
        [False, True, True]
    for s in a.sites:
        for n, b in ((24, 1), (100, 2)):
            assert a.at(s.useful_flops, n, b) == b * n * bs.HEADS * 4 * bs.DIM_K * bs.DIM_V
    torch.manual_seed(0)
    model = bs.build_model().eval()
    for n in UNTRACED:
        assert a.at(a.flops, n, 2) == count_flops(model, bs.example_inputs(n, 2)), n
