"""A chunked linear attention analysed inside its first chunk: the trace,
or the fit from short traces, holds up to the end of that chunk and no
further (a longer N is analysed there).  Truth: transformers' code for
Qwen3-Next and Kimi Linear, FlopCounterMode over their real forward."""
from __future__ import annotations

import torch

import attncost
from oracle import count_flops
from test_state_spaces import QWEN3_NEXT, _real


def test_one_chunk_of_a_loop_over_chunks_holds_inside_that_chunk(write_config):
    """At N=48 Qwen3-Next pads to one chunk of 64 and its loop over chunks
    runs once, so the trace holds up to 64 (its guard on the chunk count
    reads ``floor(N/64 + Mod(63*N, 64)/64) == 1``; at 64 itself the padded
    length equals N, another branch) and no further: one token more adds a
    chunk, and is analysed there."""
    folder = write_config("qwen3_next", **QWEN3_NEXT)
    a = attncost.analyze(folder, seq_len=48, device="cpu", attn_implementation="eager",
                         dtype="float32")
    assert a.n_range == (1, 64) and a.holds_at(63) and not a.holds_at(65)
    model = _real(QWEN3_NEXT).requires_grad_(False)
    for n, batch in ((48, 2), (100, 2)):
        ids = torch.randint(0, 128, (batch, n))
        assert a.at(a.flops, n, batch) == count_flops(model, (), {"input_ids": ids}), n


#: one kimi delta attention layer (chunks of 64, 4 heads of 16) and one
#: multi-head latent attention layer
KIMI_LINEAR = dict(model_type="kimi_linear", architectures=["KimiLinearForCausalLM"],
                   hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=4, intermediate_size=128, moe_intermediate_size=32,
                   vocab_size=128, kv_lora_rank=32, q_lora_rank=None, qk_rope_head_dim=8,
                   qk_nope_head_dim=16, v_head_dim=16,
                   layer_types=["linear_attention", "full_attention"],
                   mlp_layer_types=["dense", "dense"], linear_head_dim=16, linear_num_heads=4,
                   linear_conv_kernel_dim=4, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                   use_cache=False)


def test_a_fit_inside_one_chunk_holds_up_to_that_chunk(write_config):
    """Kimi Linear's chunked delta rule steps through each chunk of 64 in a
    Python loop, so at N=64 its cost is fitted from traces at N=8..24; each
    of them is one chunk, padded to 64, and so is every length up to 64,
    where the fit is exact.  Past it the model runs another chunk, which
    the short traces never saw: the formulas hold up to N=64 only."""
    folder = write_config("kimi_linear", **KIMI_LINEAR)
    a = attncost.analyze(folder, seq_len=64, device="cpu", attn_implementation="eager",
                         dtype="float32")
    assert a.holds_at(64) and not a.holds_at(65), a.n_range
    assert any("up to N=64" in note for note in a.notes), a.notes
    model = _real(KIMI_LINEAR).requires_grad_(False)
    for n, batch in ((64, 2), (40, 3)):
        ids = torch.randint(0, 128, (batch, n))
        assert a.at(a.flops, n, batch) == count_flops(model, (), {"input_ids": ids}), n
