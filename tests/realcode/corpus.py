"""The corpus's model files analysed (once per name and length) and run
for real under FlopCounterMode: what the corpus's tests compare."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

import attncost

HERE = Path(__file__).parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from oracle import count_flops, load_module  # noqa: E402

_DONE: dict = {}


def analysed(name: str, seq_len: int):
    """``attncost.analyze`` of published_<name>.py at ``seq_len`` on a CPU."""
    if (name, seq_len) not in _DONE:
        _DONE[name, seq_len] = attncost.analyze(HERE / f"published_{name}.py", seq_len=seq_len,
                                                device="cpu")
    return _DONE[name, seq_len]


def real_flops(name: str, n: int, batch: int) -> int:
    """FlopCounterMode over a real forward of published_<name>.py."""
    mod = load_module(HERE / f"published_{name}.py")
    torch.manual_seed(0)
    return count_flops(mod.build_model().eval(), mod.example_inputs(n, batch=batch))
