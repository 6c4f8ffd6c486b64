"""The command line: output formats, and bad input ending with exit 2, no traceback."""
import json

import pytest
import sympy
from click.testing import CliRunner

from attncost.cli import main
from attncost.units import parse_length
from conftest import MODELS


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_parse_length_suffixes():
    assert parse_length("4k") == 4096
    assert parse_length("128k") == 131072
    assert parse_length("1M") == 1048576
    assert parse_length("32768") == 32768


def test_analyze_json_contract():
    result = run("analyze", MODELS / "causal_unfused.py", "--seq-len", "2k", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["seq_len"] == 2048 and data["batch"] == 1 and data["device"] == "cuda"
    syms = {"N": sympy.Symbol("N"), "B": sympy.Symbol("B")}
    site = data["sites"][0]
    for key in ("flops", "useful_flops", "flops_per_head", "memory_bytes"):
        expr = sympy.sympify(site[key]["expr"], locals=syms)
        assert expr.free_symbols <= set(syms.values())
        assert int(expr.subs({syms["N"]: 2048, syms["B"]: 1})) == site[key]["value"]
    # by hand: 3 heads of 16, Q·Kᵀ and P·V each 2·N²·d per head
    assert site["flops"]["value"] == 2 * 2 * 3 * 2048 * 2048 * 16
    for key in ("flops", "attention_flops", "peak_memory_bytes"):
        expr = sympy.sympify(data["totals"][key]["expr"], locals=syms)
        assert expr.free_symbols <= set(syms.values())
        assert int(expr.subs({syms["N"]: 2048, syms["B"]: 1})) == data["totals"][key]["value"]


@pytest.mark.parametrize("fmt", ["table", "yaml", "markdown"])
def test_other_formats(fmt):
    result = run("analyze", MODELS / "dense_unfused.py", "--seq-len", "1k", "--format", fmt)
    assert result.exit_code == 0, result.output
    assert "layers" in result.stdout


def test_model_without_attention_reports_zero_sites():
    result = run("analyze", MODELS / "mlp_only.py", "--seq-len", "128", "--format", "json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["sites"] == []


def _bad(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("case", ["missing", "no_model", "raises", "syntax", "bad_json",
                                  "not_config", "zero_len", "negative_len", "bad_len",
                                  "no_inputs", "returns_other"])
def test_bad_input_exits_2_without_traceback(tmp_path, case):
    seq = "64"
    if case == "missing":
        target = tmp_path / "nope.py"
    elif case == "no_model":
        target = _bad(tmp_path, "m.py", "x = 1\n")
    elif case == "raises":
        target = _bad(tmp_path, "m.py", "import torch\nclass M(torch.nn.Module):\n"
                      "    def forward(self, x):\n        raise RuntimeError('boom')\n"
                      "def build_model():\n    return M()\n"
                      "def example_inputs(n, batch=1):\n    return (torch.randn(batch, n),)\n")
    elif case == "syntax":
        target = _bad(tmp_path, "m.py", "def build_model(:\n")
    elif case == "bad_json":
        target = _bad(tmp_path, "config.json", "{not json")
    elif case == "not_config":
        target = _bad(tmp_path, "config.json", '{"hidden_size": 3}')
    elif case == "no_inputs":
        target = _bad(tmp_path, "m.py", "import torch\ndef build_model():\n"
                      "    return torch.nn.Linear(4, 4)\n")
    elif case == "returns_other":
        target = _bad(tmp_path, "m.py", "def build_model():\n    return 3\n")
    else:
        target = MODELS / "dense_unfused.py"
        seq = {"zero_len": "0", "negative_len": "-5", "bad_len": "lots"}[case]
    before = target.read_text() if target.exists() else None
    result = run("analyze", target, "--seq-len", seq)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    err = result.stderr.strip().splitlines()
    assert 1 <= len(err) <= 3, err
    if before is not None:
        assert target.read_text() == before
        assert not (target.parent / "__pycache__").exists()


def test_debug_shows_traceback(tmp_path):
    target = _bad(tmp_path, "m.py", "x = 1\n")
    result = run("analyze", target, "--seq-len", "64", "--debug")
    assert result.exit_code == 2
    assert "Traceback" in result.stderr


def test_branch_on_length_states_the_range():
    target = MODELS / "branch_on_length.py"
    result = run("analyze", target, "--seq-len", "1k", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["valid_for"] == "2 <= N <= 2048" or data["valid_for"] == "1 <= N <= 2048"
    result = run("analyze", target, "--seq-len", "4k", "--format", "json")
    data = json.loads(result.stdout)
    assert data["valid_for"] == "N >= 2049; N even"  # q[:, ::2] keeps ceil(N/2) rows
    # the long branch halves the sequence: (N/2)² scores of 16, twice
    assert data["sites"][0]["flops"]["value"] == 2 * 2 * 2048 * 2048 * 16


def test_module_level_model_and_keyword_inputs(tmp_path):
    """The other MODEL forms: a module-level `model`, inputs as a dict."""
    target = _bad(tmp_path, "m.py", """
import torch
import torch.nn.functional as F

class M(torch.nn.Module):
    def forward(self, q, k=None):
        return F.scaled_dot_product_attention(q, k, k, is_causal=True)

model = M()

def example_inputs(seq_len, batch=1):
    return {"q": torch.randn(batch, 2, seq_len, 8), "k": torch.randn(batch, 2, seq_len, 8)}
""")
    result = run("analyze", target, "--seq-len", "100", "--format", "json")
    assert result.exit_code == 0, result.output
    (site,) = json.loads(result.stdout)["sites"]
    assert (site["heads"], site["head_dim"], site["causal"]) == (2, 8, True)
    # 2 heads, Q·Kᵀ and P·V over 100×100 pairs of 8-dim vectors
    assert site["flops"]["value"] == 2 * (2 * 2 * 100 * 100 * 8)
    # by hand: about half the pairs are needed, query i sees i + 1 keys
    assert site["useful_flops"]["value"] == 2 * 2 * 2 * 8 * sum(range(1, 101))


def _llama_config(tmp_path, **extra):
    """A small llama config; the tests that read one skip without the `hf` extra."""
    pytest.importorskip("transformers")
    fields = dict(model_type="llama", architectures=["LlamaForCausalLM"], num_hidden_layers=2,
                  hidden_size=64, num_attention_heads=4, num_key_value_heads=2, vocab_size=1024,
                  intermediate_size=128, max_position_embeddings=1 << 20, use_cache=False)
    fields.update(extra)
    folder = tmp_path / "llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(fields))
    return folder


def test_fits_exit_status_and_json(tmp_path):
    folder = _llama_config(tmp_path)
    fit = run("fits", folder, "--seq-len", "1k", "--memory", "1GiB", "--format", "json")
    assert fit.exit_code == 0, fit.output
    data = json.loads(fit.stdout)
    assert data["fits"] is True and data["budget_bytes"] == 1 << 30
    # on CUDA the budget bounds what the caching allocator reserves
    assert data["reserved_peak_bytes"] >= data["peak_memory_bytes"]
    assert data["headroom_bytes"] == data["budget_bytes"] - data["reserved_peak_bytes"]
    largest = data["max_seq_len"]
    assert largest >= 1024

    def peak(n):
        out = run("fits", folder, "--seq-len", str(n), "--memory", "1GiB", "--format", "json")
        return json.loads(out.stdout)["peak_memory_bytes"], out.exit_code

    # the boundary, checked by asking at both sides of it: it runs at the
    # largest N and not one token above (the caching allocator decides)
    at, code_at = peak(largest)
    above, code_above = peak(largest + 1)
    assert at <= 1 << 30 and (code_at, code_above) == (0, 1)


def test_fits_what_if_when_it_does_not_fit(tmp_path):
    folder = _llama_config(tmp_path)
    out = run("fits", folder, "--seq-len", "256k", "--memory", "256MiB")
    assert out.exit_code == 1, out.output
    assert "does not fit" in out.stdout and "what if:" in out.stdout
    data = json.loads(run("fits", folder, "--seq-len", "256k", "--memory", "256MiB",
                          "--format", "json").stdout)
    changes = {w["change"]: w for w in data["what_if"]}
    last_only = next(w for c, w in changes.items() if "logits_to_keep" in c)
    # without N×vocab logits the same budget reaches further
    assert last_only["max_seq_len"] > data["max_seq_len"]
    assert last_only["peak_memory_bytes"] < data["peak_memory_bytes"]


@pytest.mark.parametrize("args", [["--gpu", "no-such-gpu"], ["--memory", "lots"], [],
                                  ["--gpu", "H100-SXM", "--memory", "1GiB"]])
def test_fits_bad_budget_exits_2(tmp_path, args):
    folder = _llama_config(tmp_path)
    out = run("fits", folder, "--seq-len", "1k", *args)
    assert out.exit_code == 2, out.output
    assert "Traceback" not in out.output
