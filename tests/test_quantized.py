"""Quantized weights and KV cache, and a model quantized by its author.

Oracles: byte counts derived by hand in this file from the config's sizes
and the layouts docs/design.md states per format; packed params read from a
model quantized here with torch.ao.quantization.quantize_dynamic (real
weights); FlopCounterMode on the float model (tests/oracle.py).
"""
import json
import math
import textwrap

import pytest
import torch
from click.testing import CliRunner
from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

import attncost
from attncost.cli import main
from attncost.memory.quantized import kv_cache_bytes
from oracle import count_flops, load_module

HIDDEN, LAYERS, HEADS, KV_HEADS, INTER, VOCAB = 128, 2, 4, 2, 256, 512
HEAD_DIM = HIDDEN // HEADS
LLAMA = dict(model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=HIDDEN,
             num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
             intermediate_size=INTER, vocab_size=VOCAB, max_position_embeddings=4096,
             use_cache=True, tie_word_embeddings=False)
BF16 = 2


def linear_shapes():
    """(out, in) of every Linear in one layer: q, k, v, o, gate, up, down."""
    q, kv = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    return [(q, HIDDEN), (kv, HIDDEN), (kv, HIDDEN), (HIDDEN, q),
            (INTER, HIDDEN), (INTER, HIDDEN), (HIDDEN, INTER)]


def hand_weight_bytes(per_linear) -> int:
    """Embeddings, LM head and norms in bf16, the rotary inv_freq in fp32,
    and the layers' Linear weights as ``per_linear(out, in)`` says."""
    embeddings = 2 * VOCAB * HIDDEN * BF16                 # embed_tokens and lm_head
    norms = (2 * LAYERS + 1) * HIDDEN * BF16
    rotary = HEAD_DIM // 2 * 4
    linears = LAYERS * sum(per_linear(o, i) for o, i in linear_shapes())
    return embeddings + norms + rotary + linears


def bf16_linear(o, i):
    return o * i * BF16


def int8_linear(o, i):                       # int8 weight, fp32 scale per output row
    return o * i + 4 * o


def int4_linear(group):                      # 2 per byte, bf16 scale + bf16 zero per group
    return lambda o, i: o * i // 2 + o * math.ceil(i / group) * (2 + 2)


def nf4_linear(o, i):                        # bitsandbytes: blocks of 64, double quantized
    blocks = math.ceil(o * i / 64)
    return o * i // 2 + blocks + 4 * math.ceil(blocks / 256) + 4 + 16 * 4


def hand_kv_bytes(n, b, fp8: bool) -> int:
    """K and V of every layer: (B, kv_heads, N, d); fp8 adds a bf16 scale per (B, head, token)."""
    elements = LAYERS * 2 * b * KV_HEADS * n * HEAD_DIM
    if not fp8:
        return elements * BF16
    return elements + LAYERS * 2 * b * KV_HEADS * n * BF16


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama")
    (folder / "config.json").write_text(json.dumps(LLAMA))
    return folder


@pytest.fixture(scope="module")
def analyses(llama):
    run = lambda **kw: attncost.analyze(llama, seq_len=64, **kw)  # noqa: E731
    return {
        "bf16": run(),
        "int8": run(weight_dtype="int8"),
        "int4+fp8": run(weight_dtype="int4", group_size=32, kv_cache_dtype="fp8"),
        "fp8": run(kv_cache_dtype="fp8"),
    }


def test_weight_bytes_match_a_hand_count(analyses):
    assert analyses["bf16"].weight_bytes == hand_weight_bytes(bf16_linear)
    assert analyses["int8"].weight_bytes == hand_weight_bytes(int8_linear)
    assert analyses["int4+fp8"].weight_bytes == hand_weight_bytes(int4_linear(32))
    assert "quantization" not in analyses["bf16"].to_dict()
    note = next(n for n in analyses["int8"].notes if "counted as int8" in n)
    assert note.startswith(f"{7 * LAYERS} Linear weights") and note.endswith("lm_head")


def test_nf4_and_default_int4_group(llama, analyses):
    loaded = analyses["bf16"].loaded
    from attncost.loader import with_quantization
    from attncost.memory.quantized import quantization, weight_bytes

    nf4 = with_quantization(loaded, quantization("nf4"))
    assert weight_bytes(nf4.module, nf4.quantization) == hand_weight_bytes(nf4_linear)
    int4 = with_quantization(loaded, quantization("int4"))     # default group 128
    assert weight_bytes(int4.module, int4.quantization) == hand_weight_bytes(int4_linear(128))


@pytest.mark.parametrize("n,b", [(64, 1), (1000, 1), (300, 3)])
def test_kv_cache_bytes_match_a_hand_count(analyses, n, b):
    bf16, fp8 = analyses["bf16"], analyses["fp8"]
    assert bf16.at(kv_cache_bytes(bf16.traced), n, b) == hand_kv_bytes(n, b, fp8=False)
    assert fp8.at(kv_cache_bytes(fp8.traced, "fp8"), n, b) == hand_kv_bytes(n, b, fp8=True)


@pytest.mark.parametrize("n,b", [(64, 1), (2000, 1), (512, 2)])
def test_peak_changes_by_exactly_the_difference(analyses, n, b):
    """The peak is reached at the LM head, where every layer's cache is alive."""
    peak = {k: a.memory.at(n, b) for k, a in analyses.items()}
    kv_saved = hand_kv_bytes(n, b, fp8=False) - hand_kv_bytes(n, b, fp8=True)
    assert peak["bf16"] - peak["fp8"] == kv_saved
    assert peak["bf16"] - peak["int8"] == (hand_weight_bytes(bf16_linear)
                                           - hand_weight_bytes(int8_linear))
    assert peak["bf16"] - peak["int4+fp8"] == kv_saved + (
        hand_weight_bytes(bf16_linear) - hand_weight_bytes(int4_linear(32)))


def test_flops_do_not_change_with_weight_only_quantization(analyses):
    assert analyses["int4+fp8"].flops == analyses["bf16"].flops


DYNAMIC = textwrap.dedent('''
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    PER_CHANNEL = {per_channel}

    class Model(nn.Module):
        def __init__(self, d=64, heads=4, vocab=100):
            super().__init__()
            self.heads = heads
            self.emb = nn.Embedding(vocab, d)
            self.qkv = nn.Linear(d, 3 * d)
            self.proj = nn.Linear(d, d, bias=False)
            self.up = nn.Linear(d, 96)
            self.head = nn.Linear(96, vocab)

        def forward(self, ids):
            x = self.emb(ids)
            b, n, d = x.shape
            q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(a.transpose(1, 2).reshape(b, n, d))
            return self.head(F.relu(self.up(x)))

    def build_model():
        spec = {{nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}} if PER_CHANNEL \\
            else {{nn.Linear}}
        return torch.ao.quantization.quantize_dynamic(Model(), spec, dtype=torch.qint8)
''')


def packed_hand_count(model) -> int:
    """Float parameters, and per quantized Linear: its int8 weight, a float32
    scale and an int32 zero point per tensor or per channel, its bias."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    for module in model.modules():
        if not isinstance(module, DynamicLinear):
            continue
        weight, bias = module._packed_params._weight_bias()
        per_channel = weight.qscheme() == torch.per_channel_affine
        scales = weight.q_per_channel_scales().numel() if per_channel else 1
        total += weight.numel() * 1 + scales * (4 + 4)
        total += bias.numel() * bias.element_size() if bias is not None else 0
    return total


@pytest.mark.parametrize("per_channel", [False, True])
def test_quantize_dynamic_model(tmp_path, per_channel):
    path = tmp_path / "qmodel.py"
    path.write_text(DYNAMIC.format(per_channel=per_channel))
    module = load_module(path)
    torch.manual_seed(0)
    quantized = module.build_model()
    assert sum(isinstance(m, DynamicLinear) for m in quantized.modules()) == 4

    analysis = attncost.analyze(path, seq_len=48, batch=2)
    assert analysis.weight_bytes == packed_hand_count(quantized)
    assert any("dynamically quantized" in note for note in analysis.notes)
    assert [s.variant for s in analysis.sites] == ["dense"]
    for n, b in ((48, 2), (17, 1)):
        ids = torch.randint(0, 100, (b, n))
        assert analysis.at(analysis.flops, n, b) == count_flops(module.Model().eval(), (ids,))


def test_stand_in_computes_what_the_quantized_layer_does(tmp_path):
    from attncost.loader.quantized import swap_dynamic_linears

    path = tmp_path / "qswap.py"
    path.write_text(DYNAMIC.format(per_channel=True))
    torch.manual_seed(0)
    model = load_module(path).build_model().eval()
    ids = torch.randint(0, 100, (2, 24))
    want = model(ids)
    assert swap_dynamic_linears(model)
    assert not any(isinstance(m, DynamicLinear) for m in model.modules())
    assert torch.equal(model(ids), want)


def test_module_level_quantized_model(tmp_path):
    """A module-level ``model`` quantized at import, with real weights."""
    path = tmp_path / "qlevel.py"
    path.write_text(DYNAMIC.format(per_channel=False) + "\nmodel = build_model()\n"
                    "del build_model\n")
    module = load_module(path)
    analysis = attncost.analyze(path, seq_len=32)
    assert analysis.weight_bytes == packed_hand_count(module.model)


def test_torchao_int8_weight_only(tmp_path):
    torchao = pytest.importorskip("torchao")
    from torchao.quantization import int8_weight_only, quantize_

    path = tmp_path / "ao.py"
    path.write_text(DYNAMIC.format(per_channel=False).replace(
        "return torch.ao.quantization.quantize_dynamic(Model(), spec, dtype=torch.qint8)",
        "return Model()"))
    module = load_module(path)
    model = module.Model()
    quantize_(model, int8_weight_only())
    loaded = attncost.loader.load(path)
    loaded.module = model
    analysis = attncost.analyze(loaded, seq_len=32)
    linears = [m for m in module.Model().modules() if isinstance(m, torch.nn.Linear)]
    floats = sum(p.numel() * 4 for p in model.emb.parameters())
    biases = sum(m.bias.numel() * 4 for m in linears if m.bias is not None)
    # int8 weight, a float32 scale and an int64 zero point per row (torchao's plain layout)
    rows = sum(m.out_features * (4 + 8) + m.weight.numel() for m in linears)
    assert analysis.weight_bytes == floats + biases + rows, torchao.__version__


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize("args", [
    ("--weight-dtype", "int4", "--group-size", "0"),
    ("--weight-dtype", "int3"),
    ("--kv-cache-dtype", "fp16"),
    ("--weight-dtype", "int8", "--group-size", "64"),
])
def test_cli_bad_quantization_exits_2_with_one_line(llama, args):
    result = run("analyze", llama, "--seq-len", "64", *args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attncost: error:"), result.stderr
    assert "Traceback" not in result.output


def test_cli_json_reports_the_quantization(llama):
    result = run("analyze", llama, "--seq-len", "64", "--weight-dtype", "int4", "--group-size",
                 "32", "--kv-cache-dtype", "fp8", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["quantization"] == {"weights": "int4", "group_size": 32, "kv_cache": "fp8"}
    assert data["totals"]["weight_bytes"] == hand_weight_bytes(int4_linear(32))
