"""`fits` beyond one trace: the largest N searched across traces, the largest
batch, logits for the last position, the position limit.

Oracles: brute force over integers, and analyses traced at the very length
they are asked about (whose value at their own N is what the model does).
"""
import json
import random

import pytest
from click.testing import CliRunner

from attncost import analyze
from attncost.cli import main
from attncost.questions.fits import fits
from attncost.questions.search import SCAN_STEPS, first_failure, largest_under

from conftest import MODELS

LLAMA = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=64,
             intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
             num_hidden_layers=2, vocab_size=4096, max_position_embeddings=128,
             torch_dtype="bfloat16")


def test_largest_under_matches_brute_force():
    rng = random.Random(7)
    for _ in range(200):
        steps = sorted(rng.randrange(0, 50) for _ in range(300))
        budget, start = rng.randrange(0, 60), rng.randrange(1, 300)
        ok = lambda x, s=steps, b=budget: s[min(x, 299)] <= b  # noqa: E731 - monotone
        fitting = [x for x in range(1, 300) if ok(x)]
        assert largest_under(ok, start, cap=299) == (max(fitting) if fitting else None)


def test_first_failure_finds_a_hole_below_the_answer():
    """Reserved memory is not monotone in N: a length can fail below one that runs."""
    rng = random.Random(3)
    for _ in range(100):
        top = rng.randrange(2000, 5000)
        hole = rng.randrange(1100, top - 50)
        width = rng.randrange(SCAN_STEPS and (top - 1000) // SCAN_STEPS + 1, 60)
        ok = lambda x, h=hole, w=width, t=top: x <= t and not h <= x < h + w  # noqa: E731
        assert first_failure(ok, top, 1000) == hole - 1  # brute force: the first x that fails
        assert first_failure(lambda x, t=top: x <= t, top, 1000) == top  # no hole


def _own_peak(path, n):
    """The peak at N=n from a trace made at n (what the model does at n).
    On a CPU, where no caching allocator stands between the peak and the budget."""
    a = analyze(path, n, device="cpu")
    return a.at(a.peak_memory_bytes)


def test_max_seq_len_crosses_a_branch_on_the_length():
    path = MODELS / "branch_on_length.py"
    first = analyze(path, 1024, device="cpu")
    assert first.n_range[1] == 2048  # the trace holds below the branch only
    budget = 200 * 2**20
    answer = fits(first, memory=str(budget))
    found = answer.result.max_seq_len
    assert found > 2048
    assert _own_peak(path, found) <= budget < _own_peak(path, found + 1)
    assert not answer.result.max_seq_len_lower_bound


def test_max_seq_len_below_the_range_when_the_length_does_not_fit():
    path = MODELS / "branch_on_length.py"
    first = analyze(path, 4096, device="cpu")  # holds for N > 2048 only
    assert first.n_range[0] == 2049
    budget = 24 * 2**20  # two N/2 × N/2 fp32 score matrices
    answer = fits(first, memory=str(budget))
    found = answer.result.max_seq_len
    assert not answer.result.fits and found < 4096
    assert _own_peak(path, found) <= budget < _own_peak(path, found + 1)


def test_a_length_that_cannot_be_traced_makes_a_lower_bound(tmp_path, monkeypatch):
    # a loop over the sequence whose cost steps where no fit from short traces
    # sees it: each length traced as it is, within a budget of torch calls
    # (made small here) past which the search cannot go: its answer is the
    # longest length traced that fits, said to be a lower bound
    import attncost.analysis

    monkeypatch.setattr(attncost.analysis, "FIXED_LENGTH_CALLS", 1000)
    path = tmp_path / "stepped_loop.py"
    path.write_text((MODELS / "recurrent_loop.py").read_text().replace(
        "        return self.out(torch.stack(steps, dim=1))",
        "        y = torch.stack(steps, dim=1)\n"
        "        if x.shape[1] > 18:\n"
        "            y = y + self.state(y)\n"
        "        return self.out(y)"))
    a = analyze(path, 32, device="cpu")
    budget = 2**20
    answer = fits(a, memory="1MiB")
    found = answer.result.max_seq_len
    assert answer.result.max_seq_len_lower_bound and found > 64
    assert _own_peak(path, found) <= budget
    assert any(f"at least {found:,}" in w and f"N={found + 1:,}" in w for w in answer.warnings)


def test_max_batch_is_the_last_batch_that_fits(write_config):
    folder = write_config("llama", **LLAMA)
    a = analyze(folder, 96, device="cpu")
    budget = 8 * 2**20
    answer = fits(a, memory=str(budget), want_max_batch=True)
    b = answer.result.max_batch
    assert b and b > 1
    assert a.memory.at(96, b) <= budget < a.memory.at(96, b + 1)
    # the same from a trace at that batch, which is what runs
    at_b = analyze(folder, 96, batch=b, device="cpu")
    assert at_b.at(at_b.peak_memory_bytes) == a.memory.at(96, b)


def test_cli_logits_last_and_max_batch_json(write_config):
    folder = write_config("llama", **LLAMA)
    runner = CliRunner()

    def run(*extra):
        result = runner.invoke(main, ["fits", str(folder), "--seq-len", "96", "--memory",
                                      "64MiB", "--format", "json", *extra])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    every, last = run(), run("--logits", "last", "--max-batch")
    # logits of 96 positions × a 4096 vocabulary are the largest tensor: one row is left
    assert last["peak_memory_bytes"] < every["peak_memory_bytes"]
    assert "max_batch" not in every and last["max_batch"] >= 1


def test_position_limit_warns_in_json(write_config):
    folder = write_config("llama", **LLAMA)
    result = CliRunner().invoke(main, ["analyze", str(folder), "--seq-len", "256",
                                       "--format", "json"])
    assert result.exit_code == 0
    warnings = json.loads(result.stdout)["warnings"]
    assert any("256" in w and "128" in w and "max_position_embeddings" in w for w in warnings)
    within = CliRunner().invoke(main, ["analyze", str(folder), "--seq-len", "128",
                                       "--format", "json"])
    assert json.loads(within.stdout)["warnings"] == []


@pytest.mark.parametrize("rope, limit", [
    ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128}, 512),
    ({"rope_type": "linear", "factor": 2.0}, 128),  # no stated original length: the attribute
])
def test_rope_scaling_states_the_limit(write_config, rope, limit):
    from attncost.loader.positions import position_limit

    a = analyze(write_config("llama", **dict(LLAMA, rope_scaling=rope)), 64)
    assert position_limit(a.loaded.config)[0] == limit


def _spec(tmp_path, **extra):
    lines = ["gpus:", "  Card-X:", "    memory: 16GiB", "    memory_bandwidth: 1 TB/s",
             "    peak_flops: {bfloat16: 100 TFLOPS}"]
    lines += [f"    {k}: {v}" for k, v in extra.items()]
    path = tmp_path / "card.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_gpu_budget_holds_back_the_measured_cuda_context(tmp_path):
    from attncost.questions.fits import budget_for

    measured = _spec(tmp_path, cuda_context="600MiB",
                     cuda_context_source="'measured on Card-X, CUDA 12.8, torch 2.11'")
    assert budget_for(gpu="Card-X", gpu_specs=[measured])[0] == 16 * 2**30 - 600 * 2**20
    unmeasured = _spec(tmp_path)
    assert budget_for(gpu="Card-X", gpu_specs=[unmeasured])[0] == 15 * 2**30  # 1 GiB held back
    assert budget_for(gpu="Card-X", gpu_specs=[measured], reserve="0")[0] == 16 * 2**30


def test_a_cuda_context_without_its_source_is_refused(tmp_path):
    result = CliRunner().invoke(main, ["specs", "--gpu-spec",
                                       _spec(tmp_path, cuda_context="600MiB")])
    assert result.exit_code == 2
    assert "cuda_context_source" in result.stderr


def test_max_batch_of_a_model_without_a_batch_dim_is_not_made_up(tmp_path):
    path = tmp_path / "no_batch.py"
    path.write_text("import torch\n\ndef build_model():\n"
                    "    return torch.nn.MultiheadAttention(32, 4, batch_first=True)\n\n"
                    "def example_inputs(n, batch=1):\n    x = torch.randn(1, n, 32)\n"
                    "    return (x, x, x)\n")
    answer = fits(analyze(path, 256, device="cpu"), memory="64MiB", want_max_batch=True)
    assert answer.result.max_batch is None
    assert any(w.startswith("--max-batch:") for w in answer.warnings)
