"""Honest output: formulas used outside the range they hold for are warned
about; sentences sum only what can be summed, omit 0% shares, list only
what-ifs that help, and give a readable leading term."""
import json
import warnings
from types import SimpleNamespace

import pytest
import sympy
import torch
from click.testing import CliRunner

from attncost.analysis import analyze
from attncost.cli import main
from attncost.expr import B, N, leading_term
from attncost.render import show_analysis
from attncost.render.schema import analysis_dict
from attncost.render.sentences import _hidden_quadratic_line, leading_text
from conftest import MODELS
from oracle import load_module

SMALL_LLAMA = dict(model_type="llama", architectures=["LlamaForCausalLM"], num_hidden_layers=2,
                   hidden_size=64, num_attention_heads=4, num_key_value_heads=2, vocab_size=1024,
                   intermediate_size=128, max_position_embeddings=1 << 20, use_cache=False)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_at_outside_the_range_warns_once_and_records_it(capsys):
    a = analyze(MODELS / "branch_on_length.py", 1024)
    assert a.n_range[1] == 2048
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inside = a.at(a.flops, 2048)
        # the analysis' own FLOPs past the branch: analysed again there, exact
        # (above 2048 the model keeps every other position: N/2 queries and keys)
        beyond = a.at(a.flops, 4096)
        assert not caught and a.warnings == []
        # an expression of the user's own: what its formula says, warned about
        a.at(2 * a.flops, 4096)
        a.at(a.peak_memory_bytes + 1, 8192)
    assert inside == 2 * (2 * 2048 * 2048 * 16)
    assert beyond == 2 * (2 * 2048 * 2048 * 16)
    assert len(caught) == 1 and "outside 1..2,048" in str(caught[0].message)
    (warning,) = a.warnings
    assert "N=4,096" in warning and "\n" not in warning
    assert analysis_dict(a)["warnings"] == [warning]
    show_analysis(a, "json")
    out = capsys.readouterr()
    assert json.loads(out.out)["warnings"] == [warning]
    assert out.err.strip() == f"attncost: warning: {warning}"


def test_analyze_json_has_an_empty_warnings_list():
    out = run("analyze", MODELS / "causal_unfused.py", "--seq-len", "256", "--format", "json")
    assert out.exit_code == 0 and json.loads(out.stdout)["warnings"] == []
    assert out.stderr == ""


def test_hidden_quadratic_does_not_sum_tensors_never_alive_together():
    def tensor(name, size):
        return SimpleNamespace(op=name, bytes=size, dtype="bool", shape=("N", "N"),
                               layer=f"layers.{size}")

    a = SimpleNamespace(hidden_quadratics=lambda: [tensor("mask", 16 << 20),
                                                   tensor("bias", 32 << 20)],
                        at=lambda expr: expr)
    (line,) = _hidden_quadratic_line(a)
    assert "in all" not in line and "48 MiB" not in line
    assert "2 tensor(s)" in line and "the largest is a bool bias" in line and "32 MiB" in line


def test_no_zero_percent_shares(write_config):
    pytest.importorskip("transformers")
    folder = write_config("llama", **SMALL_LLAMA)
    out = run("analyze", folder, "--seq-len", "1")
    assert out.exit_code == 0, out.output
    assert "0% of peak" not in out.stdout.replace("100% of peak", "")
    fit = run("fits", folder, "--seq-len", "1", "--memory", "1GiB")
    assert fit.exit_code == 0 and " 0% of peak" not in fit.stdout


def test_what_if_lists_only_changes_that_help(write_config):
    pytest.importorskip("transformers")
    folder = write_config("llama", **SMALL_LLAMA)
    sdpa = run("fits", folder, "--seq-len", "256k", "--memory", "256MiB")
    assert sdpa.exit_code == 1, sdpa.output
    assert "what if:" in sdpa.stdout and "logits_to_keep" in sdpa.stdout
    assert "attn_implementation=eager" not in sdpa.stdout  # eager only keeps more
    eager = run("fits", folder, "--seq-len", "256k", "--memory", "256MiB",
                "--attn-implementation", "eager", "--format", "json")
    changes = [w["change"] for w in json.loads(eager.stdout)["what_if"]]
    assert "attn_implementation=sdpa" in changes


def test_leading_term_of_a_formula_with_floor_and_mod():
    exact = (sympy.floor((N + 63) / 64) * 64 * 4096 * B * N + 3 * sympy.Mod(N, 64) * B * N
             + 5 * B * N)
    assert leading_text(exact) == "≈ 4096·B·N^2"
    assert leading_text(8192 * B * N**2 + 7 * N) == "8192·B·N^2"
    assert leading_term(exact, N).has(sympy.floor)  # the JSON keeps the exact form


def test_a_table_of_positions_sliced_to_the_length_bounds_the_range():
    # position_table.py slices 65 learned positions to N + 1: it runs for
    # N <= 64 only; a real forward past that fails, and attncost says so
    path = MODELS / "position_table.py"
    a = analyze(path, 48, device="cpu")
    assert a.n_range == (1, 64)
    mod = load_module(path)
    model = mod.build_model().eval()
    with torch.no_grad():
        model(*mod.example_inputs(64))
        with pytest.raises(RuntimeError):
            model(*mod.example_inputs(65))
    result = CliRunner().invoke(main, ["analyze", str(path), "--seq-len", "100"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


LEARNED_BIAS = '''
import torch, torch.nn as nn
class M(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(32, 96)
        self.bias = nn.Parameter(torch.zeros(2, 512, 512))
    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, 2, 16).permute(2, 0, 3, 1, 4)
        s = q @ k.transpose(-1, -2) + self.bias[:, :n, :n]
        return (s.softmax(-1) @ v).transpose(1, 2).reshape(b, n, 32)
def build_model():
    return M()
def example_inputs(n, batch=1):
    return (torch.randn(batch, n, 32),)
'''


def test_an_additive_bias_is_named_with_its_own_shape(tmp_path):
    """A learned bias, one N×N matrix a head, reads as the shape it has."""
    path = tmp_path / "bias.py"
    path.write_text(LEARNED_BIAS)
    (site,) = analyze(path, seq_len=64, device="cpu").sites
    assert "an additive bias (2×N×N) is applied to the scores" in site.notes


CALLED_TWICE = '''
import torch, torch.nn as nn, torch.nn.functional as F
class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(32, 96)
    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, 2, 16).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, 32)
class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = Attention()
    def forward(self, x):
        return self.attn(self.attn(x))
def build_model():
    return Twice()
def example_inputs(n, batch=1):
    return (torch.randn(batch, n, 32),)
'''


def test_a_module_called_twice_makes_two_sites_of_two_names(tmp_path):
    """One attention module applied twice (RegionViT's, a block loop's):
    two sites, the second named apart, both in the module's layer."""
    path = tmp_path / "twice.py"
    path.write_text(CALLED_TWICE)
    a = analyze(path, seq_len=64, device="cpu")
    assert [(s.name, s.layer) for s in a.sites] == [("attn", "attn"), ("attn#2", "attn")]
    names = [site["name"] for site in analysis_dict(a)["sites"]]
    assert len(set(names)) == 2
