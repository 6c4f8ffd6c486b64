"""`--mode train`: forward + backward FLOPs from one joint trace against
FlopCounterMode over a real forward and ``loss.backward()``, and a training
step's peak memory against live storages of a real step (tests/memtrack_train.py).

Every model is traced once at N=64 and checked at lengths never traced.
The loss, here as in attncost, is the first floating output summed in fp32.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

import attncost
from attncost.errors import AttncostError

sys.path.insert(0, str(Path(__file__).parent))
from memtrack_train import measure_step  # noqa: E402
from oracle import load_module  # noqa: E402

MODELS = Path(__file__).parent / "models"
TRACE_N = 64
TOLERANCE = 0.02
aten = torch.ops.aten

LLAMA = dict(model_type="llama", architectures=["LlamaForCausalLM"], num_hidden_layers=2,
             hidden_size=64, num_attention_heads=4, num_key_value_heads=2, vocab_size=128,
             intermediate_size=128, max_position_embeddings=256, use_cache=False)
GPT2 = dict(model_type="gpt2", architectures=["GPT2LMHeadModel"], n_embd=64, n_head=4, n_layer=2,
            vocab_size=128, n_positions=256, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
            use_cache=False)


class CpuFusedAttention(TorchDispatchMode):
    """What FlopCounterMode counts 0 on a CPU: the fused CPU attention kernel
    and its backward, counted from the real shapes as flop_counter counts the
    GPU kernels: forward Q·Kᵀ and P·V; backward the scores again, dP = dO·Vᵀ,
    dV = Pᵀ·dO, dQ = dS·K, dK = dSᵀ·Q."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is aten._scaled_dot_product_flash_attention_for_cpu.default:
            q, k, v = args[:3]
            b, h, n_q, d_qk = q.shape
            n_k, d_v = k.shape[2], v.shape[3]
            self.flops += 2 * b * h * n_q * n_k * d_qk + 2 * b * h * n_q * n_k * d_v
        elif func is aten._scaled_dot_product_flash_attention_for_cpu_backward.default:
            _, q, k, v = args[:4]
            b, h, n_q, d_qk = q.shape
            n_k, d_v = k.shape[2], v.shape[3]
            recompute = 2 * b * h * n_q * n_k * d_qk
            d_p = d_v_grad = 2 * b * h * n_q * n_k * d_v
            d_q = d_k = 2 * b * h * n_q * n_k * d_qk
            self.flops += recompute + d_p + d_v_grad + d_q + d_k
        return func(*args, **(kwargs or {}))


def _loss(out):
    out = out.logits if hasattr(out, "logits") else out
    return out.float().sum()


def real_step_flops(model, inputs) -> tuple[int, int]:
    """(forward, backward) FLOPs of a real step on the CPU."""
    model.train()
    counted = []
    for phase in ("forward", "backward"):
        extra = CpuFusedAttention()
        with FlopCounterMode(display=False) as fc, extra:
            if phase == "forward":
                loss = _loss(model(**inputs) if isinstance(inputs, dict) else model(*inputs))
            else:
                loss.backward()
        counted.append(fc.get_total_flops() + extra.flops)
    return counted[0], counted[1]


def _hf_model(raw: dict, impl: str, dtype=torch.float32):
    import transformers

    config = transformers.AutoConfig.for_model(**raw)
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config, attn_implementation=impl,
                                                         dtype=dtype)


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    out = {}
    for name, raw in (("llama", LLAMA), ("gpt2", GPT2)):
        folder = tmp_path_factory.mktemp(name)
        (folder / "config.json").write_text(json.dumps(raw))
        out[name] = (folder, raw)
    return out


_CACHE: dict = {}


def analysed(path, **kwargs):
    key = (str(path), tuple(sorted(kwargs.items())))
    if key not in _CACHE:
        _CACHE[key] = attncost.analyze(path, TRACE_N, **kwargs)
    return _CACHE[key]


# ------------------------------------------------------------------ FLOPs


@pytest.mark.parametrize("name,impl", [("llama", "sdpa"), ("llama", "eager"), ("gpt2", "sdpa")])
def test_transformers_step_flops_match_flopcounter(configs, name, impl):
    folder, raw = configs[name]
    a = analysed(folder, attn_implementation=impl, dtype="float32", device="cpu", mode="train")
    infer = analysed(folder, attn_implementation=impl, dtype="float32", device="cpu")
    assert a.mode == "train"
    model = _hf_model(raw, impl)
    for n, b in ((48, 1), (96, 2)):
        forward, backward = real_step_flops(model, {"input_ids": torch.zeros(b, n, dtype=torch.long)})
        assert a.at(a.forward_flops, n, b) == forward == infer.at(infer.flops, n, b), (n, b)
        assert a.at(a.backward_flops, n, b) == backward, (n, b)
        assert a.at(a.flops, n, b) == forward + backward


@pytest.mark.parametrize("name", ["causal_unfused", "mla_sdpa"])
def test_python_step_flops_match_flopcounter(name):
    path = MODELS / f"{name}.py"
    a = analysed(path, device="cpu", mode="train")
    infer = analysed(path, device="cpu")
    module = load_module(path)
    torch.manual_seed(0)
    model = module.build_model()
    for n, b in ((48, 1), (96, 2)):
        inputs = module.example_inputs(n, batch=b) if hasattr(module, "example_inputs") else (
            torch.zeros(b, n, dtype=torch.long),)
        forward, backward = real_step_flops(model, inputs)
        assert a.at(a.forward_flops, n, b) == forward == infer.at(infer.flops, n, b), (name, n, b)
        assert a.at(a.backward_flops, n, b) == backward, (name, n, b)


def test_fused_attention_backward_is_two_and_a_half_forwards(configs):
    """The fused SDPA backward of flop_counter, by hand: 2·B·H·N²·(3·d_qk + 2·d_v)
    per layer, 10·B·H·N²·d here; on a CUDA target as on a CPU."""
    folder, raw = configs["llama"]
    sdpa = analysed(folder, attn_implementation="sdpa", dtype="float32", device="cuda",
                    mode="train")
    eager = analysed(folder, attn_implementation="eager", dtype="float32", device="cuda",
                     mode="train")
    layers, heads, d = 2, 4, 16
    for n in (48, 1000):
        by_hand = layers * 2 * heads * n * n * (3 * d + 2 * d)
        assert by_hand == 10 * layers * heads * n * n * d
        # eager backward: dS·K, dSᵀ·Q, dP = dO·Vᵀ, dV = Pᵀ·dO (no recompute)
        eager_attention = layers * 4 * (2 * heads * n * n * d)
        assert sdpa.at(sdpa.backward_flops, n) - eager.at(eager.backward_flops, n) == \
            by_hand - eager_attention


# ------------------------------------------------------------------ memory


def _measure(model, n, b, params=None, autocast_dtype=None):
    opt = torch.optim.AdamW(params if params is not None else model.parameters())
    return measure_step(model, {"input_ids": torch.zeros(b, n, dtype=torch.long),
                                "use_cache": False}, opt, autocast_dtype=autocast_dtype)


def _close(a, real, n, b):
    pred = a.memory.at(n, b)
    assert abs(pred - real.peak_bytes) / real.peak_bytes <= TOLERANCE, (n, b, pred, real.peak_bytes)


def test_llama_step_memory_matches_the_oracle(configs):
    folder, raw = configs["llama"]
    a = analysed(folder, attn_implementation="sdpa", dtype="float32", device="cpu", mode="train")
    model = _hf_model(raw, "sdpa")
    for n, b in ((48, 1), (200, 2), (512, 1)):
        real = _measure(model, n, b)
        _close(a, real, n, b)
    step = a.memory.step
    params = sum(p.numel() * 4 for p in model.parameters())
    assert step.gradient_bytes == params
    # exp_avg + exp_avg_sq in fp32, and a 4-byte step per parameter tensor
    assert step.optimizer_bytes == real.optimizer_state_bytes == \
        2 * params + 4 * len(list(model.parameters()))
    assert step.at(512, 1) == a.memory.at(512, 1)


def test_python_model_step_memory_matches_the_oracle():
    path = MODELS / "causal_unfused.py"
    a = analysed(path, device="cpu", mode="train")
    module = load_module(path)
    torch.manual_seed(0)
    model = module.build_model()
    for n, b in ((48, 1), (160, 2)):
        opt = torch.optim.AdamW(model.parameters())
        real = measure_step(model, (torch.zeros(b, n, dtype=torch.long),), opt)
        _close(a, real, n, b)


def test_checkpointed_step_memory_matches_the_oracle(configs):
    folder, raw = configs["llama"]
    a = analysed(folder, attn_implementation="sdpa", dtype="float32", device="cpu", mode="train",
                 checkpointing="full")
    full = analysed(folder, attn_implementation="sdpa", dtype="float32", device="cpu",
                    mode="train")
    model = _hf_model(raw, "sdpa")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    for n, b in ((48, 1), (512, 1)):
        _close(a, _measure(model, n, b), n, b)
    assert a.memory.at(512, 1) < full.memory.at(512, 1)
    # the recomputed forward is backward work
    assert a.at(a.forward_flops, 512) == full.at(full.forward_flops, 512)
    assert a.at(a.backward_flops, 512) > full.at(full.backward_flops, 512)


class _TestLoRA(torch.nn.Module):
    """y = W x + B (A x), written here independently of attncost."""

    def __init__(self, base: torch.nn.Linear, rank: int):
        super().__init__()
        self.base = base
        self.A = torch.nn.Parameter(torch.randn(rank, base.in_features) * 0.01)
        self.B = torch.nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x):
        return self.base(x) + (x @ self.A.t()) @ self.B.t()


def test_lora_step_memory_and_flops(configs):
    folder, raw = configs["llama"]
    rank = 4
    a = analysed(folder, attn_implementation="sdpa", dtype="float32", device="cpu", mode="train",
                 trainable=f"lora:{rank}")
    model = _hf_model(raw, "sdpa")
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in model.model.layers:
        attn = layer.self_attn
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            setattr(attn, name, _TestLoRA(getattr(attn, name), rank))
    adapters = [p for p in model.parameters() if p.requires_grad]
    # q (64->64), k and v (64->32), o (64->64): A is R×in, B is out×R, two layers
    assert sum(p.numel() for p in adapters) == 2 * rank * (64 + 64 + 64 + 32 + 64 + 32 + 64 + 64)
    assert a.memory.step.gradient_bytes == 4 * sum(p.numel() for p in adapters)
    for n, b in ((48, 1), (512, 1)):
        _close(a, _measure(model, n, b, params=adapters), n, b)
        forward, backward = real_step_flops(model, {"input_ids": torch.zeros(b, n,
                                                                             dtype=torch.long)})
        assert a.at(a.forward_flops, n, b) == forward
        assert a.at(a.backward_flops, n, b) == backward


def test_mixed_precision_step_memory_matches_the_oracle(configs):
    folder, raw = configs["llama"]
    a = analysed(folder, attn_implementation="sdpa", device="cpu", mode="train",
                 mixed_precision="bf16")
    assert a.dtype == "float32"
    model = _hf_model(raw, "sdpa")
    for n, b in ((48, 1), (512, 1)):
        _close(a, _measure(model, n, b, autocast_dtype=torch.bfloat16), n, b)


def test_optimizer_state_by_hand(configs):
    folder, _ = configs["llama"]
    adamw = analysed(folder, attn_implementation="sdpa", dtype="float32", device="cuda",
                     mode="train")
    sgd = analysed(folder, attn_implementation="sdpa", dtype="float32", device="cuda",
                   mode="train", optimizer="sgd")
    grads = adamw.memory.step.gradient_bytes
    # on a CUDA target the scalar step tensors stay on the CPU
    assert adamw.memory.step.optimizer_bytes == 2 * grads
    assert sgd.memory.step.optimizer_bytes == 0
    # foreach AdamW keeps sqrt(exp_avg_sq) of every parameter at once at its step
    end = adamw.memory.step
    assert adamw.memory.at(1, 1) >= end.parameter_bytes + 2 * grads + end.optimizer_bytes


def test_bad_training_options_are_errors(configs):
    folder, _ = configs["llama"]
    for kwargs in (dict(mode="fly"), dict(mode="train", trainable="lora:x"),
                   dict(mode="train", optimizer="lion"),
                   dict(mode="train", mixed_precision="bf16", dtype="bfloat16")):
        with pytest.raises(AttncostError):
            attncost.analyze(folder, 32, device="cpu", **kwargs)


def test_cli_train_json(configs):
    from click.testing import CliRunner

    from attncost.cli import main

    folder, _ = configs["llama"]
    result = CliRunner().invoke(main, ["analyze", str(folder), "--seq-len", "64", "--device",
                                       "cpu", "--dtype", "float32", "--mode", "train",
                                       "--optimizer", "sgd", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    totals = data["totals"]
    assert data["mode"] == "train"
    assert totals["flops"]["value"] == totals["forward_flops"]["value"] + \
        totals["backward_flops"]["value"]
    assert data["training"]["optimizer_bytes"] == 0


@pytest.mark.parametrize("name", ["dense_attention", "local_attention", "sparse_attention",
                                  "linear_attention"])
def test_seed_variants_step_flops_match_flopcounter(name):
    """The seed's four variants (examples/): traced at 256, counted at 384 with B=2."""
    path = Path(__file__).resolve().parent.parent / "examples" / f"{name}.py"
    a = attncost.analyze(path, 256, device="cpu", mode="train")
    module = load_module(path)
    torch.manual_seed(0)
    model = module.build_model()
    inputs = module.example_inputs(384, batch=2) if hasattr(module, "example_inputs") else (
        torch.zeros(2, 384, dtype=torch.long),)  # token ids, as attncost builds them
    forward, backward = real_step_flops(model, inputs)
    assert a.at(a.forward_flops, 384, 2) == forward
    assert a.at(a.backward_flops, 384, 2) == backward


def test_sites_carry_their_backward(configs):
    """Derived by hand: an unfused site's two products (Q·Kᵀ, P·V) each
    make two products of the same size in backward (the gradient of each
    operand): twice the forward; a fused CPU kernel's backward recomputes
    the scores and makes dP, dV, dQ, dK: 2·B·H·N²·(3·d_qk + 2·d_v), 2.5× a
    forward of 2·B·H·N²·(d_qk + d_v) when d_qk = d_v."""
    unfused = analysed(MODELS / "causal_unfused.py", device="cpu", mode="train")
    folder, raw = configs["llama"]
    fused = analysed(folder, attn_implementation="sdpa", dtype="float32", device="cpu",
                     mode="train")
    heads, d = raw["num_attention_heads"], raw["hidden_size"] // raw["num_attention_heads"]
    for n, b in ((48, 1), (96, 2)):
        for s in unfused.sites:
            assert unfused.at(s.backward_flops, n, b) == 2 * unfused.at(s.flops, n, b)
        for s in fused.sites:
            assert fused.at(s.backward_flops, n, b) == 2 * b * heads * n * n * (3 * d + 2 * d)
        for a in (unfused, fused):
            assert sum(a.at(s.backward_flops, n, b) for s in a.sites) < a.at(a.backward_flops, n, b)
