"""`attncost calibrate`: the tables built from a fake timer (the work of each
case worked out here from its shape), the file they make read back by the
loader, and the command on a machine without CUDA."""
import time

import pytest
import torch
import yaml
from click.testing import CliRunner

from attncost.calibration.measure import (LAUNCH_STREAM, Case, all_cases, build_tables,
                                          calibration_yaml)
from attncost.calibration.tables import calibration_from
from attncost.cli import main


def _nothing(case):
    return lambda: None


def _work(op) -> float:
    """FLOPs or bytes of a case, from its shape alone."""
    shape, table = op.case.shape, op.case.table
    if table == "matmul":
        return 2 * shape["m"] * shape["n"] * shape["k"]
    if table == "bandwidth":
        return 2 * shape["size"]  # read and written
    n, heads = shape["seq_len"], shape["heads"]
    head_dim = int(table.rsplit("_d", 1)[1])
    if "_full_" in table or table.startswith("math_"):  # math computes every score
        pairs = n * n
    elif "_causal_" in table:
        pairs = n * (n + 1) // 2
    else:  # a causal window of w keys
        w = shape["window"]
        pairs = sum(min(i + 1, w) for i in range(n))
    return 4 * heads * head_dim * pairs


def fake_timer(op) -> float:
    """1e12 FLOP/s, 1e11 bytes/s, 3 µs per launched op."""
    if op.case.table == "launch":
        return op.case.ops * 3e-6
    return _work(op) / (1e11 if op.case.table == "bandwidth" else 1e12)


@pytest.mark.parametrize("quick", [True, False])
def test_tables_from_a_fake_timer(quick):
    tables = build_tables(all_cases(quick), fake_timer, _nothing)
    assert tables["launch_overhead_seconds"] == pytest.approx(3e-6)
    assert len(tables["matmul"]) >= 5 and len(tables["bandwidth"]) >= 4
    assert {r["m"] for r in tables["matmul"]} >= {1, 8192}  # skinny and square
    for row in tables["matmul"]:
        assert row["flops_per_second"] == pytest.approx(1e12)
    for row in tables["bandwidth"]:
        assert row["bytes_per_second"] == pytest.approx(1e11)
    for kernel in ("flash", "efficient", "math"):
        for mask in ("causal", "full"):
            for d in (64, 128):
                rows = tables["attention"][f"{kernel}_{mask}_d{d}"]
                assert len({r["seq_len"] for r in rows}) >= 2
                assert all(r["flops_per_second"] == pytest.approx(1e12) for r in rows)
    assert {"flex_causal_d128", "flex_window_d128"} <= set(tables["attention"])
    assert tables["notes"] == []


def test_attention_rates_count_the_pairs_each_kernel_computes():
    """A timer of 1 ms per call: the rate is the FLOPs counted per case / 1 ms."""
    cases = [c for c in all_cases(quick=True) if c.table not in ("launch", "matmul", "bandwidth")]
    tables = build_tables(cases, lambda op: 1e-3, _nothing)
    for name, rows in tables["attention"].items():
        for row in rows:
            op = type("Op", (), {"case": Case(name, shape=row)})()
            assert row["flops_per_second"] == pytest.approx(_work(op) / 1e-3), name
    causal = tables["attention"]["flash_causal_d128"][0]
    full = next(r for r in tables["attention"]["flash_full_d128"]
                if r["seq_len"] == causal["seq_len"])
    n = causal["seq_len"]
    assert causal["flops_per_second"] / full["flops_per_second"] == pytest.approx((n + 1) / (2 * n))


def test_cases_torch_cannot_run_are_left_out_with_a_note():
    def prepare(case):
        if case.table.startswith("flex_"):
            raise RuntimeError("flex_attention needs triton\nmore detail")
        return lambda: None

    tables = build_tables(all_cases(quick=True), fake_timer, prepare)
    assert not any(k.startswith("flex_") for k in tables["attention"])
    assert any("flex_window_d128" in n and "needs triton" in n for n in tables["notes"])
    assert all("\n" not in n for n in tables["notes"])


def test_time_budget_stops_and_says_so():
    tables = build_tables(all_cases(quick=True), fake_timer, _nothing,
                          deadline=time.monotonic() - 1)
    assert tables["matmul"] == [] and "time budget" in tables["notes"][0]


def test_the_written_file_is_what_the_loader_reads():
    tables = build_tables(all_cases(quick=True), fake_timer, _nothing)
    data = {"gpu": "NVIDIA H100 80GB HBM3", "torch": "2.13.0", "date": "2025-01-01",
            "dtype": "bfloat16", **tables}
    calibration = calibration_from(yaml.safe_load(calibration_yaml(data)), "written")
    assert calibration.launch_overhead_seconds == pytest.approx(3e-6)
    assert calibration.matmul.at(1e10) == pytest.approx(1e12)
    assert calibration.bandwidth.at(1e8) == pytest.approx(1e11)
    assert calibration.attention_curve("flash", ("causal",), 96) is not None
    assert LAUNCH_STREAM > 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_calibrate_without_cuda_exits_2_with_one_line():
    result = CliRunner().invoke(main, ["calibrate", "--quick"])
    assert result.exit_code == 2
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert len(lines) == 1 and "CUDA" in lines[0] and "Traceback" not in result.output
