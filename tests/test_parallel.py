"""Per-GPU memory and traffic under FSDP, tensor and context parallelism.

Oracles: counts derived by hand from each config in the test (the split of
every weight written out as rows and columns, the tensors a traced Llama
step saves written out by shape), and a real two-process gloo run of FSDP2
``fully_shard`` with one AdamW step whose local shards are measured.
"""
from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field

import pytest
import torch
from torch import nn

from attncost import analyze
from attncost.errors import AttncostError
from attncost.training.parallel import (LayerShape, Plan, largest_batch, largest_seq_len,
                                        parallel_dict, parameter_shapes, per_gpu,
                                        splits_activation)

# A tiny Llama: vocab 101 and MLP width 90 leave FSDP padding to count.
V, H, HEADS, KV, D, I, L = 101, 64, 4, 2, 16, 90, 2


def cdiv(a, b):
    return -(-a // b)


@dataclass
class Step:
    """A training step built from a real model's parameters: fp32 weights
    by default, gradients like them, AdamW's two states per element."""

    parameters: list
    element_bytes: int = 4
    gradient_width: int = 4
    optimizer_width: int = 8
    parts: dict = field(default_factory=dict)

    @property
    def parameter_bytes(self):
        return sum(numel * size for _, numel, size, _ in self.parameters)

    @property
    def gradient_bytes(self):
        return sum(numel for _, numel, _, t in self.parameters if t) * self.gradient_width

    @property
    def optimizer_bytes(self):
        return sum(numel for _, numel, _, t in self.parameters if t) * self.optimizer_width

    def activation_parts(self, n, b):
        return {path: f(n, b) for path, f in self.parts.items()}

    def activations(self, n, b=1):
        return sum(self.activation_parts(n, b).values())


def llama():
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(vocab_size=V, hidden_size=H, num_attention_heads=HEADS,
                         num_key_value_heads=KV, head_dim=D, intermediate_size=I,
                         num_hidden_layers=L, tie_word_embeddings=False)
    with torch.device("meta"):
        return config, LlamaForCausalLM(config)


#: Activation bytes by the module that made them; the test knows which are
#: inside the attention or MLP block between the column and row splits.
SPLIT_PARTS = {
    "model.layers.{i}.self_attn.q_proj": lambda n, b: 2 * b * n * HEADS * D,
    "model.layers.{i}.self_attn": lambda n, b: 4 * b * HEADS * n + 2 * b * n * HEADS * D,
    "model.layers.{i}.mlp.up_proj": lambda n, b: 2 * b * n * I,
    "model.layers.{i}.mlp": lambda n, b: 2 * b * n * I + 3,
}
WHOLE_PARTS = {
    "model.layers.{i}.input_layernorm": lambda n, b: 2 * b * n * H,
    "model.layers.{i}.self_attn.o_proj": lambda n, b: 2 * b * n * H,
    "model.layers.{i}.mlp.down_proj": lambda n, b: 2 * b * n * H + 1,
    "lm_head": lambda n, b: 4 * b * n * V,
}


def llama_step(buffers=False, **kwargs):
    config, model = llama()
    params = [(name, p.numel(), kwargs.get("element_bytes", 4), True)
              for name, p in model.named_parameters()]
    if buffers:  # as the step lists them: after the parameters, not trainable
        params += [(name, t.numel(), t.element_size(), False)
                   for name, t in model.named_buffers()]
    parts = {}
    for table in (SPLIT_PARTS, WHOLE_PARTS):
        for path, f in table.items():
            for i in range(L) if "{i}" in path else [0]:
                parts[path.format(i=i)] = f
    return Step(params, parts=parts, **kwargs), LayerShape.from_config(config), \
        parameter_shapes(model)


def split_bytes(n, b):
    return L * sum(f(n, b) for f in SPLIT_PARTS.values())


def whole_bytes(n, b):
    return sum(f(n, b) * (L if "{i}" in p else 1) for p, f in WHOLE_PARTS.items())


# ------------------------------------------------------------ hand counts


def llama_rows(tp, fsdp, kv_holding=None):
    """Per GPU elements of each weight, derived from the config: tp splits
    (rows, cols) as Megatron does, then FSDP keeps ceil(rows / fsdp) rows."""
    kv_rows = KV * D // tp if kv_holding is None else kv_holding * D
    layer = {  # name: (rows, cols) after the tensor-parallel split
        "q": (HEADS * D // tp, H), "k": (kv_rows, H), "v": (kv_rows, H),
        "o": (H, HEADS * D // tp), "gate": (I // tp, H), "up": (I // tp, H),
        "down": (H, I // tp), "norm1": (H, 1), "norm2": (H, 1),
    }
    root = {"embed": (cdiv(V, tp), H), "lm_head": (cdiv(V, tp), H), "norm": (H, 1)}

    def shard(rows_cols):
        return {k: cdiv(r, fsdp) * c for k, (r, c) in rows_cols.items()}

    def local(rows_cols):
        return {k: r * c for k, (r, c) in rows_cols.items()}
    return shard(layer), shard(root), local(layer), local(root)


def test_every_axis_on_matches_a_hand_count():
    fsdp, tp, cp = 4, 2, 2
    step, layers, shapes = llama_step()
    layer, root, layer_local, root_local = llama_rows(tp, fsdp)
    assert layer == {"q": 8 * 64, "k": 4 * 64, "v": 4 * 64, "o": 16 * 32, "gate": 12 * 64,
                     "up": 12 * 64, "down": 16 * 45, "norm1": 16, "norm2": 16}
    shard = L * sum(layer.values()) + sum(root.values())
    assert shard == 9328
    for n, b in ((64, 1), (37, 3)):
        got = per_gpu(step, Plan(fsdp=fsdp, tp=tp, cp=cp), n, b, layers=layers, shapes=shapes)
        n_local = cdiv(n, cp)
        assert (got.parameters, got.gradients, got.optimizer) == (4 * shard, 4 * shard, 8 * shard)
        assert got.activations == whole_bytes(n_local, b) + cdiv(split_bytes(n_local, b), tp)
        gathered_layer = fsdp * sum(layer.values()) * 4
        fsdp_buffers = (fsdp * sum(root.values()) * 4 + sum(root_local.values()) * 4
                        + 2 * gathered_layer + sum(layer_local.values()) * 4 + gathered_layer)
        kv_block = 2 * b * n_local * (KV // tp) * D * 2   # K and V, bf16 activations
        assert got.in_flight == fsdp_buffers + 2 * kv_block
        assert got.comm == {
            "fsdp_all_gather": (fsdp - 1) * 4 * (sum(root.values()) + 2 * L * sum(layer.values())),
            "fsdp_reduce_scatter": (fsdp - 1) * 4 * shard,
            "cp_gradient_all_reduce": 2 * (cp - 1) * 4 * shard // cp,
            "tp_all_reduce": (4 * L + 2) * 2 * (tp - 1) * (b * n_local * H * 2) // tp,
            "cp_kv_ring": 3 * L * (cp - 1) * kv_block,
        }
        assert got.total == 16 * shard + got.activations + got.in_flight
        assert got.replicated == []


def test_fsdp_alone_pads_dim0_and_shards_mixed_precision_state():
    """bf16 weights, fp32 gradients and fp32 master + two AdamW states."""
    fsdp = 3
    step, layers, shapes = llama_step(buffers=True, element_bytes=2, gradient_width=4,
                                      optimizer_width=12)
    layer, root, _, _ = llama_rows(1, fsdp)
    assert layer["gate"] == 30 * 64 and layer["down"] == 22 * 90 and root["embed"] == 34 * 64
    shard = L * sum(layer.values()) + sum(root.values())
    rotary = 2 * (D // 2) * 4   # inv_freq and original_inv_freq, fp32, whole on every GPU
    got = per_gpu(step, Plan(fsdp=fsdp), 50, 2, shapes=shapes)
    assert (got.parameters, got.gradients, got.optimizer) == \
        (2 * shard + rotary, 4 * shard, 12 * shard)
    assert got.activations == step.activations(50, 2)
    assert set(got.comm) == {"fsdp_all_gather", "fsdp_reduce_scatter"}
    assert got.comm["fsdp_reduce_scatter"] == (fsdp - 1) * 4 * shard


def test_tensor_parallel_alone():
    tp = 2
    step, layers, shapes = llama_step()
    layer, root, _, _ = llama_rows(tp, 1)
    got = per_gpu(step, Plan(tp=tp), 40, 1, layers=layers, shapes=shapes)
    assert got.parameters == 4 * (L * sum(layer.values()) + sum(root.values()))
    assert got.activations == whole_bytes(40, 1) + split_bytes(40, 1) // tp
    assert got.in_flight == 0
    assert got.comm == {"tp_all_reduce": (4 * L + 2) * 40 * H * 2}  # 2(tp-1)/tp = 1
    assert any("sequence parallelism" in note for note in got.notes)


def test_context_parallel_alone():
    cp = 4
    step, layers, shapes = llama_step()
    full = sum(numel for _, numel, _, _ in step.parameters)
    got = per_gpu(step, Plan(cp=cp), 30, 2, layers=layers, shapes=shapes)
    assert (got.parameters, got.gradients, got.optimizer) == (4 * full, 4 * full, 8 * full)
    assert got.activations == step.activations(8, 2)   # ceil(30 / 4) tokens
    kv_block = 2 * 2 * 8 * KV * D * 2
    assert got.in_flight == 2 * kv_block
    assert got.comm == {"cp_kv_ring": 3 * L * 3 * kv_block,
                        "cp_gradient_all_reduce": 2 * 3 * 4 * full // 4}
    with pytest.raises(AttncostError, match="needs at least 4 tokens"):
        per_gpu(step, Plan(cp=cp), 3, layers=layers, shapes=shapes)


def test_kv_heads_replicated_when_tp_exceeds_them():
    step, _, shapes = llama_step()
    layers = LayerShape(count=L, hidden=H, heads=HEADS, kv_heads=KV, head_dim=D, mlp_width=92)
    step.parameters = [p for p in step.parameters if "mlp" not in p[0]]
    got = per_gpu(step, Plan(tp=4), 16, layers=layers, shapes=shapes)
    kv = 2 * L * 1 * D * H          # k and v: one of the two kv heads on each GPU
    q_o = 2 * L * HEADS * D * H // 4
    norms, vocab = (2 * L + 1) * H, 2 * cdiv(V, 4) * H
    assert got.parameters == 4 * (kv + q_o + norms + vocab)
    assert any("kv heads replicated" in note for note in got.notes)


def test_gpt2_conv1d_orientation_and_unknown_names():
    """GPT-2 stores (in, out): c_attn/c_fc split columns (dim 1), c_proj rows
    (dim 0); with fsdp 7 the wrong orientation pads differently."""
    from transformers import GPT2Config, GPT2LMHeadModel
    h, v, pos = 48, 101, 32
    config = GPT2Config(vocab_size=v, n_embd=h, n_head=4, n_layer=1, n_positions=pos,
                        bos_token_id=0, eos_token_id=0)
    with torch.device("meta"):
        model = GPT2LMHeadModel(config)
    model.transformer.h[0].mlp.register_parameter("router", nn.Parameter(torch.empty(5, h)))
    names = dict(model.named_parameters())
    step = Step([(n, p.numel(), 4, True) for n, p in names.items()])
    got = per_gpu(step, Plan(fsdp=7, tp=2), 8, layers=LayerShape.from_config(config),
                  shapes=parameter_shapes(model))
    rows = {  # (rows, cols) after tp 2
        "wte": (cdiv(v, 2), h), "wpe": (pos, h), "ln_1": (h, 1), "ln_1b": (h, 1),
        "c_attn": (h, 3 * h // 2), "c_attn.bias": (3 * h // 2, 1), "attn.c_proj": (h // 2, h),
        "attn.c_proj.bias": (h, 1), "ln_2": (h, 1), "ln_2b": (h, 1),
        "c_fc": (h, 4 * h // 2), "c_fc.bias": (4 * h // 2, 1), "mlp.c_proj": (4 * h // 2, h),
        "mlp.c_proj.bias": (h, 1), "ln_f": (h, 1), "ln_fb": (h, 1), "router": (5, h),
    }
    assert len(rows) == len(names)
    assert got.parameters == 4 * sum(cdiv(r, 7) * c for r, c in rows.values())
    assert got.replicated == ["transformer.h.0.mlp.router"]


@pytest.mark.parametrize("plan, layers, message", [
    (dict(fsdp=0), None, "--fsdp must be a positive integer"),
    (dict(tp=-2), None, "--tp must be a positive integer"),
    (dict(cp=1.5), None, "--cp must be a positive integer"),
    (dict(tp=True), None, "--tp must be a positive integer"),
    (dict(tp=3), dict(heads=4, kv_heads=2, mlp_width=90), "does not divide the 4 attention"),
    (dict(tp=4), dict(heads=4, kv_heads=2, mlp_width=90), "does not divide the MLP width 90"),
    (dict(tp=3), dict(heads=6, kv_heads=4, mlp_width=96), "kv heads do not divide"),
    (dict(tp=2), "none", "need the layer's shape"),
])
def test_bad_plans_are_refused(plan, layers, message):
    step, _, shapes = llama_step()
    shape = None if layers == "none" else LayerShape(
        count=L, hidden=H, head_dim=D, **(layers or dict(heads=HEADS, kv_heads=KV, mlp_width=I)))
    with pytest.raises(AttncostError, match=message):
        per_gpu(step, Plan(**plan), 16, layers=shape, shapes=shapes)


def test_largest_length_and_batch_bracket_the_budget():
    step, layers, shapes = llama_step()
    plan = Plan(fsdp=4, tp=2, cp=2)
    budget = 3 << 20
    n = largest_seq_len(step, plan, budget, batch=2, layers=layers, shapes=shapes)
    fits = [per_gpu(step, plan, m, 2, layers=layers, shapes=shapes).total <= budget
            for m in (n, n + 1)]
    assert n > 2 and fits == [True, False]
    b = largest_batch(step, plan, budget, 64, layers=layers, shapes=shapes)
    fits = [per_gpu(step, plan, 64, m, layers=layers, shapes=shapes).total <= budget
            for m in (b, b + 1)]
    assert b >= 1 and fits == [True, False]


def test_the_training_step_dataclass_is_read_as_it_is():
    """A ``training.memory.StepMemory`` built without its moments has no
    activation parts: under tp its activations stay whole, and the notes say so."""
    memory = pytest.importorskip("attncost.training.memory")
    ours, layers, shapes = llama_step()
    step = memory.StepMemory(parameter_bytes=ours.parameter_bytes,
                             gradient_bytes=ours.gradient_bytes,
                             optimizer_bytes=ours.optimizer_bytes, parameters=ours.parameters,
                             activations_at=lambda n, b: 1000 * n * b)
    got = per_gpu(step, Plan(fsdp=2, tp=2), 64, 2, layers=layers, shapes=shapes)
    assert got.activations == 1000 * 64 * 2
    assert got.parameters == per_gpu(ours, Plan(fsdp=2, tp=2), 64, 2, layers=layers,
                                     shapes=shapes).parameters
    assert any("activations not split" in note for note in got.notes)


def test_parallel_dict_is_the_json_object():
    step, layers, shapes = llama_step()
    got = per_gpu(step, Plan(fsdp=2, tp=2, cp=2), 32, layers=layers, shapes=shapes)
    obj = json.loads(json.dumps(parallel_dict(got)))
    assert (obj["fsdp"], obj["tp"], obj["cp"], obj["world_size"]) == (2, 2, 2, 8)
    assert obj["comm_bytes_per_step"] == sum(obj["comm"].values()) > 0
    assert obj["per_gpu"]["total_bytes"] == got.total

# ------------------------------------- a traced step's activations under tp

#: The tiny Llama above with a vocabulary of 320, in bf16: the logits make
#: the end of the forward the step's peak at the lengths checked below.
TRAIN_V = 320
TRAIN_LLAMA = dict(architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=TRAIN_V,
                   hidden_size=H, num_attention_heads=HEADS, num_key_value_heads=KV, head_dim=D,
                   intermediate_size=I, num_hidden_layers=L, tie_word_embeddings=False,
                   max_position_embeddings=8192, torch_dtype="bfloat16")


@pytest.fixture(scope="module")
def traced_llama(tmp_path_factory):
    """One training step of TRAIN_LLAMA traced at N=64 (CUDA target), split by tp 2."""
    folder = tmp_path_factory.mktemp("llama")
    (folder / "config.json").write_text(json.dumps(TRAIN_LLAMA))
    return analyze(folder, 64, mode="train", tp=2, device="cuda")


def forward_end_by_hand(n, b):
    """(whole, split) bytes alive when the loss is made, from the config's
    shapes (bf16 activations, T = B·N tokens).

    Each norm saves its input cast to fp32, rsqrt (fp32, one per token),
    the normalised input in bf16 and its output (read by the projections):
    that is where the residual stream and the embeddings are held, and they
    are whole.  Inside the attention block: q and k after the rotary
    embedding, v_proj's output, the attention output and its fp32
    log-sum-exp (one per head and token); inside the MLP: gate_proj's and
    up_proj's outputs, SiLU of the gate and the product read by down_proj.
    Those are between the column and the row split, so tp divides them.
    Whole besides: the rotary cos and sin (bf16, 1 × N × D), the final norm,
    the logits in bf16 and their fp32 copy, the loss, the int64 token ids,
    less every gradient (bf16, one per parameter) since none is made yet.
    """
    t = b * n
    norm = 4 * t * H + 4 * t + 2 * t * H + 2 * t * H
    attention = 2 * t * HEADS * D + 2 * t * KV * D + 2 * t * KV * D + 2 * t * HEADS * D \
        + 4 * t * HEADS
    mlp = 4 * (2 * t * I)
    params = 2 * TRAIN_V * H + H + L * (HEADS * D * H + 2 * KV * D * H + H * HEADS * D
                                        + 3 * I * H + 2 * H)
    whole = L * 2 * norm + 2 * (2 * n * D) + norm + 2 * t * TRAIN_V + 4 * t * TRAIN_V + 4 \
        + 8 * t - 2 * params
    return whole, L * (attention + mlp)


def test_tp_divides_the_blocks_activations_by_a_hand_count(traced_llama):
    a = traced_llama
    step = a.memory.step
    for n, b in ((200, 3), (1000, 2)):   # never traced
        whole, split = forward_end_by_hand(n, b)
        assert step.activations(n, b) == whole + split
        parts = step.activation_parts(n, b)
        assert sum(v for k, v in parts.items() if splits_activation(k)) == split
        got = a.memory.per_gpu(n, b)
        assert got.activations == whole + split // 2
        assert a.at(a.peak_memory_bytes, n, b) == got.total
        assert not any("activations not split" in note for note in got.notes)


def test_activation_parts_sum_to_the_activations(traced_llama):
    step = traced_llama.memory.step
    modules = {name for name, _ in traced_llama.loaded.module.named_modules()}
    for n, b in ((1, 1), (8, 1), (64, 1), (97, 2), (200, 3), (4099, 2)):
        parts = step.activation_parts(n, b)
        assert sum(parts.values()) == step.activations(n, b), (n, b)
        assert set(parts) <= modules, set(parts) - modules


def test_the_split_can_move_the_busiest_moment(traced_llama):
    """At N=64 the step's peak is inside backward, where little of what is
    alive is in the blocks; once tp divides them another moment is busier,
    so a GPU holds more than the step's peak divided, and never less than
    the end of the forward divided (counted by hand)."""
    a = traced_llama
    parts = a.memory.step.activation_parts(64, 1)
    split = sum(v for k, v in parts.items() if splits_activation(k))
    whole, split_end = forward_end_by_hand(64, 1)
    got = a.memory.per_gpu(64, 1).activations
    assert got >= whole + split_end // 2
    assert got > sum(parts.values()) - split + split // 2


def test_without_tp_the_activations_are_the_steps_own(traced_llama):
    a = traced_llama
    step = a.memory.step
    shapes = parameter_shapes(a.loaded.module)
    for plan in (Plan(), Plan(fsdp=2), Plan(fsdp=4)):
        for n, b in ((8, 1), (64, 1), (200, 3), (1000, 2)):
            got = per_gpu(step, plan, n, b, shapes=shapes)
            assert got.activations == step.activations(n, b), (plan, n, b)
            assert not any("activations" in note for note in got.notes)

# ------------------------------------------------- FSDP2 on two processes


class TinyLayer(nn.Module):
    def __init__(self, h, mlp):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(h)
        self.q_proj = nn.Linear(h, h, bias=False)
        self.up_proj = nn.Linear(h, mlp)
        self.down_proj = nn.Linear(mlp, h, bias=False)

    def forward(self, x):
        y = self.input_layernorm(x)
        return x + self.q_proj(y) + self.down_proj(torch.relu(self.up_proj(y)))


class TinyLlama(nn.Module):
    """Llama-named weights with odd dims (vocab 37, MLP 27) so shards pad."""

    def __init__(self, vocab=37, h=10, mlp=27, layers=2):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, h)
        self.layers = nn.ModuleList(TinyLayer(h, mlp) for _ in range(layers))
        self.lm_head = nn.Linear(h, vocab, bias=False)

    def forward(self, tokens):
        x = self.embed_tokens(tokens)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(x)


def _storage_bytes(tensors):
    """Bytes of the distinct storages under ``tensors`` (FSDP's gradients
    share one reduce-scatter output per group)."""
    return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                for t in tensors}.values())


def _fsdp_worker(rank, world, port, out_dir):
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = TinyLlama()
    for layer in model.layers:
        fully_shard(layer)
    fully_shard(model)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randint(0, 37, (2, 7))).float().pow(2).mean().backward()
    optimizer.step()
    states = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, DTensor)]
    measured = {
        "parameters": _storage_bytes([p.to_local() for p in model.parameters()]),
        "gradients": _storage_bytes([p.grad.to_local() for p in model.parameters()]),
        "optimizer": _storage_bytes([v.to_local() for v in states]),
    }
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(measured, f)
    dist.destroy_process_group()


def test_fsdp2_shards_match_a_real_two_process_run(tmp_path):
    import torch.distributed as dist
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        pytest.skip("torch.distributed.fsdp.fully_shard is not available")
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("gloo is not available")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_fsdp_worker, args=(2, port, str(tmp_path)), nprocs=2)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    model = TinyLlama()
    step = Step([(n, p.numel(), 4, True) for n, p in model.named_parameters()])
    got = per_gpu(step, Plan(fsdp=2), 7, 2, shapes=parameter_shapes(model))
    for measured in ranks:
        assert measured["parameters"] == got.parameters
        assert measured["gradients"] == got.gradients
    # AdamW's state follows the unpadded shard: rank 0 holds the longer one.
    assert ranks[0]["optimizer"] == got.optimizer
    assert ranks[1]["optimizer"] < got.optimizer
    # the hand count: 19 of 37 vocab rows, 5 of 10 norm and q rows, 14 of 27 MLP rows
    hand = 2 * 19 * 10 + 2 * (5 + 5 + 5 * 10 + 14 * 10 + 14 + 5 * 27)
    assert (got.parameters, got.optimizer) == (4 * hand, 8 * hand)
