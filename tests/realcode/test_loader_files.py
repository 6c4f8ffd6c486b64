"""What the loader makes of real project layouts and configs.

Oracles: hand counts from the shapes each file declares, FlopCounterMode
over the real forward, and what the files say about themselves.
"""
import textwrap
import time

import pytest
import torch

import attncost
from attncost.errors import ModelError
from attncost.loader import load
from conftest import MODELS
from oracle import count_flops, load_module

MODEL = """
import torch.nn as nn
from helper import WIDTH

def build_model():
    return nn.Sequential(nn.Embedding(10, WIDTH), nn.Linear(WIDTH, WIDTH, bias=False))
"""


def _write(folder, files):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text))
    return folder


def test_two_model_files_each_get_their_own_sibling_helper(tmp_path):
    """a/model.py then b/model.py, both `from helper import WIDTH`: each
    analysis counts its own width (2·B·N·W² for the one product)."""
    import importlib
    import sys

    for name, width in (("a", 32), ("b", 48)):
        _write(tmp_path / name, {"helper.py": f"WIDTH = {width}\n", "model.py": MODEL})
    # the caller's own `helper`, imported before: hidden meanwhile, then back
    _write(tmp_path / "caller", {"helper.py": "WIDTH = 7\n"})
    sys.path.insert(0, str(tmp_path / "caller"))
    try:
        callers = importlib.import_module("helper")
    finally:
        sys.path.remove(str(tmp_path / "caller"))
    try:
        for name, width in (("a", 32), ("b", 48), ("a", 32)):
            a = attncost.analyze(tmp_path / name / "model.py", seq_len=16, device="cpu")
            assert a.at(a.flops, 100, 3) == 2 * 3 * 100 * width * width, name
            assert sys.modules["helper"] is callers
    finally:
        sys.modules.pop("helper", None)


def test_a_model_file_inside_a_package_with_relative_imports(tmp_path):
    pkg = _write(tmp_path / "mypkg", {
        "__init__.py": "",
        "layers.py": "import torch.nn as nn\nWIDTH = 24\n",
        "model.py": "import torch.nn as nn\nfrom .layers import WIDTH\n\n"
                    "def build_model():\n"
                    "    return nn.Sequential(nn.Embedding(10, WIDTH), nn.Linear(WIDTH, 8))\n",
    })
    a = attncost.analyze(pkg / "model.py", seq_len=16, device="cpu")
    assert a.at(a.flops, 50, 1) == 2 * 50 * 24 * 8
    deep = _write(tmp_path / "top" / "inner", {
        "__init__.py": "",
        "model.py": "from ..missing import WIDTH\n",
    })
    with pytest.raises(ModelError) as err:
        load(deep / "model.py")
    message = str(err.value)
    assert "relative imports" in message and "from inner.model import build_model" in message
    assert "\n" not in message


def test_a_config_without_sizes_is_analysed_with_a_note(write_config):
    bare = load(write_config("bare", model_type="llama"))
    (note,) = bare.notes
    assert "transformers' defaults for llama" in note and "hidden_size=4096" in note
    sized = load(write_config("sized", model_type="llama", hidden_size=64, num_hidden_layers=2,
                              num_attention_heads=4, intermediate_size=96, vocab_size=128))
    assert sized.notes == []


def test_an_unknown_model_type_is_one_line_with_close_matches(write_config):
    with pytest.raises(ModelError) as err:
        load(write_config("typo", model_type="lama"))
    message = str(err.value)
    assert "\n" not in message and len(message) < 250
    assert "'lama'" in message and "did you mean llama" in message


def test_a_batch_the_inputs_do_not_follow_is_an_error(tmp_path):
    path = tmp_path / "nobatch.py"
    path.write_text("import torch\nimport torch.nn as nn\n\n"
                    "def build_model():\n    return nn.Linear(8, 4)\n\n"
                    "def example_inputs(seq_len):\n    return (torch.randn(1, seq_len, 8),)\n")
    with pytest.raises(ModelError, match="--batch 4"):
        attncost.analyze(path, seq_len=16, batch=4, device="cpu")
    a = attncost.analyze(path, seq_len=16, device="cpu")
    assert a.at(a.flops, 10, 1) == 2 * 10 * 8 * 4
    assert any("takes no batch" in note for note in a.loaded.notes)


def test_a_batch_taken_as_a_second_positional_argument_is_used(tmp_path):
    path = tmp_path / "positional.py"
    path.write_text("import torch\nimport torch.nn as nn\n\n"
                    "def build_model():\n    return nn.Linear(8, 4)\n\n"
                    "def example_inputs(n, b):\n    return (torch.randn(b, n, 8),)\n")
    a = attncost.analyze(path, seq_len=16, batch=3, device="cpu")
    assert a.at(a.flops, 10, 3) == 2 * 3 * 10 * 8 * 4


def test_a_loop_over_the_sequence_is_fitted_above_the_unroll_limit():
    """Above the unroll limit: formulas fitted from short traces (never the
    loop unrolled at N), said in the notes, within seconds, exact at a length
    never traced; at a small length, where the loop is unrolled, the same
    fit is preferred to formulas that hold at that length only: exact there
    and elsewhere."""
    path = MODELS / "recurrent_loop.py"
    model = load_module(path).build_model().eval()
    start = time.monotonic()
    fitted = attncost.analyze(path, seq_len=1000, device="cpu")
    assert time.monotonic() - start < 60
    assert any("loops over the sequence" in note for note in fitted.notes)
    assert fitted.at(fitted.flops, 1000, 2) == count_flops(
        model, (torch.zeros(2, 1000, dtype=torch.long),))
    a = attncost.analyze(path, seq_len=16, device="cpu")
    assert a.n_range == (1, None)
    assert any("loops over the sequence" in note for note in a.notes)
    for n, b in ((16, 2), (40, 2), (7, 1)):
        assert a.at(a.flops, n, b) == count_flops(model, (torch.zeros(b, n, dtype=torch.long),))
