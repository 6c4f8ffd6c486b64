"""attncost's FLOP formulas against FlopCounterMode on the real model.

Each model is traced once, at one length; the formula is then evaluated at
other lengths (never passed to analyze) and must equal the oracle exactly.
"""
import pytest
import torch

import attncost
from oracle import count_flops, load_module

from conftest import MODELS

LENGTHS = (7, 33, 64)


def _file_oracle(path, n, batch):
    mod = load_module(path)
    torch.manual_seed(0)
    model = mod.build_model().eval()
    if hasattr(mod, "example_inputs"):
        args = mod.example_inputs(n, batch=batch)
    else:
        args = (torch.zeros(batch, n, dtype=torch.long),)
    return count_flops(model, args)


@pytest.mark.parametrize("name", ["dense_unfused", "sdpa_causal_gqa", "mha", "cross_attention",
                                  "causal_unfused", "mlp_only"])
def test_python_models_match_flopcounter(name):
    path = MODELS / f"{name}.py"
    a = attncost.analyze(path, seq_len=40, batch=2, device="cpu")
    for n in LENGTHS:
        for b in (1, 3):
            assert a.at(a.flops, n, b) == _file_oracle(path, n, b), (name, n, b)


def test_value_at_a_billion_tokens_comes_from_the_formula():
    a = attncost.analyze(MODELS / "dense_unfused.py", seq_len=64)
    n = 10**9
    # two layers, 4 heads of 16: Q·Kᵀ and P·V each 2·B·H·N²·d
    attention = 2 * (2 * 2 * 4 * n * n * 16)
    projections = 2 * (2 * n * 64 * 192 + 2 * n * 64 * 64)
    assert a.at(a.flops, n, 1) == attention + projections
    assert a.at(a.attention_flops, n, 1) == attention


def _hf_oracle(folder, arch, impl, n, batch):
    import json

    import transformers

    raw = json.loads((folder / "config.json").read_text())
    config = transformers.AutoConfig.for_model(**raw)
    config._attn_implementation = impl
    torch.manual_seed(0)
    model = getattr(transformers, arch)(config).eval()
    ids = torch.zeros(batch, n, dtype=torch.long)
    return count_flops(model, (ids,), {"use_cache": False})


HF_CONFIGS = {
    "llama": dict(model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=64,
                  num_attention_heads=4, num_key_value_heads=2, intermediate_size=96,
                  num_hidden_layers=2, vocab_size=128, max_position_embeddings=512),
    "mistral": dict(model_type="mistral", architectures=["MistralForCausalLM"], hidden_size=64,
                    num_attention_heads=4, num_key_value_heads=1, intermediate_size=96,
                    num_hidden_layers=2, vocab_size=128, max_position_embeddings=512,
                    sliding_window=None),
    "gpt2": dict(model_type="gpt2", architectures=["GPT2LMHeadModel"], n_embd=64, n_head=4,
                 n_layer=2, vocab_size=128, n_positions=512),
    "bert": dict(model_type="bert", architectures=["BertModel"], hidden_size=64,
                 num_attention_heads=4, intermediate_size=96, num_hidden_layers=2,
                 vocab_size=128, max_position_embeddings=512),
}


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("family", sorted(HF_CONFIGS))
def test_transformers_configs_match_flopcounter(write_config, family, impl):
    fields = HF_CONFIGS[family]
    folder = write_config(family, **fields)
    a = attncost.analyze(folder, seq_len=48, attn_implementation=impl, kv_cache=False,
                         device="cpu")
    assert len(a.sites) == 2
    heads = fields.get("num_attention_heads", fields.get("n_head"))
    kv = fields.get("num_key_value_heads", heads)
    for s in a.sites:
        assert (s.heads, s.kv_heads) == (heads, kv)
        assert s.head_dim == 16
        assert s.causal == (family != "bert")
    for n in (5, 48, 100):
        assert a.at(a.flops, n, 1) == _hf_oracle(folder, fields["architectures"][0], impl, n, 1)


def test_detected_shapes_of_python_models():
    a = attncost.analyze(MODELS / "sdpa_causal_gqa.py", seq_len=32)
    gqa, plain = a.sites
    assert (gqa.heads, gqa.kv_heads, gqa.head_dim, gqa.causal) == (8, 2, 8, True)
    assert (plain.heads, plain.kv_heads, plain.causal) == (8, 2, False)
    assert gqa.implementation == "sdpa"

    a = attncost.analyze(MODELS / "causal_unfused.py", seq_len=32)
    assert [s.causal for s in a.sites] == [True, True]
    assert [s.layer for s in a.sites] == ["h.0", "h.1"]
    assert all(s.heads == 3 and s.head_dim == 16 for s in a.sites)

    a = attncost.analyze(MODELS / "cross_attention.py", seq_len=32)
    keys = sorted(str(s.key_len) for s in a.sites)
    assert keys == ["2*N", "77", "77"]

    a = attncost.analyze(MODELS / "mha.py", seq_len=32)
    assert len(a.sites) == 1 and a.sites[0].heads == 4 and a.sites[0].head_dim == 8

    assert attncost.analyze(MODELS / "mlp_only.py", seq_len=32).sites == []


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_replayed_layers_equal_a_full_trace(write_config, impl):
    """Four identical layers: traced two deep and replayed, the graph has the
    same ops, outputs and formulas as a full trace, and matches the oracle."""
    from collections import Counter

    from attncost.loader import load
    from attncost.rules.flops import node_flops
    from attncost.tracing import trace

    fields = dict(HF_CONFIGS["llama"], num_hidden_layers=4)
    folder = write_config("llama4", **fields)
    loaded = load(folder, attn_implementation=impl, kv_cache=True)
    graphs = [trace(loaded, 40, 1, reuse_layers=r) for r in (True, False)]

    def ops(t):
        return Counter(str(n.target) for n in t.graph_module.graph.nodes if n.op == "call_function"
                       and "sym_size" not in str(n.target))

    def flops(t):
        return sum(node_flops(t, n) for n in t.graph_module.graph.nodes)

    reused, full = graphs
    assert ops(reused) == ops(full)
    assert len(list(reused.graph_module.graph.nodes)[-1].args[0]) == \
        len(list(full.graph_module.graph.nodes)[-1].args[0])
    assert flops(reused) - flops(full) == 0
    a = attncost.analyze(loaded, seq_len=40, device="cpu")
    assert [s.layer for s in a.sites] == [f"model.layers.{i}" for i in range(4)]
    for n in (9, 70):
        assert a.at(a.flops, n, 1) == _hf_oracle(folder, "LlamaForCausalLM", impl, n, 1)
