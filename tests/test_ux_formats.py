"""One set of formats everywhere: table, json, yaml and markdown wherever a
command has --format; fits' and compare's JSON say what analyze's says;
YAML keeps `·` and `×` as they are."""
import json

import pytest
import yaml
from click.testing import CliRunner

from attncost.cli import main
from conftest import MODELS

ALL_FORMATS = ["table", "json", "yaml", "markdown"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_every_command_with_format_has_all_four():
    for name, command in main.commands.items():
        option = next((p for p in command.params if p.name == "fmt"), None)
        if option is not None:
            assert list(option.type.choices) == ALL_FORMATS, name


def test_fits_markdown_is_markdown_and_json_names_the_model():
    model = MODELS / "causal_unfused.py"
    md = run("fits", model, "--seq-len", "4k", "--memory", "64MiB", "--format", "markdown")
    assert md.exit_code in (0, 1), md.output
    lines = md.stdout.splitlines()
    assert lines[0].startswith("**N=4k, B=1 ") and lines[0].endswith("**")
    assert "| at the peak | share |" in lines and any(x.startswith("- largest N") for x in lines)
    data = json.loads(run("fits", model, "--seq-len", "4k", "--memory", "64MiB",
                          "--format", "json").stdout)
    assert (data["model"], data["batch"], data["dtype"]) == (str(model), 1, "float32")
    for key in ("fits", "seq_len", "peak_memory_bytes", "budget_bytes", "headroom_bytes",
                "max_seq_len", "gpu", "what_if"):
        assert key in data
    assert data["warnings"] == []
    shares = [e["share"] for e in data["peak_breakdown"]]
    assert data["peak_breakdown"] and all(0 <= s <= 1 for s in shares)
    assert {"tensor", "bytes", "share"} <= set(data["peak_breakdown"][0])


def test_compare_json_keeps_its_keys_and_adds_expressions():
    out = run("compare", MODELS / "causal_unfused.py", "--seq-len", "512", "--dtype", "float32",
              "--dtype", "bfloat16", "--format", "json")
    assert out.exit_code == 0, out.output
    for choice in json.loads(out.stdout)["choices"]:
        # the keys other tools parse, as they were
        assert isinstance(choice["peak_memory_bytes"], int)
        assert isinstance(choice["useful_attention_flops"], int)
        assert set(choice["flops"]) == {"expr", "value"}
        totals = choice["totals"]
        assert totals["peak_memory_bytes"]["value"] == choice["peak_memory_bytes"]
        assert totals["useful_attention_flops"]["value"] == choice["useful_attention_flops"]
        assert totals["flops"] == choice["flops"]
        assert choice["warnings"] == []


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_compare_in_every_format(fmt):
    out = run("compare", MODELS / "causal_unfused.py", "--seq-len", "256", "--format", fmt)
    assert out.exit_code == 0, out.output
    assert "float32" in out.stdout


def test_yaml_keeps_unicode():
    out = run("analyze", MODELS / "masked_sparse.py", "--seq-len", "256", "--format", "yaml")
    assert out.exit_code == 0, out.output
    assert "×" in out.stdout  # "computes all N×N scores"
    assert "\\xB7" not in out.stdout and "\\xD7" not in out.stdout
    assert yaml.safe_load(out.stdout)["seq_len"] == 256


def test_validate_in_yaml_and_markdown(monkeypatch):
    import attncost.kernels.harness as harness

    report = {"device": "cpu", "results": [{"variant": "dense", "correct": True, "ok": True,
                                            "max_abs_error": 1e-6, "formula_exponent": 2,
                                            "fitted_exponent": None, "points": []}]}
    monkeypatch.setattr(harness, "run_validation", lambda **kw: report)
    md = run("validate", "--device", "cpu", "--format", "markdown")
    assert md.exit_code == 0, md.output
    assert md.stdout.splitlines()[2].startswith("| variant | max err |")
    assert yaml.safe_load(run("validate", "--device", "cpu", "--format", "yaml").stdout) == report
