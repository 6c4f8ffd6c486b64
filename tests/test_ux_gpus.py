"""GPU names as people write them (nvidia-smi's, short forms), "did you mean",
the newer GPUs, and fits checking the name before the long trace."""
import json

import pytest
from click.testing import CliRunner

from attncost.cli import main
from attncost.errors import SpecError
from attncost.gpus import get_gpu, load_gpus
from conftest import MODELS


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize("name, gpu", [
    ("NVIDIA H100 80GB HBM3", "H100-SXM"), ("H100-80G", "H100-SXM"), ("h100 sxm", "H100-SXM"),
    ("NVIDIA A100-SXM4-40GB", "A100-40GB"), ("NVIDIA GeForce RTX 4090", "RTX-4090"),
    ("NVIDIA H100 PCIe", "H100-PCIe"), ("NVIDIA L40", "L40"), ("NVIDIA L40S", "L40S"),
    ("NVIDIA L4", "L4"), ("NVIDIA B200", "B200"), ("NVIDIA GH200 480GB", "GH200"),
    ("AMD Instinct MI325X", "MI325X"), ("NVIDIA GeForce RTX 5090", "RTX-5090"),
])
def test_names_as_nvidia_smi_and_people_write_them(name, gpu):
    assert get_gpu(name).name == gpu


def test_did_you_mean():
    with pytest.raises(SpecError, match=r"did you mean H100-SXM\b") as info:
        get_gpu("H100-SMX")
    assert "\n" not in str(info.value)
    with pytest.raises(SpecError, match="did you mean MI300X"):
        get_gpu("MI300")


def test_the_newer_gpus_from_their_datasheets():
    gpus = load_gpus()
    expected = {  # GPU: (memory GiB, bandwidth B/s, dense bf16 FLOP/s)
        "B200": (180, 7.7e12, 2250e12), "GH200": (96, 4e12, 989.5e12),
        "MI325X": (256, 6e12, 1307.4e12), "RTX-5090": (32, 1792e9, 209.5e12),
        "L40": (48, 864e9, 181.05e12),
    }
    for name, (memory, bandwidth, bf16) in expected.items():
        gpu = gpus[name]
        assert gpu.memory_bytes == memory << 30 and gpu.memory_bandwidth == bandwidth
        assert gpu.peak_flops["bfloat16"] == pytest.approx(bf16)
        assert gpu.datasheet and {"float32", "tf32", "float16"} <= set(gpu.peak_flops)


def test_fits_checks_the_gpu_before_tracing(monkeypatch):
    import attncost.analysis

    def no_trace(*a, **k):
        raise AssertionError("traced before the GPU name was checked")

    monkeypatch.setattr(attncost.analysis, "analyze", no_trace)
    out = run("fits", MODELS / "causal_unfused.py", "--seq-len", "1k", "--gpu", "H100-SMX")
    assert out.exit_code == 2
    (line,) = out.stderr.strip().splitlines()
    assert "unknown GPU 'H100-SMX': did you mean H100-SXM" in line


def test_fits_takes_an_nvidia_smi_name():
    out = run("fits", MODELS / "causal_unfused.py", "--seq-len", "1k",
              "--gpu", "NVIDIA H100 80GB HBM3", "--format", "json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["gpu"] == "H100-SXM"


def test_specs_in_every_format():
    for fmt in ("table", "json", "yaml", "markdown"):
        out = run("specs", "--format", fmt)
        assert out.exit_code == 0, out.output
        assert "RTX-5090" in out.stdout
    markdown = run("specs", "--format", "markdown").stdout
    assert markdown.startswith("| GPU | memory (GiB) |")
