"""`attncost plot` and `attncost compare`: the files they write, and their
numbers against counts derived by hand and by other counters."""
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from attncost.cli import main
from attncost.questions.sweep import plot_data
from attncost.render.sentences import sweep_notes
from conftest import MODELS

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

SMALL_LLAMA = dict(model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=64,
                   num_attention_heads=4, num_key_value_heads=2, intermediate_size=96,
                   num_hidden_layers=2, vocab_size=128, max_position_embeddings=512,
                   use_cache=False)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _needs_transformers():
    """Configs need the `hf` extra: without it these tests skip."""
    pytest.importorskip("transformers")


# ------------------------------------------------------------------ plot


def test_plot_of_a_python_model_is_a_png(tmp_path):
    out = tmp_path / "dense.png"
    result = run("plot", EXAMPLES / "dense_attention.py", "--seq-len", "1k..64k",
                 "--gpu", "H100-SXM", "--points", "20", "--out", out)
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 20_000
    assert "H100-SXM: fits up to N = " in result.stdout


def test_plot_of_a_config_has_a_curve_per_implementation(write_config, tmp_path):
    _needs_transformers()
    folder = write_config("llama", **SMALL_LLAMA)
    out = tmp_path / "llama.svg"
    result = run("plot", folder, "--seq-len", "256..16k", "--attn-implementation", "eager",
                 "--attn-implementation", "sdpa", "--gpu", "L4", "--points", "12", "--out", out)
    assert result.exit_code == 0, result.output
    assert "2 curve(s)" in result.stdout
    assert out.read_text().lstrip().startswith("<?xml")
    png = tmp_path / "llama.png"
    assert run("plot", folder, "--seq-len", "256..16k", "--points", "8", "--out",
               png).exit_code == 0
    assert png.read_bytes().startswith(PNG_MAGIC)


def test_plot_traces_each_branch_of_a_model_that_branches_on_n():
    model = MODELS / "branch_on_length.py"
    data = plot_data(str(model), (1024, 8192), points=9)
    (curve,) = data.curves
    assert len(curve.pieces) == 2 and not curve.clipped
    assert set(curve.piece_index) == {0, 1}
    for n, flops in zip(curve.seq_lens, curve.flops):
        m = n if n <= 2048 else (n + 1) // 2
        # Q·Qᵀ and P·Q: 2·M²·16 each, at the length the branch leaves
        assert flops == 2 * (2 * m * m * 16), n
    assert any("branches on N" in note for note in sweep_notes(data))


def test_plot_rejects_bad_input(tmp_path):
    model = EXAMPLES / "dense_attention.py"
    for args in (["--seq-len", "64k..1k"], ["--seq-len", "1k"], ["--seq-len", "1k..4k",
                                                                  "--gpu", "no-such-gpu"]):
        result = run("plot", model, *args, "--out", tmp_path / "x.png")
        assert result.exit_code == 2, (args, result.output)
    result = run("plot", model, "--seq-len", "1k..4k", "--out", tmp_path / "x.pdf")
    assert result.exit_code == 2 and "png or .svg" in result.stderr


# --------------------------------------------------------------- compare


def test_compare_with_baselines_shows_what_fused_attention_costs(tmp_path):
    """Two layers of 8 heads of 8 (d_model 64) through F.scaled_dot_product_attention:
    fvcore and FlopCounterMode count the projections only."""
    n = 128
    result = run("compare", MODELS / "sdpa_causal_gqa.py", "--seq-len", n,
                 "--baseline", "fvcore", "--baseline", "flopcounter", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    (baseline,) = data["baselines"]
    assert baseline["counters"] == ["attncost", "fvcore", "flopcounter"]
    layers = {row["layer"]: row for row in baseline["layers"]}
    assert set(layers) == {"0", "1"}
    # q: 64 -> 64, kv: 64 -> 2·2·8, o: 64 -> 64; 2 FLOPs per multiply-add
    projections = 2 * n * 64 * (64 + 32 + 64)
    attention = 4 * 1 * 8 * n * n * 8  # 4·B·H·N²·d
    for row in layers.values():
        assert row["flops"]["attncost"] == projections + attention
        assert row["flops"]["fvcore"] == projections
        assert row["flops"]["flopcounter"] == projections
        assert row["missed"]["fvcore"] == [
            {"op": "scaled_dot_product_attention", "calls": 1, "flops": None}]
        (missed,) = row["missed"]["flopcounter"]
        assert missed["flops"] == attention
        assert row["parameters"] == 64 * (64 + 32 + 64)
    assert baseline["totals"]["fvcore"] == 2 * projections


def test_compare_table_puts_implementations_side_by_side(write_config):
    _needs_transformers()
    folder = write_config("llama", **SMALL_LLAMA)
    result = run("compare", folder, "--seq-len", "512", "--attn-implementation", "eager",
                 "--attn-implementation", "sdpa", "--gpu", "L4", "--format", "json")
    assert result.exit_code == 0, result.output
    eager, sdpa = json.loads(result.stdout)["choices"]
    assert (eager["label"], sdpa["label"]) == ("eager, bfloat16", "sdpa, bfloat16")
    # the same work as written; eager keeps the N×N scores, flash does not
    assert eager["flops"]["value"] == sdpa["flops"]["value"]
    attention = 2 * 4 * 4 * 512 * 512 * 16  # 2 layers, 4·H·N²·d
    assert eager["attention_flops"]["value"] == sdpa["attention_flops"]["value"] == attention
    assert eager["peak_memory_bytes"] > sdpa["peak_memory_bytes"]
    assert eager["max_seq_len"] < sdpa["max_seq_len"]

    table = run("compare", folder, "--seq-len", "512", "--attn-implementation", "eager",
                "--attn-implementation", "sdpa", "--dtype", "float32", "--gpu", "L4")
    assert table.exit_code == 0, table.output
    for text in ("eager, float32", "sdpa, float32", "max N (L4)", "dense causal"):
        assert text in table.stdout


def test_flopcounter_misses_the_transformer_encoder_fast_path(tmp_path):
    model = tmp_path / "encoder.py"
    model.write_text("""
import torch, torch.nn as nn
def build_model():
    layer = nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, batch_first=True)
    return nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
def example_inputs(n, batch=1):
    return (torch.randn(batch, n, 32),)
""")
    result = run("compare", model, "--seq-len", "64", "--baseline", "flopcounter",
                 "--format", "json")
    assert result.exit_code == 0, result.output
    (baseline,) = json.loads(result.stdout)["baselines"]
    layers = {row["layer"]: row for row in baseline["layers"]}
    for name in ("layers.0", "layers.1"):
        assert layers[name]["flops"]["flopcounter"] == 0
        assert layers[name]["flops"]["attncost"] > 0
        assert [m["op"] for m in layers[name]["missed"]["flopcounter"]] == [
            "_transformer_encoder_layer_fwd"]


def test_fvcore_refuses_a_model_too_large_to_build_here(write_config):
    _needs_transformers()
    folder = write_config("wide", **dict(SMALL_LLAMA, vocab_size=120_000, hidden_size=256))
    result = run("compare", folder, "--seq-len", "64", "--baseline", "fvcore")
    assert result.exit_code == 2
    assert "parameters" in result.stderr and "--baseline flopcounter" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args", [["--gpu", "no-such-gpu"], ["--baseline", "nothing"],
                                  ["--attn-implementation", "sdpa"]])
def test_compare_bad_input_exits_2(args):
    result = run("compare", MODELS / "dense_unfused.py", "--seq-len", "64", *args)
    assert result.exit_code == 2, result.output
