"""Published attention implementations, measured against the truth.

Each entry is a model file tests/realcode/published_<name>.py that builds a
tiny model from a package installed from PyPI at a pinned version (the
``realcode`` extra; .ci/run installs it with --no-deps).  The truth of each
entry was read from the package's source and is checked here against the
package itself (the ``test_truth_*`` tests probe the real modules):

- ``sites``: how many attention computations the model runs;
- ``variant``, ``causal``, ``heads``, ``window``: what each of them is.
  ``window`` is the most keys one query attends to (a causal band's width,
  a symmetric band's 2h + 1, blocks' span, a Swin window's area);
- ``flops_traced`` / ``flops_elsewhere``: ``a.flops`` against
  FlopCounterMode on a real forward (plus the fused-attention term it skips on
  a CPU, tests/oracle.py) at the traced length, and at a length never traced
  with batch 2;
- ``useful_flops``: the sites' useful FLOPs summed, at 8× the traced length,
  against a brute-force count of the (query, key) pairs the code lets through
  (written below from the package's source) × 2·(d_qk + d_v) per pair and
  head.  Linear attention has no pairs to count: its truth is the kernelized
  formula of specs/variants.yaml, 4·B·H·N·r·d_v, plus 2·B·H·N·r where the
  code normalizes.

A property attncost gets wrong today is a strict xfail whose reason says
what it reports beside the truth: when the library gets it right the test
turns XPASS and fails, and the mark comes off.  A package that cannot be
installed or imported skips its entry.
"""
from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch

import attncost

HERE = Path(__file__).parent
# The model files import published_support from here, and the oracle is tests/oracle.py.
for _folder in (HERE, HERE.parent):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

from oracle import count_flops, load_module  # noqa: E402
from published_support import fla_linear_attn_naive, import_timm, require  # noqa: E402

#: Longest one analysis may take before its entry is failed (a guard for CI).
ANALYSIS_LIMIT_S = 90

HEADS, DIM_HEAD, DEPTH = 2, 16, 2
#: Q·Kᵀ and P·V of one (query, key) pair in one head: 2·(d_qk + d_v).
PER_PAIR = 2 * (DIM_HEAD + DIM_HEAD)


# ------------------------------------------------------------------ allowed pairs, by brute force


def _grid(n_q: int, n_k: int | None = None):
    n_k = n_q if n_k is None else n_k
    return torch.arange(n_q)[:, None], torch.arange(n_k)[None, :]


def causal_pairs(n: int) -> int:
    i, j = _grid(n)
    return int((j <= i).sum())


def full_pairs(n: int) -> int:
    return n * n


def causal_band_pairs(past: int) -> Callable[[int], int]:
    """Query i attends to keys i-past..i."""
    def count(n: int) -> int:
        i, j = _grid(n)
        return int(((j <= i) & (i - j <= past)).sum())
    return count


def blocks_pairs(block: int, back: int, forward: int, causal: bool) -> Callable[[int], int]:
    """local-attention's LocalAttention (exact_windowsize=False): a query in
    block b attends to every key of blocks b-back..b+forward that exists,
    and, causal, only to keys j <= i."""
    def count(n: int) -> int:
        i, j = _grid(n)
        bi, bj = i // block, j // block
        ok = (bj >= bi - back) & (bj <= bi + forward)
        if causal:
            ok &= j <= i
        return int(ok.sum())
    return count


def swin_region(x: torch.Tensor, size: int, window: int, shift: int) -> torch.Tensor:
    """Which of the three regions of timm's get_attn_mask a (rolled) row or
    column index falls in: [0, size-window), [size-window, size-shift), the rest."""
    return (x >= size - window).long() + (x >= size - shift).long()


def swin_pairs(rows: int, window: int, shifted: bool) -> Callable[[int], int]:
    """timm SwinTransformerBlock on a rows × n grid of patches (n a multiple of
    the window): tokens attend within their window×window window; in a
    shifted block (grid rolled by window//2) only to the window's tokens of
    the same region; the others get -100 added, a mask."""
    def count(n: int) -> int:
        r = torch.arange(rows)[:, None].expand(rows, n).reshape(-1)
        c = torch.arange(n)[None, :].expand(rows, n).reshape(-1)
        win = (r // window) * (n // window) + c // window
        ok = win[:, None] == win[None, :]
        if shifted:
            shift = window // 2
            label = 3 * swin_region(r, rows, window, shift) + swin_region(c, n, window, shift)
            ok &= label[:, None] == label[None, :]
        return int(ok.sum())
    return count


# ------------------------------------------------------------------ the corpus


@dataclass
class Entry:
    requires: Callable[[], object]
    traced: int          # the length analyze traces
    elsewhere: int       # a length never traced, for the FLOPs
    sites: int
    variant: str
    causal: bool
    #: useful FLOPs of all sites at batch 1 and length n
    useful: Callable[[int], int]
    window: int | None = None


def _pairs(*counts: Callable[[int], int]) -> Callable[[int], int]:
    """Useful FLOPs of softmax sites from their pair counts (one per site)."""
    return lambda n: sum(HEADS * PER_PAIR * count(n) for count in counts)


def _linear(features: int, normalized: bool) -> Callable[[int], int]:
    """Useful FLOPs of DEPTH kernelized sites: 4·H·N·r·d_v (+ 2·H·N·r)."""
    return lambda n: DEPTH * (4 * HEADS * n * features * DIM_HEAD
                              + (2 * HEADS * n * features if normalized else 0))


def _package(name):
    return lambda: require(name)


ENTRIES = {
    # x-transformers 2.31.10: Attend.forward masks causal with a triu mask;
    # attn_flash calls SDPA with is_causal; attn_max_attend_past=16 masks
    # dist = i - j > 16 (x_transformers.py, Attention.forward).
    "xtransformers_default": Entry(_package("x_transformers"), 128, 200, 2, "dense", True,
                                   _pairs(causal_pairs, causal_pairs)),
    "xtransformers_flash": Entry(_package("x_transformers"), 128, 200, 2, "dense", True,
                                 _pairs(causal_pairs, causal_pairs)),
    "xtransformers_alibi": Entry(_package("x_transformers"), 128, 200, 2, "dense", True,
                                 _pairs(causal_pairs, causal_pairs)),
    "xtransformers_window": Entry(_package("x_transformers"), 128, 200, 2, "local", True,
                                  _pairs(causal_band_pairs(16), causal_band_pairs(16)),
                                  window=17),
    # local-attention 1.11.2: blocks of 16, look_around(backward, forward).
    "local_attention_causal": Entry(_package("local_attention"), 128, 176, 2, "local", True,
                                    _pairs(*[blocks_pairs(16, 1, 0, True)] * 2), window=32),
    "local_attention_bidirectional": Entry(_package("local_attention"), 128, 176, 2, "local",
                                           False, _pairs(*[blocks_pairs(16, 1, 1, False)] * 2),
                                           window=48),
    # LocalMHA: exact_windowsize=True, so exactly keys i-16..i.
    "local_transformer": Entry(_package("local_attention"), 128, 200, 2, "local", True,
                               _pairs(causal_band_pairs(16), causal_band_pairs(16)), window=17),
    # performer-pytorch 1.1.4: 24 features, normalized by phi(Q)·sum(phi(K)).
    "performer_bidirectional": Entry(_package("performer_pytorch"), 128, 200, 2, "linear", False,
                                     _linear(24, normalized=True)),
    # The causal form runs a Python loop over t.chunk(128) pieces (pieces of 1
    # token up to N=128, of 2 at N=200): costed from traces at small lengths.
    "performer_causal": Entry(_package("performer_pytorch"), 96, 200, 2, "linear", True,
                              _linear(24, normalized=True)),
    # timm 1.0.31: N patches + a class token, full attention.
    "timm_vit": Entry(import_timm, 64, 40, 2, "dense", False,
                      _pairs(*[lambda n: full_pairs(n + 1)] * 2)),
    # Swin: 8 × N patches, windows of 4×4, block 1 shifted by 2.
    "timm_swin": Entry(import_timm, 32, 48, 2, "local", False,
                       _pairs(swin_pairs(8, 4, False), swin_pairs(8, 4, True)), window=16),
    # The same with timm's fused attention: one SDPA call per block on the windows.
    "timm_swin_fused": Entry(import_timm, 32, 48, 2, "local", False,
                             _pairs(swin_pairs(8, 4, False), swin_pairs(8, 4, True)), window=16),
    # flash-linear-attention 0.6.0 naive references: no feature map (r = d_k = 16),
    # no normalizer (normalize=False, the default).
    "fla_chunk": Entry(fla_linear_attn_naive, 128, 192, 2, "linear", True,
                       _linear(16, normalized=False)),
    # The recurrent form is a Python loop over the N positions: costed from
    # traces at small lengths.
    "fla_recurrent": Entry(fla_linear_attn_naive, 96, 150, 2, "linear", True,
                           _linear(16, normalized=False)),
    # labml_nn 0.5.1: sequence first, scores einsum'd to (queries, keys,
    # batch, heads), softmax over dim 1, causal by subsequent_mask (mha.py).
    "labml_gpt": Entry(_package("labml_nn.transformers.mha"), 128, 200, 2, "dense", True,
                       _pairs(causal_pairs, causal_pairs)),
}

# ------------------------------------------------------------------ where attncost stands

#: (entry, property) -> what attncost says beside the truth, measured on main.
X = {}



def cases(prop: str, only=None):
    out = []
    for name, entry in ENTRIES.items():
        if only is not None and not only(entry):
            continue
        reason = X.get((name, prop))
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        out.append(pytest.param(name, marks=marks, id=name))
    return out


# ------------------------------------------------------------------ running attncost and the oracle


class _TooSlow(BaseException):
    pass


@contextmanager
def _limit(seconds: int):
    main = threading.current_thread() is threading.main_thread()
    if not (main and hasattr(signal, "setitimer")):
        yield
        return

    def alarm(signum, frame):
        raise _TooSlow

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


_ANALYSES: dict[str, object] = {}


def analysed(name: str):
    """attncost's analysis of one entry, done once; a failure is re-raised in
    every test of the entry."""
    entry = ENTRIES[name]
    entry.requires()
    if name not in _ANALYSES:
        try:
            with _limit(ANALYSIS_LIMIT_S):
                _ANALYSES[name] = attncost.analyze(HERE / f"published_{name}.py",
                                                   seq_len=entry.traced, device="cpu")
        except _TooSlow:
            _ANALYSES[name] = RuntimeError(f"analyze took more than {ANALYSIS_LIMIT_S} s")
        except Exception as exc:  # noqa: BLE001 - the tests report it
            _ANALYSES[name] = exc
    got = _ANALYSES[name]
    if isinstance(got, BaseException):
        raise AssertionError(f"attncost.analyze failed: {type(got).__name__}: {got}") from got
    return got


_MODELS: dict[str, tuple] = {}


def oracle_flops(name: str, n: int, batch: int) -> int:
    if name not in _MODELS:
        mod = load_module(HERE / f"published_{name}.py")
        torch.manual_seed(0)
        _MODELS[name] = (mod, mod.build_model().eval())
    mod, model = _MODELS[name]
    torch.manual_seed(0)
    return count_flops(model, mod.example_inputs(n, batch=batch))


def _describe(a) -> str:
    return "; ".join(f"{s.name}: {s.variant} causal={s.causal} heads={s.heads} window={s.window}"
                     for s in a.sites) or "no sites"


# ------------------------------------------------------------------ what attncost must say


@pytest.mark.parametrize("name", cases("sites"))
def test_sites(name):
    a = analysed(name)
    assert len(a.sites) == ENTRIES[name].sites, _describe(a)


@pytest.mark.parametrize("name", cases("variant"))
def test_variant(name):
    a = analysed(name)
    assert a.sites and {s.variant for s in a.sites} == {ENTRIES[name].variant}, _describe(a)


@pytest.mark.parametrize("name", cases("causal"))
def test_causal(name):
    a = analysed(name)
    assert a.sites and {s.causal for s in a.sites} == {ENTRIES[name].causal}, _describe(a)


@pytest.mark.parametrize("name", cases("heads"))
def test_heads(name):
    a = analysed(name)
    assert a.sites and {s.heads for s in a.sites} == {HEADS}, _describe(a)


@pytest.mark.parametrize("name", cases("window", only=lambda e: e.window is not None))
def test_window(name):
    a = analysed(name)
    assert a.sites and {s.window for s in a.sites} == {ENTRIES[name].window}, _describe(a)


@pytest.mark.parametrize("name", cases("flops_traced"))
def test_flops_traced(name):
    a = analysed(name)
    n = ENTRIES[name].traced
    assert a.at(a.flops, n, 1) == oracle_flops(name, n, 1)


@pytest.mark.parametrize("name", cases("flops_elsewhere"))
def test_flops_elsewhere(name):
    a = analysed(name)
    n = ENTRIES[name].elsewhere
    assert a.at(a.flops, n, 2) == oracle_flops(name, n, 2)


@pytest.mark.parametrize("name", cases("useful_flops"))
def test_useful_flops(name):
    a = analysed(name)
    n = 8 * ENTRIES[name].traced
    got = sum(a.at(s.useful_flops, n, 1) for s in a.sites)
    assert got == ENTRIES[name].useful(n), _describe(a)


# ------------------------------------------------------------------ the truth, on the packages


def _weights_of(attend, n: int, d: int = 8) -> torch.Tensor:
    """Which keys each query reaches: attention applied to V = the identity."""
    torch.manual_seed(0)
    q, k, v = torch.randn(1, n, d), torch.randn(1, n, d), torch.eye(n)[None]
    with torch.no_grad():
        return attend(q, k, v)[0] != 0


def _count(allowed: torch.Tensor) -> int:
    return int(allowed.sum())


@pytest.mark.parametrize("name, past", [("xtransformers_default", None),
                                        ("xtransformers_alibi", None),
                                        ("xtransformers_window", 16)])
def test_truth_xtransformers_patterns(name, past):
    require("x_transformers")
    mod = load_module(HERE / f"published_{name}.py")
    torch.manual_seed(0)
    model = mod.build_model().eval()
    n = 48
    with torch.no_grad():
        _, maps = model(mod.example_inputs(n)[0], return_attn=True)
    assert len(maps) == DEPTH
    count = causal_pairs if past is None else causal_band_pairs(past)
    for m in maps:
        assert m.shape[1] == HEADS
        for head in m[0]:
            assert _count(head != 0) == count(n)


def test_truth_labml_causal_weights():
    """labml's MultiHeadAttention keeps its weights, (queries, keys, batch,
    heads): each head's nonzero pairs are the causal ones."""
    require("labml_nn.transformers.mha")
    mod = load_module(HERE / "published_labml_gpt.py")
    torch.manual_seed(0)
    model = mod.build_model().eval()
    n = 48
    with torch.no_grad():
        model(*mod.example_inputs(n))
    for layer in model.layers:
        weights = layer.self_attn.attn
        assert tuple(weights.shape) == (n, n, 1, HEADS)
        for h in range(HEADS):
            assert _count(weights[:, :, 0, h] != 0) == causal_pairs(n)


@pytest.mark.parametrize("causal, back, forward", [(True, 1, 0), (False, 1, 1)])
def test_truth_local_attention_blocks(causal, back, forward):
    local_attention = require("local_attention")
    attend = local_attention.LocalAttention(window_size=16, causal=causal, look_backward=back,
                                            look_forward=forward)
    for n in (64, 96):
        assert _count(_weights_of(attend, n)) == blocks_pairs(16, back, forward, causal)(n)


def test_truth_local_transformer_band():
    local_attention = require("local_attention")
    model = load_module(HERE / "published_local_transformer.py").build_model().eval()
    attends = [m for m in model.modules() if isinstance(m, local_attention.LocalAttention)]
    assert len(attends) == DEPTH
    for attend in attends:
        assert attend.exact_windowsize and (attend.look_backward, attend.look_forward) == (1, 0)
        for n in (64, 72):
            assert _count(_weights_of(attend, n, DIM_HEAD)) == causal_band_pairs(16)(n)


def test_truth_swin_windows():
    import_timm()
    model = load_module(HERE / "published_timm_swin.py").build_model().eval()
    blocks = list(model.layers[0].blocks)
    assert [(b.window_size, b.shift_size) for b in blocks] == [((4, 4), (0, 0)), ((4, 4), (2, 2))]
    n = 32
    assert blocks[0].get_attn_mask(torch.zeros(1, 8, n, 32)) is None
    mask = blocks[1].get_attn_mask(torch.zeros(1, 8, n, 32))
    assert _count(mask == 0) == swin_pairs(8, 4, True)(n)
    assert mask.shape[0] * 16 * 16 == swin_pairs(8, 4, False)(n)


def _depends_on_later(attend, n: int = 12, d: int = 16) -> bool:
    """Does an output position change when a later position's input does?"""
    torch.manual_seed(0)
    q, k, v = (torch.rand(1, HEADS, n, d) for _ in range(3))
    base = attend(q, k, v)
    v2 = v.clone()
    v2[:, :, n // 2] += 1.0
    changed = (attend(q, k, v2) - base).abs().amax(dim=(0, 1, 3)) > 1e-6
    return bool(changed[: n // 2].any())


def test_truth_performer_causality():
    performer_pytorch = require("performer_pytorch")
    for causal in (False, True):
        attend = performer_pytorch.FastAttention(DIM_HEAD, nb_features=24, causal=causal)
        assert _depends_on_later(attend) is (not causal)


def test_performer_sites_name_their_feature_maps():
    """Each causal FAVOR+ site says its random features (nb_features of the
    package's FastAttention) and its head dim, as published_performer_causal.py
    builds them."""
    a = analysed("performer_causal")
    mod = load_module(HERE / "published_performer_causal.py")
    for s in a.sites:
        assert (s.variant, s.causal, s.heads, s.feature_dim, s.head_dim) == \
            ("linear", True, 2, mod.NB_FEATURES, 16)


def _bnhd(fn):
    """fla's functions take (batch, length, heads, dim) and may return (o, state)."""
    def attend(q, k, v):
        out = fn(*(t.transpose(1, 2) for t in (q, k, v)))
        return (out[0] if isinstance(out, tuple) else out).transpose(1, 2)
    return attend


def test_truth_fla_causality():
    naive = fla_linear_attn_naive()
    assert not _depends_on_later(_bnhd(naive.naive_chunk_linear_attn), 128)
    assert not _depends_on_later(_bnhd(naive.naive_recurrent_linear_attn), 12)
