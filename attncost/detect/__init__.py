"""Where attention is: the attention sites of a traced graph, found by what
the graph computes, not by module names.

Each recogniser lives in its own module and is registered here, in the
order they run; a later one does not claim nodes an earlier site holds:

* fused.py: scaled_dot_product_attention in any aten form, FlexAttention;
* unfused.py: Q·Kᵀ -> softmax over keys -> ·V, with the masks on the way;
  then the same chain with the scores weighed by exp or a squared ReLU
  instead of a softmax op (a product of Q and K that nothing weighs, a
  chunked linear form's, is left to the linear recognisers);
* recurrent.py: a loop over chunks of the sequence carrying a state;
* linear.py: kernelized attention through a sequence-free state;
* scan.py: causal linear attention through a prefix sum of states;
* recurrent.py: a loop over the positions carrying a state (at a fixed length);
* learned.py: a softmax over a learned table of N×N scores (the Random
  Synthesizer's) applied to values of the input;
* unfused.py last: scores applied to V with nothing weighing them (a
  retention's decay, a Taylor polynomial, a mask), once the linear forms
  have claimed their chunks.

Masks are read by evaluating them (masks.py); what they let through and
which variant that makes is patterns/'s answer.
"""
from __future__ import annotations

from typing import Callable

from ..rules.flops import FLOP_RULES
from ..rules.registry import Registry
from .blocks import merge_blocks, merge_pieces
from .fused import find_fused
from .graph import GraphContext
from .learned import find_learned_scores
from .linear import find_linear
from .recurrent import find_chunk_loops, find_recurrent
from .scan import find_scans
from .site import AttentionSite
from .unfused import find_unfused, find_unweighed, find_weighed

#: name -> recogniser(ctx, used node names) -> sites; run in this order.
Recogniser = Callable[[GraphContext, set], list]
RECOGNISERS: Registry[Recogniser] = Registry("recognisers")


def register_recogniser(name: str) -> Callable[[Recogniser], Recogniser]:
    """Decorator: add a recogniser (after the registered ones); names are unique."""
    return RECOGNISERS.register(name)


register_recogniser("fused")(find_fused)
register_recogniser("unfused")(find_unfused)
register_recogniser("weighed")(find_weighed)
register_recogniser("chunk loop")(find_chunk_loops)
register_recogniser("linear")(find_linear)
register_recogniser("scan")(find_scans)
register_recogniser("recurrent")(find_recurrent)
register_recogniser("learned scores")(find_learned_scores)
register_recogniser("unweighed")(find_unweighed)


def find_sites(traced, loaded=None, seq_len: int | None = None,
               flop_rules=FLOP_RULES) -> list[AttentionSite]:
    """Every attention site of ``traced``, in graph order."""
    ctx = GraphContext(traced, loaded, seq_len or 0, flop_rules=flop_rules)
    found: list[AttentionSite] = []
    used: set[str] = set()
    for _, recognise in RECOGNISERS.items():
        sites = recognise(ctx, used)
        found.extend(sites)
        used.update(n for s in sites for n in s.nodes)
    found = merge_pieces(ctx, merge_blocks(ctx, found))
    order = {n.name: i for n, i in ctx.order.items()}
    return _named_apart(sorted(found, key=lambda s: order[s.nodes[-1]]))


def _named_apart(sites: list[AttentionSite]) -> list[AttentionSite]:
    """A module with more than one site (called more than once: the same
    attention applied to two inputs, once per block in a loop; or
    computing two attentions: PEGASUS-X's global tokens and local blocks):
    the first keeps the module's path, the k-th is named ``path#k``, so
    that a name says one site."""
    calls: dict[str, int] = {}
    for site in sites:
        calls[site.name] = calls.get(site.name, 0) + 1
        if calls[site.name] > 1:
            site.name = f"{site.name}#{calls[site.name]}"
    return sites


__all__ = ["AttentionSite", "GraphContext", "RECOGNISERS", "find_sites", "register_recogniser"]
