"""The longest context a model's configuration says it handles.

A formula answers at any N, but a model with learned or rotary positions
is only trained (or scaled) up to some length: past it the numbers are
about a model nobody can run as configured.  The limit is read from the
config as transformers names it.
"""
from __future__ import annotations

from typing import Any

#: Config attributes that state the position limit, in the order they are read.
LIMIT_ATTRIBUTES = ("max_position_embeddings", "n_positions", "max_target_positions",
                    "max_source_positions", "n_ctx", "seq_length")


def position_limit(config: Any) -> tuple[int, str] | None:
    """(longest N, where it was read) from a transformers config, or None.

    Rope scaling that stretches the original context (yarn, dynamic,
    longrope: ``factor`` × ``original_max_position_embeddings``) raises the
    limit to what the scaling states, when that is above the plain attribute."""
    if config is None:
        return None
    text = getattr(config, "get_text_config", lambda: config)()
    found = None
    for name in LIMIT_ATTRIBUTES:
        value = getattr(text, name, None)
        if isinstance(value, int) and value > 0:
            found = (value, name)
            break
    scaled = _rope_scaled(text)
    if scaled is not None and (found is None or scaled[0] > found[0]):
        found = scaled
    return found


def _rope_scaled(config: Any) -> tuple[int, str] | None:
    rope = getattr(config, "rope_scaling", None) or getattr(config, "rope_parameters", None)
    if not isinstance(rope, dict):
        return None
    factor, original = rope.get("factor"), rope.get("original_max_position_embeddings")
    if not isinstance(factor, (int, float)) or not isinstance(original, int):
        return None
    return int(factor * original), "rope scaling (factor × original_max_position_embeddings)"


def beyond_limit_warning(config: Any, seq_len: int) -> str | None:
    """One line when N exceeds the configured position limit."""
    limit = position_limit(config)
    if limit is None or seq_len <= limit[0]:
        return None
    value, source = limit
    return f"N={seq_len:,} exceeds the model's position limit of {value:,} ({source})"
