"""Decode time reads weights and KV cache as they are stored: quantized
weights and cache read fewer bytes, by exactly what the formats hold
(hand counts from the config below)."""
import math

from attncost import analyze
from attncost.questions.latency import time_model

HIDDEN, INTER, HEADS, KV_HEADS, LAYERS, VOCAB = 128, 256, 4, 2, 2, 512
HEAD_DIM = HIDDEN // HEADS
LLAMA = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=HIDDEN,
             intermediate_size=INTER, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
             num_hidden_layers=LAYERS, vocab_size=VOCAB, max_position_embeddings=4096,
             torch_dtype="bfloat16")


def _linears():
    """(out, in) of every Linear an int4 weight-only method quantizes (not lm_head)."""
    kv = KV_HEADS * HEAD_DIM
    per_layer = [(HIDDEN, HIDDEN), (kv, HIDDEN), (kv, HIDDEN), (HIDDEN, HIDDEN),
                 (INTER, HIDDEN), (INTER, HIDDEN), (HIDDEN, INTER)]
    return per_layer * LAYERS


def test_int4_weights_and_fp8_cache_read_fewer_bytes(write_config):
    folder = write_config("llama", **LLAMA)
    n, b, group = 1000, 2, 32
    plain = time_model(analyze(folder, n, batch=b, kv_cache=True), "h100-sxm")
    small = time_model(analyze(folder, n, batch=b, kv_cache=True, weight_dtype="int4",
                               group_size=group, kv_cache_dtype="fp8"), "h100-sxm")
    # int4: half a byte per weight, a bf16 scale and zero point per group of a row
    saved_weights = sum(2 * o * i - (o * i // 2 + o * math.ceil(i / group) * 4)
                        for o, i in _linears())
    # fp8 cache: 1 byte per element and a bf16 scale per token and head, for K and V
    saved_kv = LAYERS * 2 * KV_HEADS * n * b * (2 * HEAD_DIM - (HEAD_DIM + 2))
    assert plain.kv_cache_bytes - small.kv_cache_bytes == saved_kv
    assert plain.decode_bytes - small.decode_bytes == saved_weights + saved_kv
    assert small.decode_seconds_per_token < plain.decode_seconds_per_token
