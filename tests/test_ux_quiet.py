"""Quiet internals: torch's own logging, tracebacks and object addresses never
reach the user without --debug; what the model prints never corrupts JSON."""
import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from attncost.cli import main
from attncost.render.console import clean
from conftest import MODELS

ROOT = Path(__file__).resolve().parent.parent


def attncost(*args, env=None):
    """The command in a fresh process: torch's log handlers write to the real stderr."""
    return subprocess.run([sys.executable, "-m", "attncost", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, **(env or {})))


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _model(tmp_path, body: str) -> Path:
    path = tmp_path / "m.py"
    path.write_text("import torch\n" + body)
    return path


WRONG_SHAPE = """
class M(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(16, 16)
    def forward(self, x):
        return self.proj(x)
def build_model():
    return M()
def example_inputs(n, batch=1):
    return (torch.randn(batch, n, 8),)
"""


def test_a_huge_length_prints_no_torch_logging():
    """At N=10^9 torch's fake tensors overflow a storage size and log it (E1126 ...)."""
    done = attncost("analyze", MODELS / "causal_unfused.py", "--seq-len", "1000000000",
                    "--format", "json")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert json.loads(done.stdout)["seq_len"] == 10**9


def test_inputs_of_the_wrong_shape_give_one_line_not_a_traceback(tmp_path):
    done = attncost("analyze", _model(tmp_path, WRONG_SHAPE), "--seq-len", "64")
    assert done.returncode == 2
    err = done.stderr.strip().splitlines()
    assert len(err) <= 2, err
    assert "Traceback" not in done.stderr and "fake_tensor.py" not in done.stderr
    assert "same reduction dim" in err[0]
    debug = attncost("analyze", _model(tmp_path, WRONG_SHAPE), "--seq-len", "64", "--debug")
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def test_no_object_address_in_a_message(tmp_path):
    model = _model(tmp_path, """
class Thing:
    pass
class M(torch.nn.Module):
    def forward(self, x):
        raise RuntimeError(f"cannot mix {Thing()} and {Thing()}")
def build_model():
    return M()
def example_inputs(n, batch=1):
    return (torch.randn(batch, n),)
""")
    result = run("analyze", model, "--seq-len", "64")
    assert result.exit_code == 2
    assert "0x" not in result.stderr and "object at" not in result.stderr
    assert "<Thing>" in result.stderr
    assert clean("Mixing fake modes NYI <torch._subclasses.fake_tensor.FakeTensorMode object "
                 "at 0x7f18a1b2c3d0>") == "Mixing fake modes NYI <FakeTensorMode>"


def test_what_the_model_prints_goes_to_stderr_not_into_json(tmp_path):
    model = _model(tmp_path, """
import warnings
print("building the model")
class M(torch.nn.Module):
    def forward(self, x):
        print("running forward", x.shape)
        warnings.warn("a warning from the model's own code")
        return torch.softmax(x @ x.transpose(-1, -2), -1) @ x
def build_model():
    print("in build_model")
    return M()
def example_inputs(n, batch=1):
    return (torch.randn(batch, n, 8),)
""")
    for fmt in ("json", "yaml"):
        result = run("analyze", model, "--seq-len", "64", "--format", fmt)
        assert result.exit_code == 0, result.output
        assert "running forward" not in result.stdout and "in build_model" not in result.stdout
        assert "in build_model" in result.stderr
        assert "a warning from" not in result.stderr
    data = json.loads(run("analyze", model, "--seq-len", "64", "--format", "json").stdout)
    assert data["seq_len"] == 64
