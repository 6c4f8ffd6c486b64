"""``--trainable lora:R``: low-rank adapters on the attention projections.

Every linear layer that is a direct child of an attention site's module
(q, k, v and output projections; a fused qkv projection is one) gets
``y = W x + B (A x)`` with A (R × in) and B (out × R); only A and B are
trained, so only they have gradients and optimizer state.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import AttncostError


def parse_trainable(text: str) -> int | None:
    """``all`` -> None; ``lora:R`` -> R (a positive rank)."""
    if text == "all":
        return None
    if text.startswith("lora:") and text[5:].isdigit() and int(text[5:]) > 0:
        return int(text[5:])
    raise AttncostError(f"--trainable {text}: use all or lora:R with a positive rank R "
                        "(lora:16)")


class LoRALinear(nn.Module):
    """A frozen projection plus a trained low-rank update."""

    def __init__(self, base: nn.Module, in_features: int, out_features: int, rank: int):
        super().__init__()
        self.base = base
        ref = next(base.parameters())
        self.lora_A = nn.Parameter(torch.zeros(rank, in_features, dtype=ref.dtype, device=ref.device))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank, dtype=ref.dtype,
                                               device=ref.device))

    def forward(self, x):
        return self.base(x) + (x @ self.lora_A.t()) @ self.lora_B.t()


def _features(module: nn.Module) -> tuple[int, int] | None:
    """(in, out) of a linear layer: nn.Linear, or transformers' Conv1D (weight in × out)."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None:
        return tuple(module.weight.shape)
    return None


def add_lora(model: nn.Module, sites, rank: int) -> set[str]:
    """Wrap the projections of each site's module; the adapters' parameter names."""
    modules = dict(model.named_modules())
    owners = sorted({s.name for s in sites if s.name in modules})
    names: set[str] = set()
    for owner in owners:
        parent = modules[owner]
        for child_name, child in list(parent.named_children()):
            features = _features(child)
            if features is None:
                continue
            setattr(parent, child_name, LoRALinear(child, features[0], features[1], rank))
            prefix = f"{owner}.{child_name}" if owner else child_name
            names |= {f"{prefix}.lora_A", f"{prefix}.lora_B"}
    if not names:
        raise AttncostError("--trainable lora:R: no linear projection was found inside the "
                            "model's attention modules")
    return names
