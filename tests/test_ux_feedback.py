"""Feedback on slow work (a spinner on a TTY, nothing otherwise), a quick
start (no torch for --version and --help), and fvcore's size limit checked
before any tracing."""
import io
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from attncost.analysis import analyze
from attncost.cli import main
from attncost.questions.compare import compare_choices
from attncost.questions.fits import fits
from attncost.questions.sweep import plot_data
from attncost.render.console import working
from conftest import MODELS

ROOT = Path(__file__).resolve().parent.parent


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_nothing_extra_on_stderr_when_not_a_tty(tmp_path):
    model = MODELS / "causal_unfused.py"
    for args in (["compare", model, "--seq-len", "256"],
                 ["plot", model, "--seq-len", "256..1k", "--points", "4", "--out",
                  tmp_path / "p.png"],
                 ["fits", model, "--seq-len", "64k", "--memory", "16MiB"]):
        out = run(*args)
        assert out.exit_code in (0, 1), out.output
        assert out.stderr == "", args


def test_a_spinner_on_a_tty_that_follows_the_work(monkeypatch):
    class TTY(io.StringIO):
        def isatty(self):
            return True

    fake = TTY()
    monkeypatch.setattr(sys, "stderr", fake)
    with working() as say:
        time.sleep(0.25)
        say("tracing the model")
        time.sleep(0.25)
    assert "attncost: loading the model" in fake.getvalue()
    assert "attncost: tracing the model" in fake.getvalue()


def test_compare_plot_and_what_ifs_report_progress():
    model = str(MODELS / "causal_unfused.py")
    said: list[str] = []
    compare_choices(model, 256, dtypes=("float32", "bfloat16"), progress=said.append)
    assert any(m.startswith("float32: ") for m in said)
    assert any(m.startswith("bfloat16: ") for m in said)
    said.clear()
    plot_data(model, (256, 1024), points=4, progress=said.append)
    assert any(m.startswith("N=256: ") for m in said) and any("evaluating" in m for m in said)
    said.clear()
    answer = fits(analyze(model, 64 * 1024), memory="16MiB", progress=said.append)
    assert not answer.result.fits and answer.what_if
    assert any(m.startswith("what if dtype=bfloat16: ") for m in said)


def test_the_command_line_starts_without_torch():
    code = ("import sys, attncost.cli; "
            "print(sorted(m for m in ('torch', 'sympy', 'rich', 'transformers') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
    version = subprocess.run([sys.executable, "-m", "attncost", "--version"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and "version" in version.stdout
    assert "compare" in run("--help").stdout


def test_fvcore_refuses_a_large_model_before_tracing(write_config, monkeypatch):
    pytest.importorskip("transformers")
    import attncost.questions.compare as compare

    def no_trace(*a, **k):
        raise AssertionError("traced before the size was checked")

    monkeypatch.setattr(compare, "analyze", no_trace)
    folder = write_config("wide", model_type="llama", architectures=["LlamaForCausalLM"],
                          hidden_size=256, num_attention_heads=4, num_key_value_heads=2,
                          intermediate_size=96, num_hidden_layers=2, vocab_size=120_000,
                          max_position_embeddings=512, use_cache=False)
    out = run("compare", folder, "--seq-len", "64", "--baseline", "fvcore")
    assert out.exit_code == 2
    assert "62M parameters" in out.stderr and "--baseline flopcounter" in out.stderr
