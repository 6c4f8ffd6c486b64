"""80 columns, or a file: tables fold rows, never a site name or a number;
docs/build.py checks every documented output at 80 and 100 columns."""
import importlib.util
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from attncost.cli import main

ROOT = Path(__file__).resolve().parent.parent
SMALL_LLAMA = dict(model_type="llama", architectures=["LlamaForCausalLM"], num_hidden_layers=2,
                   hidden_size=64, num_attention_heads=4, num_key_value_heads=2, vocab_size=1024,
                   intermediate_size=128, max_position_embeddings=1 << 20, use_cache=False)
SITE = "model.layers.{0..1}.self_attn"


def run(*args, columns=80):
    return CliRunner().invoke(main, [str(a) for a in args], env={"COLUMNS": str(columns)})


@pytest.fixture
def llama(write_config):
    pytest.importorskip("transformers")
    return write_config("llama", **SMALL_LLAMA)


def test_analyze_at_80_columns_keeps_site_names_whole(llama):
    out = run("analyze", llama, "--seq-len", "32k")
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    assert any(SITE in line for line in lines)  # not "model.layers.{0" / "..1}.self_attn"
    assert any(line.startswith("FLOPs formula: 256·B·N^2") for line in lines)
    wide = run("analyze", llama, "--seq-len", "32k", columns=100).stdout
    header = next(line for line in wide.splitlines() if line.startswith("site "))
    assert "FLOPs formula" in header and SITE in wide


def test_compare_at_80_columns_never_cuts_a_number(llama):
    args = ("compare", llama, "--seq-len", "32k", "--attn-implementation", "sdpa",
            "--attn-implementation", "eager", "--gpu", "H100-SXM")
    out = run(*args)
    assert out.exit_code == 0, out.output
    assert "…" not in out.stdout
    assert max(len(line.rstrip()) for line in out.stdout.splitlines()) <= 80
    data = json.loads(run(*args, "--format", "json").stdout)
    for choice in data["choices"]:
        assert f"{choice['max_seq_len']:,}" in out.stdout
        assert f"{choice['attention_flops']['value'] / choice['flops']['value']:.1%}" in out.stdout
    narrow = run(*args, columns=40)
    assert narrow.exit_code == 0 and "…" not in narrow.stdout
    assert f"{data['choices'][1]['max_seq_len']:,}" in narrow.stdout


def _build():
    spec = importlib.util.spec_from_file_location("docs_build", ROOT / "docs" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_build_checks_both_widths():
    build = _build()
    assert (build.WIDE, build.NARROW) == (100, 80)
    wide = f"site  ×\n{SITE}  2  dense causal (sdpa)\n────\nFLOPs formula  256·B·N^2"
    folded = ("site ×\nmodel.layers.{0\n..1}.self_attn  2  dense causal\n(sdpa)\n"
              "FLOPs formula: 256·B·N^2")
    problems = build.width_problems("attncost x", {100: wide, 80: folded})
    assert problems == [f"attncost x: at 80 columns these are cut: {SITE}"]
    refolded = f"site ×\n{SITE}  2  dense\ncausal (sdpa)\nFLOPs formula: 256·B·N^2"
    assert build.width_problems("attncost x", {100: wide, 80: refolded}) == []
    too_wide = build.width_problems("attncost x", {100: wide, 80: wide + "x" * 81})
    assert any("a line of" in p for p in too_wide)
    block = "<!-- run@80: attncost specs -->\n```\nold\n```\n<!-- end -->"
    (m,) = build.RUN_BLOCK.finditer(block)
    assert (m.group("width"), m.group("command")) == ("80", "attncost specs")
    assert build.block_for("attncost specs", "new", 80).startswith("<!-- run@80: attncost specs")
    assert build.block_for("attncost specs", "new", 100).startswith("<!-- run: attncost specs")
