"""A 2-layer transformers Llama whose forward returns its KV cache as tensors,
so that the cache is a graph output (the model keeps it alive to the end)."""
import torch
import transformers

CONFIG = dict(model_type="llama", num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=128, intermediate_size=128,
              max_position_embeddings=512)
ATTN_IMPLEMENTATION = "eager"


class WithCache(torch.nn.Module):
    def __init__(self, attn_implementation=ATTN_IMPLEMENTATION):
        super().__init__()
        config = transformers.AutoConfig.for_model(**CONFIG)
        self.lm = transformers.AutoModelForCausalLM.from_config(
            config, attn_implementation=attn_implementation)

    def forward(self, input_ids):
        out = self.lm(input_ids=input_ids, use_cache=True)
        cache = out.cache
        return out.logits, [(layer.keys, layer.values) for layer in cache.layers]


def build_model():
    return WithCache()


def example_inputs(seq_len, batch=1):
    return (torch.zeros(batch, seq_len, dtype=torch.long),)
