"""The one rule for which layer a module path belongs to.

A model's layers are the elements of its outermost numbered container: the
layer of a path is the path up to and including its first numeric
component.  ``model.layers.3.self_attn`` and ``model.layers.3.mlp.experts.7``
both belong to ``model.layers.3``: everything inside a layer (its experts,
its heads, its sub-blocks) is that layer's.  A path with no numeric
component belongs to no layer.
"""
from __future__ import annotations

import re

_INDEX = re.compile(r"(^|\.)\d+(?=\.|$)")


def layer_of(path: str) -> str | None:
    """``model.layers.3.mlp.experts.7`` -> ``model.layers.3``; None outside any layer."""
    parts = path.split(".") if path else []
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return None


def layer_or_path(path: str) -> str:
    """The layer of ``path``, or the path itself when it is in no layer."""
    return layer_of(path) or path


def enclosing(paths) -> str:
    """The innermost module holding every one of ``paths`` ('' for the root):
    ``layers.0`` for ``layers.0`` and ``layers.0.softmax``."""
    split = [p.split(".") if p else [] for p in paths]
    common: list[str] = []
    for parts in zip(*split):
        if any(part != parts[0] for part in parts):
            break
        common.append(parts[0])
    return ".".join(common)


def any_index(path: str) -> str:
    """``model.layers.3.self_attn`` -> ``model.layers.*.self_attn``: the same
    module in every layer, for grouping like things."""
    return _INDEX.sub(r"\1*", path)


def index_in(path: str, container: str) -> int | None:
    """The index of the element of ``container`` that ``path`` is inside
    (``layers.2.attn`` in ``layers`` -> 2), or None."""
    if path == container or not path.startswith(container + "."):
        return None
    head = path[len(container) + 1:].split(".", 1)[0]
    return int(head) if head.isdigit() else None


def range_label(first: str, last: str) -> str:
    """``layers.0.attn`` .. ``layers.21.attn`` -> ``layers.{0..21}.attn``."""
    a, b = first.split("."), last.split(".")
    if len(a) == len(b):
        diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
        if len(diff) == 1 and a[diff[0]].isdigit():
            i = diff[0]
            return ".".join(a[:i] + [f"{{{a[i]}..{b[i]}}}"] + a[i + 1:])
    return f"{first} .. {last}"
