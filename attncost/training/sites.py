"""What each attention site costs in a training step's backward.

The forward's sites are found on the inference graph; the joint graph of
the step holds the same forward ops (same module, same op, same order) and
the backward ops autograd made for each, tagged with the sequence number of
the forward op they differentiate (trace.py).  A site's backward is the
FLOPs of the backward ops of its own forward ops, counted by the same rules
as everything else (a fused kernel's backward as its rule counts it: flash
recomputes the scores).
"""
from __future__ import annotations

import sympy
import torch.fx as fx

from ..rules import node_flops
from ..rules.ops import op_name
from .trace import grad_fn_of, is_backward, is_recompute


def _occurrences(traced, nodes) -> dict[tuple[str, str, int], fx.Node]:
    """(module path, op, k) -> the k-th such op of that module, in graph order."""
    seen: dict[tuple[str, str], int] = {}
    out = {}
    for node in nodes:
        key = (traced.module_path(node), op_name(node))
        k = seen.get(key, 0)
        seen[key] = k + 1
        out[key + (k,)] = node
    return out


def _forward_ops(traced) -> list[fx.Node]:
    return [n for n in traced.nodes if n.op == "call_function" and not is_backward(n)]


def site_backward_flops(sites, inference, joint, rules) -> dict[str, sympy.Expr]:
    """Site name -> FLOPs of its backward in the joint graph ``joint``
    (sites found on ``inference``); a site whose ops cannot be paired
    with the joint graph's is left out."""
    backward: dict[int, sympy.Expr] = {}
    for node in joint.nodes:
        if node.op == "call_function" and is_backward(node) and not is_recompute(node):
            seq = grad_fn_of(node)
            if seq is not None:
                backward[seq] = backward.get(seq, sympy.Integer(0)) + node_flops(joint, node,
                                                                                  rules)
    in_joint = _occurrences(joint, _forward_ops(joint))
    where = {node.name: key
             for key, node in _occurrences(inference, _forward_ops(inference)).items()}
    out = {}
    for site in sites:
        total, paired = sympy.Integer(0), True
        for name in site.nodes:
            twin = in_joint.get(where.get(name))
            if twin is None:
                paired = False
                break
            total += backward.get(twin.meta.get("seq_nr"), sympy.Integer(0))
        if paired:
            out[site.name] = sympy.expand(total * site.head_share)
    return out
