"""Units as people write them: lengths with a suffix and a fraction, budgets
with a unit (a bare number under 1 MiB is a slip), help that says GiB vs GB,
and an option that does not apply said so rather than ignored silently."""
import pytest
from click.testing import CliRunner

from attncost.cli import main
from attncost.errors import AttncostError
from attncost.units import human_tokens, parse_budget, parse_length
from conftest import MODELS


def run(*args, **kw):
    return CliRunner().invoke(main, [str(a) for a in args], **kw)


def test_lengths_with_fractions_and_g():
    assert parse_length("1.5k") == 1536
    assert parse_length("1G") == 1 << 30
    assert parse_length("0.5M") == 1 << 19
    assert parse_length(" 4k ") == 4096
    with pytest.raises(AttncostError, match=r"1\.3k is 1331\.2 tokens, not a whole number: "
                                            r"write 1331 or 1332"):
        parse_length("1.3k")
    assert human_tokens(1 << 30) == "1G"


def test_the_cli_takes_1_5k_and_refuses_1_3k():
    out = run("analyze", MODELS / "causal_unfused.py", "--seq-len", "1.5k", "--format", "json")
    assert out.exit_code == 0, out.output
    assert '"seq_len": 1536' in out.stdout
    bad = run("analyze", MODELS / "causal_unfused.py", "--seq-len", "1.3k")
    assert bad.exit_code == 2 and "not a whole number" in bad.stderr


def test_a_bare_number_under_a_mib_is_refused_with_a_hint(monkeypatch):
    with pytest.raises(AttncostError, match="80GiB .* 80GB"):
        parse_budget("80")
    assert parse_budget("80GiB") == 80 << 30 and parse_budget(str(1 << 20)) == 1 << 20

    import attncost.analysis

    def no_trace(*a, **k):  # the budget is checked before the long work
        raise AssertionError("traced before the budget was checked")

    monkeypatch.setattr(attncost.analysis, "analyze", no_trace)
    out = run("fits", MODELS / "causal_unfused.py", "--seq-len", "1k", "--memory", "80")
    assert out.exit_code == 2
    assert "80 bytes" in out.stderr and "80GiB" in out.stderr and "80GB" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_help_says_gib_or_gb():
    text = " ".join(run("fits", "--help").stdout.split())
    assert "GiB or G are 2^30 bytes, GB is 10^9" in text
    assert "1.5k" in text


def test_seq_lens_on_a_cpu_is_said_to_be_ignored(monkeypatch):
    import attncost.kernels.harness as harness

    seen = {}

    def fake_validation(**kwargs):
        seen.update(kwargs)
        return {"device": "cpu", "results": [{"variant": "dense", "correct": True, "ok": True,
                                              "max_abs_error": 0.0, "points": []}]}

    monkeypatch.setattr(harness, "run_validation", fake_validation)
    out = run("validate", "--device", "cpu", "--seq-lens", "1k,4k", "--format", "json")
    assert out.exit_code == 0, out.output
    (line,) = out.stderr.strip().splitlines()
    assert "--seq-lens is ignored on a CPU" in line
    quiet = run("validate", "--device", "cpu", "--format", "json")
    assert quiet.stderr == ""
