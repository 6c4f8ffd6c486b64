"""The time model (questions/latency.py) against figures worked out by hand
from a calibration file written here, for models whose launched ops are
known: every expected value below is computed from the file's numbers and
the models' shapes, never by the code under test."""
import json
import math
import re

import pytest
import yaml
from click.testing import CliRunner

from attncost.analysis import analyze
from attncost.calibration import bundled_calibration, interpolate, load_calibration
from attncost.cli import main
from attncost.errors import AttncostError
from attncost.gpus import get_gpu
from attncost.questions.latency import time_model

D = 64  # model width = head dim: one head per layer

#: Two layers of q, k, v, o projections (D×D, no bias) and one SDPA call each
#: (one head of D), causal in the first: an eager run launches 4 mm and one
#: attention kernel per layer, nothing else (every reshape is a view).
TWO_LAYERS = '''
import torch
import torch.nn as nn
import torch.nn.functional as F


class Layer(nn.Module):
    def __init__(self, causal, d=64):
        super().__init__()
        self.causal = causal
        self.q, self.k, self.v, self.o = (nn.Linear(d, d, bias=False) for _ in range(4))

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = (p(x).unsqueeze(1) for p in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.o(y.view(b, n, d))


def build_model():
    return nn.Sequential(Layer(causal=True), Layer(causal=False))


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, 64),)
'''

#: Two elementwise ops on a (B, N, 64) float32 input: each reads and writes N·64·4 bytes.
ELEMENTWISE = '''
import torch
import torch.nn as nn


class Scale(nn.Module):
    def forward(self, x):
        return x * 2 + 1


def build_model():
    return Scale()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, 64),)
'''


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return {"two": _write(folder, "two_layers.py", TWO_LAYERS),
            "elementwise": _write(folder, "elementwise.py", ELEMENTWISE)}


@pytest.fixture(scope="module")
def two_layers(models):
    """At N=256, B=2 (float32: SDPA runs the memory-efficient kernel on a GPU)."""
    return analyze(models["two"], 256, batch=2)


def _calibration(tmp_path, **tables) -> str:
    data = {"gpu": "NVIDIA H100 80GB HBM3", "torch": "2.13.0", "date": "2025-01-01",
            "dtype": "float32", "launch_overhead_seconds": 1e-5,
            "bandwidth": [{"bytes": 1, "bytes_per_second": 1e21}]}
    data.update(tables)
    path = tmp_path / "calibration.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


MATMUL = [{"flops": 1e6, "flops_per_second": 1e12}, {"flops": 1e8, "flops_per_second": 1e14}]


def _log_interp(x, x0, y0, x1, y1):
    t = (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))
    return math.exp(math.log(y0) + t * (math.log(y1) - math.log(y0)))


def test_prefill_against_hand_arithmetic(two_layers, tmp_path):
    n, b = 256, 2
    path = _calibration(tmp_path, matmul=MATMUL, attention={
        "efficient_causal_d64": [{"seq_len": 128, "flops_per_second": 2e12},
                                 {"seq_len": 512, "flops_per_second": 8e12}],
        "efficient_full_d64": [{"seq_len": 256, "flops_per_second": 5e12}]})
    t = time_model(two_layers, "h100-sxm", path)
    mm_flops = 2 * b * n * D * D
    mm = mm_flops / _log_interp(mm_flops, 1e6, 1e12, 1e8, 1e14)
    causal = 4 * b * D * n * (n + 1) // 2 / 4e12  # 256 is the geometric middle of 128 and 512
    full = 4 * b * D * n * n / 5e12
    overhead = 10 * 1e-5  # 8 mm and 2 attention kernels
    assert t.calibration == "measured"
    assert t.ops == 10
    assert t.prefill_seconds == pytest.approx(8 * mm + causal + full + overhead, rel=1e-6)
    by_name = {s.name: s.seconds for s in t.sites}
    assert by_name["0"] == pytest.approx(causal + 1e-5, rel=1e-6)
    assert by_name["1"] == pytest.approx(full + 1e-5, rel=1e-6)
    layers = {x.layer: x.prefill_seconds for x in t.layers}
    assert layers["0"] == pytest.approx(4 * mm + causal + 5e-5, rel=1e-6)
    assert t.prefill_tokens_per_second == pytest.approx(b * n / t.prefill_seconds)


def test_causal_site_costs_half_the_flop_time_of_a_full_one(two_layers, tmp_path):
    """One table for both: the causal kernel skips the masked half."""
    n = 256
    path = _calibration(tmp_path, matmul=MATMUL, launch_overhead_seconds=0.0, attention={
        "efficient_full_d64": [{"seq_len": 64, "flops_per_second": 1e12},
                               {"seq_len": 4096, "flops_per_second": 9e12}]})
    sites = {s.name: s.seconds for s in time_model(two_layers, "h100-sxm", path).sites}
    assert sites["0"] / sites["1"] == pytest.approx((n + 1) / (2 * n), rel=1e-9)


def test_decode_is_bytes_over_bandwidth_plus_launches(two_layers, tmp_path):
    n, b = 256, 2
    path = _calibration(tmp_path, launch_overhead_seconds=2e-6,
                        matmul=[{"flops": 1e6, "flops_per_second": 1e15}],
                        bandwidth=[{"bytes": 1e3, "bytes_per_second": 2e12}])
    t = time_model(two_layers, "h100-sxm", path)
    weights = 2 * 4 * D * D * 4  # read once for the batch
    kv = 2 * (2 * 1 * D * n * 4) * b  # K and V of 1 head, 2 layers, per sequence
    assert t.kv_cache_bytes == kv
    assert t.decode_bytes == weights + kv
    assert t.decode_seconds_per_token == pytest.approx((weights + kv) / 2e12 + 10 * 2e-6,
                                                       rel=1e-9)
    assert t.decode_tokens_per_second == pytest.approx(b / t.decode_seconds_per_token)
    layer0 = {x.layer: x.decode_seconds for x in t.layers}["0"]
    assert layer0 == pytest.approx((weights / 2 + kv / 2) / 2e12 + 5 * 2e-6, rel=1e-9)


def test_another_length_from_the_same_trace_matches_a_trace_there(models, two_layers,
                                                                   tmp_path):
    path = _calibration(tmp_path, matmul=MATMUL, attention={
        "efficient_causal_d64": [{"seq_len": 128, "flops_per_second": 2e12},
                                 {"seq_len": 4096, "flops_per_second": 8e12}]})
    there = time_model(analyze(models["two"], 1000, batch=3), "h100-sxm", path)
    here = time_model(two_layers, "h100-sxm", path, seq_len=1000, batch=3)
    assert here.prefill_seconds == pytest.approx(there.prefill_seconds, rel=1e-12)
    assert here.decode_seconds_per_token == pytest.approx(there.decode_seconds_per_token,
                                                          rel=1e-12)


def test_memory_bound_ops_by_bytes(models, tmp_path):
    n, b = 1024, 1
    a = analyze(models["elementwise"], n, batch=b)
    path = _calibration(tmp_path, bandwidth=[{"bytes": 1e5, "bytes_per_second": 1e11},
                                             {"bytes": 1e7, "bytes_per_second": 1e12}])
    moved = 2 * (b * n * 64 * 4)  # one input, one output
    bandwidth = _log_interp(moved, 1e5, 1e11, 1e7, 1e12)
    t = time_model(a, "h100-sxm", path)
    assert t.prefill_seconds == pytest.approx(2 * (moved / bandwidth + 1e-5), rel=1e-9)


def test_datasheet_fallback_says_so(models, tmp_path, monkeypatch):
    import attncost.calibration.tables as tables

    monkeypatch.setattr(tables, "BUNDLED_DIR", tmp_path)  # no card calibrated
    n = 1024
    a = analyze(models["elementwise"], n)
    t = time_model(a, "h100-sxm")
    spec = get_gpu("h100-sxm")
    assert t.calibration == "datasheet" and t.calibration_file is None
    assert any("datasheet" in note for note in t.notes)
    moved = 2 * n * 64 * 4
    assert t.prefill_seconds == pytest.approx(2 * moved / spec.memory_bandwidth
                                              + 2 * t.launch_overhead_seconds, rel=1e-9)


def test_interpolation_in_log_space_clamped_at_the_ends():
    points = [(1e3, 1e9), (1e5, 1e11), (1e7, 4e11)]
    assert interpolate(points, 1e4) == pytest.approx(1e10)  # geometric middle
    assert interpolate(points, 1e6) == pytest.approx(2e11)
    assert interpolate(points, 1e5) == pytest.approx(1e11)
    assert interpolate(points, 1.0) == 1e9 and interpolate(points, 1e12) == 4e11


def test_skinny_products_stay_out_of_the_flop_rate_curve(tmp_path):
    """A product of one row is bound by reading its weight, not by FLOP/s."""
    flops = 2 * 256 * 256 * 256  # = 2 * 1 * 4096 * 4096
    calibration = load_calibration(_calibration(tmp_path, matmul=[
        {"m": 1, "n": 4096, "k": 4096, "flops": flops, "flops_per_second": 1e11},
        {"m": 256, "n": 256, "k": 256, "flops": flops, "flops_per_second": 1e14}]))
    assert calibration.matmul.at(flops) == 1e14 and calibration.matmul.at(1.0) == 1e14


def test_bundled_calibration_is_found_by_card_and_dtype(tmp_path):
    for dtype, rate in (("float32", 1e12), ("bfloat16", 2e12)):
        (tmp_path / f"h100_{dtype}.yaml").write_text(yaml.safe_dump({
            "gpu": "NVIDIA H100 80GB HBM3", "dtype": dtype, "launch_overhead_seconds": 4e-6,
            "matmul": [{"flops": 1e9, "flops_per_second": rate}]}))
    h100, a100 = get_gpu("h100-sxm"), get_gpu("A100")
    assert bundled_calibration(h100, "bfloat16", tmp_path).matmul.at(1e9) == 2e12
    assert bundled_calibration(h100, "float32", tmp_path).matmul.at(1e9) == 1e12
    assert bundled_calibration(a100, "bfloat16", tmp_path) is None


def test_bad_calibration_files_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    for text in ("gpu: [unclosed", "just text", "gpu: x\nlaunch_overhead_seconds: soon",
                 "gpu: x\nlaunch_overhead_seconds: 1e-6\nmatmul: [{flops: 1}]"):
        bad.write_text(text)
        with pytest.raises(AttncostError) as err:
            load_calibration(bad)
        assert "\n" not in str(err.value)


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_analyze_gpu_json_has_the_time_object(models, tmp_path):
    result = _run("analyze", models["two"], "--seq-len", "256", "--gpu", "h100-sxm",
                  "--format", "json")
    assert result.exit_code == 0, result.output
    time = json.loads(result.stdout)["time"]
    assert time["gpu"] == "H100-SXM" and time["calibration"] in ("measured", "datasheet")
    assert time["prefill_seconds"] > 0 and time["decode_seconds_per_token"] > 0
    assert [s["name"] for s in time["sites"]] == ["0", "1"]
    assert all(isinstance(s["seconds"], float) and s["seconds"] > 0 for s in time["sites"])
    path = _calibration(tmp_path, matmul=MATMUL)
    result = _run("analyze", models["two"], "--seq-len", "256", "--gpu", "h100-sxm",
                  "--calibration", path, "--format", "json")
    assert json.loads(result.stdout)["time"]["calibration"] == "measured"


def test_analyze_gpu_table_line_in_human_units(models, tmp_path, monkeypatch):
    import attncost.calibration.tables as tables

    monkeypatch.setattr(tables, "BUNDLED_DIR", tmp_path)  # no card calibrated
    result = _run("analyze", models["two"], "--seq-len", "32k", "--gpu", "h100-sxm")
    assert result.exit_code == 0, result.output
    flat = " ".join(result.stdout.split())  # the line folds at the terminal's width
    line = flat[flat.index("time on H100-SXM"):]
    assert "uncalibrated" in line
    assert re.search(r"prefill [\d.,]+ (µs|ms|s|min|h)(\s|$)", line)
    assert "tokens/s" in line and not re.search(r"\de[+-]\d", result.stdout)


def test_unknown_calibration_file_exits_2(models, tmp_path):
    result = _run("analyze", models["two"], "--seq-len", "256", "--gpu", "h100-sxm",
                  "--calibration", tmp_path / "missing.yaml")
    assert result.exit_code == 2
    assert "calibration" in result.output and "Traceback" not in result.output


def test_fits_gpu_shows_the_time(models, tmp_path, monkeypatch):
    import attncost.calibration.tables as tables

    monkeypatch.setattr(tables, "BUNDLED_DIR", tmp_path)  # no card calibrated
    result = _run("fits", models["two"], "--seq-len", "256", "--gpu", "h100-sxm",
                  "--format", "json")
    assert result.exit_code == 0, result.output
    time = json.loads(result.stdout)["time"]
    assert time["calibration"] == "datasheet" and time["gpu"] == "H100-SXM"
    table = _run("fits", models["two"], "--seq-len", "256", "--gpu", "h100-sxm").stdout
    assert "time on H100-SXM (uncalibrated" in table
