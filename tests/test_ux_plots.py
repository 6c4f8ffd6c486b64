"""Plots a person can read: FLOPs and memory lines told apart in the legend,
GPUs with the same memory on one line, a steep curve clipped rather than
flattening the rest, both ends of the range labelled, and a CPU validation
plot that says it has no measured points."""
from pathlib import Path

import matplotlib
import pytest
from matplotlib.figure import Figure

from attncost.questions.sweep import Curve, GpuLimit, PlotData, log_spaced_lengths
from attncost.render.figures import _draw_curves, _gpu_groups, _gpu_label, _length_ticks, draw, \
    memory_axis_top

GiB = 1 << 30


def _data() -> PlotData:
    ns = log_spaced_lengths(1024, 10 * 2**20, 12)

    def curve(label, peak):
        return Curve(label=label, seq_lens=ns, flops=[4096 * n * n for n in ns],
                     attention_flops=[2048 * n * n for n in ns],
                     useful_attention_flops=[1024 * n * n for n in ns],
                     peak_bytes=[peak(n) for n in ns], piece_index=[0] * len(ns))

    curves = [curve("sdpa", lambda n: 2 * GiB + 4096 * n), curve("eager", lambda n: 64 * n * n)]
    # outside the plotted range: no markers to place (they need traced pieces)
    limits = {"sdpa": 10**8, "eager": 512}
    gpus = [GpuLimit("H100-SXM", 80 * GiB, 79 * GiB, limits),
            GpuLimit("H100-PCIe", 80 * GiB, 79 * GiB, limits),
            GpuLimit("L4", 24 * GiB, 23 * GiB, {"sdpa": 10**8, "eager": 256})]
    return PlotData(model="m", batch=1, dtype="bfloat16", device="cuda",
                    seq_range=(1024, 10 * 2**20), curves=curves, gpus=gpus)


def test_flops_and_memory_legend_entries_differ():
    fig = Figure()
    ax_flops, ax_mem = fig.subplots(1, 2)
    legend: list = []
    _draw_curves(_data(), ax_flops, ax_mem, legend)
    by_label = {label: line for line, label in legend}
    flops, memory = by_label["sdpa: all FLOPs (left)"], by_label["sdpa: peak memory (right)"]
    assert (flops.get_marker(), flops.get_linestyle()) != (memory.get_marker(),
                                                           memory.get_linestyle())


def test_gpus_with_the_same_memory_share_a_line():
    data = _data()
    groups = _gpu_groups(data)
    assert [[g.name for g in group] for group in groups] == [["H100-SXM", "H100-PCIe"], ["L4"]]
    assert _gpu_label(data, groups[0]).startswith("H100-SXM, H100-PCIe (79 GiB of 80 GiB)")


def test_a_steep_curve_is_clipped_and_said_so():
    top, note = memory_axis_top(_data())
    assert top == 79 * GiB * 64
    assert note.startswith("memory axis clipped at") and "eager reaches" in note
    tame = _data()
    tame.curves = tame.curves[:1]
    assert memory_axis_top(tame) == (None, None)


def test_both_ends_of_the_range_are_labelled():
    ticks = _length_ticks(1024, 10 * 2**20)
    assert ticks[0] == 1024 and ticks[-1] == 10 * 2**20
    assert all(t / 1024 >= 1.5 and 10 * 2**20 / t >= 1.5 for t in ticks[1:-1])


def test_the_figure_says_what_it_clipped(tmp_path):
    out = tmp_path / "plot.svg"
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        draw(_data(), out)
    svg = out.read_text()
    for text in ("10M", "memory axis clipped", "H100-SXM, H100-PCIe", "peak memory (right)",
                 "all FLOPs (left)"):
        assert text in svg, text


def test_a_cpu_validation_plot_says_it_has_no_measured_points(tmp_path):
    pytest.importorskip("triton")
    from attncost.render.validation import plot_validation

    report = {"device": "cpu", "dtype": "float32", "results": [
        {"variant": "dense", "correct": True, "ok": True, "max_abs_error": 1e-6,
         "formula_exponent": 2, "points": [], "settings": {}}]}
    out = Path(tmp_path / "validate.svg")
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        plot_validation(report, out)
    svg = out.read_text()
    assert "no measured points" in svg
