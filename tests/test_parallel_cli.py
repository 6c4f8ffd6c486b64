"""--fsdp/--tp/--cp on the command line: a training step's memory per GPU.

The per-GPU parts are checked by hand in tests/test_parallel.py; here the
figures the CLI prints are those parts, and the formula given for the
busiest GPU equals them at lengths and batches it was not built at.
"""
import json

from click.testing import CliRunner

from attncost import analyze
from attncost.cli import main
from attncost.training.parallel import Plan, per_gpu

LLAMA = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=64,
             intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
             num_hidden_layers=2, vocab_size=320, max_position_embeddings=4096,
             torch_dtype="bfloat16")


def test_formula_per_gpu_equals_the_parts(write_config):
    folder = write_config("llama", **LLAMA)
    a = analyze(folder, 64, mode="train", fsdp=2, tp=2, cp=2)
    whole = analyze(folder, 64, mode="train")
    for n, b in ((64, 1), (97, 2), (1000, 3)):
        parts = per_gpu(whole.memory.step, Plan(2, 2, 2), n, b,
                        layers=a.memory.sharded.layers, shapes=None)
        assert a.at(a.peak_memory_bytes, n, b) == a.memory.at(n, b)
        # the activations are what per_gpu says: those of ceil(N/cp) tokens, the
        # attention and MLP blocks' divided by tp (counted by hand in test_parallel.py),
        # so no more than the step's own (equal where its peak holds nothing divided)
        own = whole.memory.step.activations(-(-n // 2), b)
        assert a.memory.per_gpu(n, b).activations == parts.activations
        assert own // 2 < parts.activations <= own
        if n == 1000:  # the end of the forward, full of the blocks' activations
            assert parts.activations < own
    assert a.at(a.peak_memory_bytes) < whole.at(whole.peak_memory_bytes)


def test_fits_json_is_per_gpu(write_config):
    folder = write_config("llama", **LLAMA)
    result = CliRunner().invoke(main, ["fits", str(folder), "--seq-len", "128", "--mode", "train",
                                       "--fsdp", "2", "--memory", "64MiB", "--device", "cpu",
                                       "--format", "json"])
    assert result.exit_code in (0, 1), result.output
    data = json.loads(result.stdout)
    assert data["parallel"]["fsdp"] == 2
    assert data["peak_memory_bytes"] == data["parallel"]["per_gpu"]["total_bytes"]
    assert data["parallel"]["comm_bytes_per_step"] > 0


def test_plans_that_do_not_apply_exit_2(write_config, tmp_path):
    folder = write_config("llama", **LLAMA)
    runner = CliRunner()
    infer = runner.invoke(main, ["analyze", str(folder), "--seq-len", "64", "--fsdp", "2"])
    assert infer.exit_code == 2 and "--mode train" in infer.stderr
    model = tmp_path / "m.py"
    model.write_text("import torch\n\ndef build_model():\n    return torch.nn.Linear(8, 8)\n\n"
                     "def example_inputs(n, batch=1):\n    return (torch.randn(batch, n, 8),)\n")
    tp = runner.invoke(main, ["analyze", str(model), "--seq-len", "64", "--mode", "train",
                              "--tp", "2"])
    assert tp.exit_code == 2 and "config" in tp.stderr
    heads = runner.invoke(main, ["analyze", str(folder), "--seq-len", "64", "--mode", "train",
                                 "--tp", "3"])
    assert heads.exit_code == 2 and "Traceback" not in heads.output
