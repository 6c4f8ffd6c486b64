"""Time of a model that loops over the sequence (tracing/loops.py): no one
graph holds for every N, so its launched ops are read off traces at small
lengths, at the batch asked, and fitted in N as its other costs are.

An op whose work is the same at every length traced is a step of the loop
(or an op of fixed size): its count is fitted in N.  The others change
size with N (projections over the whole sequence): there are as many at
each length, in the same order, and each one's FLOPs and bytes are fitted
in N.  The fit must give the ops of a trace held out of it exactly; the
time at N is then every op timed at its size there, as latency.py times
the ops of one graph.  Decode is one token's forward (N = 1, the loop's
state carried) plus the keys and values an attention site reads at
context N.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

import sympy

from ..errors import AttncostError, ModelError
from ..expr import N, value_at
from ..rules import node_flops
from ..tracing.fit import POSITIONS, FitLengths
from ..tracing.loops import FIT_LENGTHS, HELD_OUT, concrete_trace
from ..units import parse_dtype
from .decode import kv_read
from .latency import OpTime, OpWork, op_work, timed
from .launches import Evaluator, launches_kernel

#: Lengths the ops are fitted through, and one held out of the fit, which it
#: must reproduce op for op: primes, so that an op over the sequence is
#: seldom the size of another op at one of them (where it is, the next set
#: is tried), then the cost fit's own lengths for a model that needs those.
TIME_LENGTHS = (((13, 17, 19), 23), ((29, 31, 37), 41), (FIT_LENGTHS, HELD_OUT[0][0]))


@dataclass
class _Graph:
    """What op_work reads of an analysis, for one trace at a fixed length."""

    traced: object
    dtype: str
    sites: tuple = ()


@dataclass
class LoopOps:
    """A looping model's launched ops as functions of N, at one batch."""

    repeated: list[tuple[OpWork, sympy.Expr]]  # an op, how many of it
    sized: list[tuple[OpWork, sympy.Expr, sympy.Expr]]  # an op, its FLOPs, its bytes
    lengths: tuple[int, ...] = ()  # fitted through
    held: int = 0  # reproduced op for op

    def at(self, n: int) -> list[tuple[OpWork, int]]:
        """Every op at N=n, with how many times it runs."""
        out = [(w, max(0, value_at(count, n, 1))) for w, count in self.repeated]
        for w, flops, nbytes in self.sized:
            out.append((replace(w, flops=max(0, value_at(flops, n, 1)),
                                bytes=max(0, value_at(nbytes, n, 1)),
                                length=n if w.kind == "attention" else 0), 1))
        return out

    def per_token(self) -> set[OpWork]:
        """The ops that run more often the longer the sequence: the loop's steps."""
        return {w for w, count in self.repeated if N in count.free_symbols}


def _works(loaded, n: int, batch: int, dtype: str, rules) -> list[OpWork]:
    traced = concrete_trace(loaded, n, batch)
    exprs = {node.name: node_flops(traced, node, rules) for node in traced.nodes
             if launches_kernel(node)}
    return [replace(w, node="") for w in op_work(_Graph(traced, dtype), exprs,
                                                  Evaluator(traced, n, batch))]


def _shape(w: OpWork) -> OpWork:
    """An op without its sizes: what its matches at other lengths share."""
    return replace(w, flops=0, bytes=0, length=0)


def loop_ops(loaded, batch: int, dtype: str, rules, fit: FitLengths = POSITIONS) -> LoopOps:
    """The ops fitted from traces at TIME_LENGTHS (or, where the model does
    not run there, the cost fit's lengths), checked at the length held out;
    for a loop over chunks, at the lengths its costs were fitted through,
    in N and the chunk count."""
    why = "it does not run at the short lengths its ops would be fitted from"
    sets = TIME_LENGTHS if fit.chunk is None else ((fit.fitted, fit.held_out[0][0]),)
    for lengths, held in sets:
        try:
            works = {n: _works(loaded, n, batch, dtype, rules) for n in lengths + (held,)}
            return _fitted(works, lengths, held, fit)
        except (ModelError, _NotFitted) as exc:
            why = str(exc) or why
    raise AttncostError(f"no time estimate: the model loops over the sequence, and {why}")


class _NotFitted(Exception):
    """The ops traced at a set of lengths follow no fit."""


def _fitted(works: dict[int, list[OpWork]], lengths: tuple[int, ...], held: int,
            fit: FitLengths) -> LoopOps:
    counts = {n: Counter(works[n]) for n in lengths}
    common = set.intersection(*(set(c) for c in counts.values()))
    repeated = [(w, fit.through([(n, counts[n][w]) for n in lengths]))
                for w in sorted(common, key=lambda w: (w.module, w.op, w.flops, w.bytes))]
    others = {n: [w for w in works[n] if w not in common] for n in lengths}
    if len({tuple(_shape(w) for w in ws) for ws in others.values()}) != 1:
        raise _NotFitted("the ops whose size follows N differ between the lengths traced")
    sized = []
    for k, w in enumerate(others[lengths[0]]):
        flops = fit.through([(n, others[n][k].flops) for n in lengths])
        nbytes = fit.through([(n, others[n][k].bytes) for n in lengths])
        sized.append((_shape(w), flops, nbytes))
    ops = LoopOps(repeated, sized, lengths, held)
    predicted: Counter = Counter()
    for w, count in ops.at(held):
        predicted[w] += count
    if +predicted != +Counter(works[held]):
        raise _NotFitted(f"the ops fitted from N={', '.join(map(str, lengths))} are not those "
                         f"of a trace at N={held}")
    return ops


def site_ops(site, loop: "LoopTime", step: bool = False) -> list[tuple[OpTime, int]]:
    """The ops of a site (a fitted site has no graph nodes): those of its
    module, and of a recurrent site the ones its loop runs per token."""
    prefix = "" if site.name == "<root>" else site.name + "."
    done = loop.step if step else loop.prefill
    return [(t, c) for t, w, c in done
            if (w.module == site.name or w.module.startswith(prefix))
            and (site.variant != "linear" or w in loop.per_token)]


@dataclass
class LoopTime:
    """A looping model's ops timed at N (prefill) and at N=1 (one decode
    step), and the keys and values each attention site reads at N."""

    prefill: list[tuple[OpTime, OpWork, int]]
    step: list[tuple[OpTime, OpWork, int]]
    kv_bytes: dict[str, int]
    per_token: set = field(default_factory=set)
    lengths: tuple[int, ...] = ()
    held: int = 0


def loop_time(analysis, rates, n: int, batch: int, rules) -> LoopTime:
    """The ops of a looping model at N=n and one decode step, timed on ``rates``."""
    ops = loop_ops(analysis.loaded, batch, analysis.dtype, rules,
                   getattr(analysis.memory, "lengths", POSITIONS))
    ev = Evaluator(None, n, batch)
    itemsize = parse_dtype(analysis.dtype, None).itemsize
    kv = {s.name: kv_read(s, ev, itemsize)[0] for s in analysis.sites
          if s.variant != "linear" and s.key_len is not None}
    return LoopTime([(timed(w, rates), w, c) for w, c in ops.at(n)],
                    [(timed(w, rates), w, c) for w, c in ops.at(1)], kv, ops.per_token(),
                    ops.lengths, ops.held)
