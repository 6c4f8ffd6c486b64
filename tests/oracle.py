"""Independent FLOP oracle: FlopCounterMode on the real model, on real inputs.

FlopCounterMode counts a fused attention call as 0 on a CPU (it has no rule
for the CPU kernels); for each such call this adds 4·B·H_q·N_q·N_k·d, derived
here by hand from the call's real tensor shapes.  nn.MultiheadAttention's
fast path (one fused op, projections included) is counted 0 as well; its
projections and attention are added the same way.
"""
from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry

aten = torch.ops.aten

CPU_FUSED_ATTENTION = {
    aten._scaled_dot_product_flash_attention_for_cpu.default,
}


class FusedAttentionCounter(TorchDispatchMode):
    """Counts what FlopCounterMode misses: fused attention on a CPU."""

    def __init__(self):
        super().__init__()
        self.extra = 0
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in CPU_FUSED_ATTENTION and func.overloadpacket not in flop_registry:
            q, k = args[0], args[1]
            b, h_q, n_q, d = q.shape
            n_k = k.shape[2]
            # Q·Kᵀ: n_q·n_k dot products of length d; P·V: the same again.
            self.extra += 2 * (2 * b * h_q * n_q * n_k * d)
            self.calls += 1
        elif func is aten._native_multi_head_attention.default:
            query, key = args[0], args[1]
            embed, heads = args[3], args[4]
            b, n_q, e = query.shape
            n_k = key.shape[1]
            in_proj = 2 * b * n_q * e * embed + 2 * b * n_k * e * 2 * embed
            attention = 2 * (2 * b * heads * n_q * n_k * (embed // heads))
            out_proj = 2 * b * n_q * embed * embed
            self.extra += in_proj + attention + out_proj
            self.calls += 1
        return func(*args, **kwargs)


def count_flops(model: torch.nn.Module, args=(), kwargs=None) -> int:
    """FLOPs of one forward of ``model`` on real inputs."""
    kwargs = kwargs or {}
    counter = FusedAttentionCounter()
    with torch.no_grad(), FlopCounterMode(display=False) as fc, counter:
        model(*args, **kwargs)
    return fc.get_total_flops() + counter.extra


def load_module(path):
    """Import a model file the way a test would, independently of attncost."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"oracle_{abs(hash(str(path)))}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def transformers_config(fields: dict):
    """transformers' own config class of ``fields["model_type"]``, built from
    the other fields: a package imported in the same process may have
    registered its own class under the same type (flash-linear-attention
    registers "mamba" and "mamba2"), which AutoConfig.for_model would build."""
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    cls = getattr(transformers, CONFIG_MAPPING_NAMES[fields["model_type"]])
    return cls(**{k: v for k, v in fields.items() if k != "model_type"})


def analysed_configs(tmp_path_factory, configs: dict, implementation, seq_len: int = 64) -> dict:
    """``attncost.analyze`` of each transformers config of ``configs`` (name
    -> fields), written as config.json to its own folder, at float32 on a
    CPU; ``implementation``: one for all, or name -> implementation."""
    import json

    import attncost

    done = {}
    for name, fields in configs.items():
        folder = tmp_path_factory.mktemp(name)
        (folder / "config.json").write_text(json.dumps(fields))
        impl = implementation[name] if isinstance(implementation, dict) else implementation
        done[name] = attncost.analyze(folder, seq_len=seq_len, device="cpu", dtype="float32",
                                      attn_implementation=impl)
    return done
