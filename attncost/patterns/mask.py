"""What a mask lets through: a named pattern read off a boolean matrix.

A mask is whatever the model computes to block scores.  Whatever way it is
written, its values at a small length are a (queries × keys) boolean matrix
of allowed pairs; this module names that matrix: all allowed, causal, a
causal or symmetric window, or a pattern with a measured density.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class MaskPattern:
    """What a mask lets through, read at length ``length``."""

    kind: str  # full | causal | window | pattern | unknown
    causal: bool = False
    window: int | None = None
    symmetric: bool = False
    density: float | None = None
    allowed: int | None = None  # allowed (query, key) pairs at ``length``
    length: int | None = None
    notes: list[str] = field(default_factory=list)
    #: allowed pairs as a function of N (patterns.measure), exact for N >= pairs_from
    pairs: object = None
    pairs_from: int | None = None
    #: keys apart a query and an allowed key are at most (+1), when bounded
    reach: int | None = None
    #: the most keys one query attends to (the window of a local pattern)
    keys: int | None = None
    #: which pairs meet depends on the input's values (routing, hashing,
    #: sorting): what is read here is only what the code lets through at most
    content: bool = False
    #: heads that let different pairs through: [(head indices, their pattern)]
    head_groups: list | None = None
    #: keys every query sees beside the sequence's own (memory key/values, a
    #: null or sink key), and the pattern of the rest: causal, full or window
    extra_keys: int = 0
    base: str | None = None
    #: every query lets the same keys through (a padding mask on the keys)
    same_keys: bool = False
    #: every query lets every earlier key through, and some later ones too
    #: (a causal mask with a prefix seen both ways: a prefix-LM's)
    earlier_keys: bool = False

    @classmethod
    def full(cls) -> "MaskPattern":
        return cls("full", density=1.0)

    @classmethod
    def causal_mask(cls) -> "MaskPattern":
        return cls("causal", causal=True)


def classify_allowed(allowed: torch.Tensor) -> MaskPattern:
    """Name the pattern of a 2-D boolean (queries × keys) matrix."""
    nq, nk = allowed.shape
    total = int(torch.count_nonzero(allowed))
    if total == nq * nk:
        return MaskPattern("full", density=1.0, length=nq)
    if nq == nk:
        i = torch.arange(nq).unsqueeze(1)
        j = torch.arange(nk).unsqueeze(0)
        tril = j <= i
        if torch.equal(allowed, tril):
            return MaskPattern("causal", causal=True, allowed=int(total), length=nq)
        w = int(torch.count_nonzero(allowed[-1]))
        if torch.equal(allowed, tril & (j > i - w)):
            return MaskPattern("window", causal=True, window=w, allowed=int(total), length=nq)
        half = int(torch.count_nonzero(allowed[nq // 2])) // 2
        if torch.equal(allowed, (j - i).abs() <= half):
            return MaskPattern("window", causal=False, window=2 * half + 1, symmetric=True,
                               allowed=int(total), length=nq)
    extra = _with_extra_keys(allowed)
    if extra is not None:
        return extra
    causal = bool(not allowed.triu(1).any()) if nq == nk else _growing_prefixes(allowed)
    earlier = nq == nk and not causal and bool(allowed.tril(-1).sum() == nq * (nq - 1) // 2)
    return MaskPattern("pattern", causal=causal, density=total / (nq * nk),
                       allowed=int(total), length=nq, earlier_keys=earlier,
                       same_keys=bool((allowed == allowed[:1]).all()))


def _growing_prefixes(allowed: torch.Tensor) -> bool:
    """Does each query see a prefix of the keys, later queries a longer one
    (keys that summarize blocks of the sequence in order, NSA's compressed
    keys: a query sees the blocks that end before it)?  Causal, where
    queries and keys differ in number."""
    seen = allowed.sum(dim=-1)
    prefixes = torch.arange(allowed.shape[-1]).unsqueeze(0) < seen.unsqueeze(1)
    return bool(torch.equal(allowed, prefixes) and (seen[1:] >= seen[:-1]).all()
                and seen[0] < seen[-1])


def _with_extra_keys(allowed: torch.Tensor) -> MaskPattern | None:
    """Queries × (m + queries) keys whose m first or last columns every query
    sees (learned memory key/values, a null key, sink tokens): the rest named
    as its own pattern; the pairs are counted (kind "pattern") so that the
    m·N extra pairs are in the useful work."""
    nq, nk = allowed.shape
    m = nk - nq
    if m <= 0:
        return None
    for cols, rest in ((allowed[:, :m], allowed[:, m:]), (allowed[:, nq:], allowed[:, :nq])):
        if bool(cols.all()):
            base = classify_allowed(rest)
            if base.kind in ("full", "causal", "window"):
                total = int(torch.count_nonzero(allowed))
                return MaskPattern("pattern", causal=base.causal, window=base.window,
                                   symmetric=base.symmetric, density=total / (nq * nk),
                                   allowed=total, length=nq, extra_keys=m, base=base.kind)
    return None


def allowed_pairs(value: torch.Tensor, polarity: str) -> torch.Tensor:
    """Which (query, key) pairs a mask's values let through, given how it is
    applied: allowed (True lets through), blocked (True blocks), masked_fill
    (as the mask of masked_fill), additive (a float added to the scores),
    scale (multiplied into weights that no softmax follows: 0 blocks)."""
    if polarity == "scale":
        return value != 0
    if value.dtype == torch.bool:
        return value if polarity in ("allowed", "additive") else ~value
    if value.is_floating_point() and polarity in ("allowed", "additive"):
        # added to the scores (SDPA treats a float attn_mask the same way): -inf blocks,
        # and so does any finite value of a two-level mask that softmax cannot tell from it
        far = _underflows(value)
        if far is not None:
            return ~far
        return value > torch.finfo(value.dtype).min / 2
    return value != 0 if polarity == "allowed" else value == 0


#: A softmax weight below float32's smallest normal number is no weight:
#: the pair is blocked (exp(-100) beside exp(0) is 4e-44).
NEGLIGIBLE_WEIGHT = torch.finfo(torch.float32).tiny
#: A pair whose added score is this far (87.3) below the others gets such a weight.
SOFTMAX_UNDERFLOW = -math.log(NEGLIGIBLE_WEIGHT)


def _underflows(value: torch.Tensor) -> torch.Tensor | None:
    """Where a two-level additive mask blocks: every entry of a row is either
    the row's largest or at least SOFTMAX_UNDERFLOW below it (Swin's -100
    beside 0).  The softmax is taken per row: a row whose every key is
    pushed down (Reformer's first query, its own key at -5e4, later keys
    lower still) weighs its largest.  A bias that varies by degrees
    (ALiBi's distances) is not a mask: None."""
    if not value.numel():
        return None
    top = value.amax(-1, keepdim=True) if value.dim() else value
    far = value <= top - SOFTMAX_UNDERFLOW  # a row all -inf: every entry
    at_top = (value == top) & ~far
    return far if bool((far | at_top).all()) else None
