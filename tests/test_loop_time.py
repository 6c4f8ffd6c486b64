"""Time of a model that loops over the sequence (questions/loop_time.py):
its ops are fitted from traces at N=8..16, so the oracle is the time model
walking the whole graph traced at the length asked (every step recorded),
and a count of the ops the loop launches worked out by hand."""
from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

import attncost
from attncost.cli import main
from attncost.gpus import get_gpu
from attncost.loader import load
from attncost.questions.latency import op_times, time_model
from attncost.questions.loop_time import _Graph
from attncost.questions.launches import Evaluator, launches_kernel
from attncost.calibration.rates import Rates
from attncost.rules import flop_rules, node_flops
from attncost.tracing.loops import concrete_trace
from conftest import MODELS

LOOP = MODELS / "recurrent_loop.py"
GPU = "h100-sxm"


@pytest.fixture(scope="module")
def analysis():
    return attncost.analyze(LOOP, seq_len=32768)  # fitted: a loop of 32k steps is not traced


def _graph_seconds(n: int, b: int) -> tuple[float, int]:
    """The time model over the graph traced at N=n (no fit), and its launches."""
    loaded = load(LOOP)
    traced = concrete_trace(loaded, n, b)
    rules = flop_rules()
    exprs = {x.name: node_flops(traced, x, rules) for x in traced.nodes if launches_kernel(x)}
    rates = Rates(get_gpu(GPU), "float32", None)
    ops = op_times(_Graph(traced, "float32"), rates, exprs, Evaluator(traced, n, b))
    return sum(o.seconds for o in ops), len(ops)


@pytest.mark.parametrize("n, b", [(300, 2), (97, 1)])
def test_prefill_equals_the_graph_traced_at_that_length(analysis, n, b):
    estimate = time_model(analysis, GPU, seq_len=n, batch=b)
    seconds, launched = _graph_seconds(n, b)
    assert math.isclose(estimate.prefill_seconds, seconds, rel_tol=1e-9)
    # by hand: per step a matrix product, an add and a tanh; once: the
    # embedding, the zero state, the stack of the steps and the output product
    assert estimate.ops == launched == 3 * n + 4


def test_decode_is_one_tokens_forward(analysis):
    estimate = time_model(analysis, GPU, seq_len=4096, batch=2)
    seconds, launched = _graph_seconds(1, 2)
    assert math.isclose(estimate.decode_seconds_per_token, seconds, rel_tol=1e-9)
    # the recurrent site is its loop: the three ops run per token
    (site,) = estimate.sites
    assert 0 < site.seconds < estimate.prefill_seconds
    assert site.bound == "launch"


def test_cli_gives_the_time_with_where_it_was_fitted():
    result = CliRunner().invoke(main, ["analyze", str(LOOP), "--seq-len", "32k", "--gpu", GPU,
                                       "--format", "json"])
    assert result.exit_code == 0, result.output
    time = json.loads(result.stdout)["time"]
    assert time["prefill_seconds"] > 0 and time["decode_seconds_per_token"] > 0
    assert time["sites"] and time["sites"][0]["seconds"] > 0
    assert any("loops over the sequence: its launched ops are fitted" in note
               for note in time["notes"])


MAMBA = dict(model_type="mamba", architectures=["MambaForCausalLM"], num_hidden_layers=2,
             hidden_size=64, state_size=8, vocab_size=256, expand=2)


def test_mamba_prefill_equals_its_graph_at_an_untraced_length(write_config):
    pytest.importorskip("transformers")
    folder = write_config("mamba", **MAMBA)
    a = attncost.analyze(folder, seq_len=32768, attn_implementation="eager")
    assert a.traced is None  # fitted: a loop of 32k steps is never traced
    n, b = 41, 2
    estimate = time_model(a, GPU, seq_len=n, batch=b)
    loaded = load(folder, attn_implementation="eager")
    traced = concrete_trace(loaded, n, b)
    rules = flop_rules()
    exprs = {x.name: node_flops(traced, x, rules) for x in traced.nodes if launches_kernel(x)}
    rates = Rates(get_gpu(GPU), a.dtype, None)
    ops = op_times(_Graph(traced, a.dtype), rates, exprs, Evaluator(traced, n, b))
    assert estimate.ops == len(ops)
    assert math.isclose(estimate.prefill_seconds, sum(o.seconds for o in ops), rel_tol=1e-9)


def test_a_loop_over_chunks_launches_per_chunk(write_config):
    """Qwen3-Next's loop over chunks of 64: its ops, fitted in N and
    ceiling(N/64) through the lengths its costs are fitted at, are op for op
    those of a trace at a length none of them is (700: eleven chunks, the
    last part full); fitted inside one chunk, they were one chunk's."""
    pytest.importorskip("transformers")
    from collections import Counter

    from attncost.questions.loop_time import _works, loop_ops
    from attncost.tracing.fit import chunked
    from test_state_spaces import QWEN3_NEXT

    loaded = load(write_config("qwen3_next", **QWEN3_NEXT), dtype="float32",
                  attn_implementation="eager")
    rules = flop_rules()
    ops = loop_ops(loaded, 1, "float32", rules, chunked(64))
    predicted: Counter = Counter()
    for work, count in ops.at(700):
        predicted[work] += count
    assert +predicted == +Counter(_works(loaded, 700, 1, "float32", rules))
