"""Shifted windows read as local attention, and heads read right when a length is a constant.

Oracles, each independent of attncost:
* which (query, key) pairs a shifted-window block lets through, by brute
  force from the model's definition (roll by -s, windows of w, -100 added
  between the two ends of the sequence that share the last window), and
  the real module's own attention weights, read with a hook;
* FlopCounterMode over a real forward, at a traced length and at one never
  traced, with batch 2;
* the head counts and lengths each model or config is built with.
"""
from __future__ import annotations

import json
import textwrap

import pytest
import torch

import attncost
from attncost.detect.graph import GraphContext
from attncost.detect.positions import allowed_positions
from attncost.detect.unfused import _walk_back
from attncost.loader import load
from attncost.patterns.mask import allowed_pairs
from attncost.rules.ops import SOFTMAX_OPS, packet
from attncost.tracing import trace
from conftest import MODELS
from oracle import count_flops, load_module

WINDOW, HEADS, DIM = 8, 2, 32
#: Q·Kᵀ and P·V of one (query, key) pair in one head: 2·(d_qk + d_v).
PER_PAIR = 2 * (2 * DIM // HEADS)

SHIFTED = '''
import torch
import torch.nn as nn

WINDOW, SHIFT, HEADS, DIM = 8, {shift}, 2, 32


class WindowBlock(nn.Module):
    """Attention within windows of WINDOW tokens; shifted, the sequence is
    rolled by -SHIFT first and back after, and -100 is added between the
    tokens of the last window that came from the two ends (Swin, in 1-D)."""

    def __init__(self, shift):
        super().__init__()
        self.shift = shift
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.out = nn.Linear(DIM, DIM)

    def forward(self, x):
        b, n, e = x.shape
        w, h, d = WINDOW, HEADS, DIM // HEADS
        if self.shift:
            x = torch.roll(x, -self.shift, dims=1)
        qkv = self.qkv(x).view(b, n // w, w, 3, h, d).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv.unbind(0)
        scores = q @ k.transpose(-1, -2) * d ** -0.5
        if self.shift:
            region = (torch.arange(n, device=x.device) >= n - self.shift).view(n // w, w)
            apart = region[:, :, None] != region[:, None, :]
            scores = scores + (apart * -100.0)[None, :, None]
        self.weights = scores.softmax(-1)
        out = (self.weights @ v).permute(0, 1, 3, 2, 4).reshape(b, n, e)
        out = self.out(out)
        return torch.roll(out, self.shift, dims=1) if self.shift else out


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([WindowBlock(0), WindowBlock(SHIFT)])

    def forward(self, x):
        for block in self.blocks:
            x = x + block(x)
        return x


def build_model():
    return Model()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, DIM),)
'''


def shifted_truth(n: int, shift: int) -> torch.Tensor:
    """Query i reaches key j (original positions): same window of the rolled
    sequence (rolled position p holds token (p + shift) mod n), and, in a
    shifted block, the same end of the sequence."""
    p = (torch.arange(n) - shift) % n          # where each token sits once rolled
    same = (p[:, None] // WINDOW) == (p[None, :] // WINDOW)
    if shift:
        end = p >= n - shift
        same &= end[:, None] == end[None, :]
    return same


def _write(tmp_path, name: str, source: str):
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


@pytest.fixture(params=[4, 5], ids=["shift4", "shift5"])
def shifted(request, tmp_path):
    shift = request.param
    return shift, _write(tmp_path, f"shifted_{shift}", SHIFTED.format(shift=shift))


def test_truth_matches_the_modules_own_weights(shifted):
    """The brute-force pairs are what the real module lets through."""
    shift, path = shifted
    model = load_module(path).build_model().eval()
    n = 48
    with torch.no_grad():
        model(torch.randn(1, n, DIM))
    for block, s in zip(model.blocks, (0, shift)):
        weights = block.weights[0, :, 0]             # (windows, w, w), first head
        rolled = torch.zeros(n, n, dtype=torch.bool)
        for win in range(n // WINDOW):
            span = slice(win * WINDOW, (win + 1) * WINDOW)
            rolled[span, span] = weights[win] > torch.finfo(torch.float32).tiny
        back = (torch.arange(n) - s) % n               # token i sits at rolled position back[i]
        assert torch.equal(rolled[back][:, back], shifted_truth(n, s))


def test_shifted_windows_are_local_with_their_pairs(shifted):
    shift, path = shifted
    a = attncost.analyze(path, seq_len=64, device="cpu")
    assert [s.variant for s in a.sites] == ["local", "local"]
    assert [s.window for s in a.sites] == [WINDOW, WINDOW]
    assert [s.heads for s in a.sites] == [HEADS, HEADS]
    assert not any(s.causal for s in a.sites)
    n = 512  # 8× the traced length
    for site, s in zip(a.sites, (0, shift)):
        assert a.at(site.useful_flops, n, 1) == HEADS * PER_PAIR * int(shifted_truth(n, s).sum())
    mod = load_module(path)
    torch.manual_seed(0)
    model = mod.build_model().eval()
    for n, batch in ((64, 1), (136, 2)):
        assert a.at(a.flops, n, batch) == count_flops(model, mod.example_inputs(n, batch))


def test_position_probe_follows_the_roll(shifted):
    """The probe pairs original sequence positions, not rolled ones."""
    shift, path = shifted
    loaded = load(path)
    traced = trace(loaded, 64, 1)
    ctx = GraphContext(traced, loaded, 64)
    softmaxes = [n for n in traced.nodes if n.op == "call_function" and packet(n) in SOFTMAX_OPS]
    for softmax, s in zip(softmaxes, (0, shift)):
        qk = _walk_back(softmax.args[0])[0]
        q, k = ctx.product_operands(qk)
        for n in (64, 96):
            got = allowed_positions(ctx, qk, softmax, q, k, n, HEADS)
            assert got is not None and torch.equal(got, shifted_truth(n, s)), (s, n)


@pytest.mark.parametrize("low", [-100.0, -1e4, -1e9, float("-inf")])
def test_a_two_level_additive_mask_blocks_what_softmax_cannot_see(low):
    """A pair is blocked when its softmax weight, the others' scores equal,
    is below float32's smallest normal number (computed here by softmax)."""
    added = torch.tensor([[0.0, low, 0.0, low], [low, 0.0, 0.0, 0.0]])
    weights = torch.softmax(added, dim=-1)
    assert torch.equal(allowed_pairs(added, "additive"),
                       weights >= torch.finfo(torch.float32).tiny)


def test_a_graded_bias_is_not_a_mask():
    """ALiBi's -m·|i - j| reaches -100 far away but varies by degrees: a bias."""
    i = torch.arange(512)
    alibi = -0.5 * (i[:, None] - i[None, :]).abs().float()
    assert bool(allowed_pairs(alibi, "additive").all())
    assert bool(allowed_pairs(torch.full((4, 4), -100.0), "additive").all())


# ------------------------------------------------------------------ heads with a constant length

LATENTS_BMM = '''
import torch
import torch.nn as nn


class Latents(nn.Module):
    """{latents} learned latents read the N tokens, then attend among
    themselves; heads are folded into the batch for bmm: (B·H, L, d)."""

    def __init__(self, dim=32, heads={heads}, latents={latents}):
        super().__init__()
        self.h, self.latents = heads, nn.Parameter(torch.randn(latents, dim))
        self.q1, self.kv1 = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim)
        self.qkv2 = nn.Linear(dim, 3 * dim)

    def _attend(self, q, k, v):
        b, m, e = q.shape
        n, h, d = k.shape[1], self.h, e // self.h
        q = q.reshape(b, m, h, d).transpose(1, 2).reshape(b * h, m, d)
        k = k.reshape(b, n, h, d).transpose(1, 2).reshape(b * h, n, d)
        v = v.reshape(b, n, h, d).transpose(1, 2).reshape(b * h, n, d)
        w = torch.bmm(q, k.transpose(1, 2)).div(d ** 0.5).softmax(-1)
        return torch.bmm(w, v).reshape(b, h, m, d).transpose(1, 2).reshape(b, m, e)

    def forward(self, x):
        lat = self.latents.expand(x.shape[0], -1, -1)
        k, v = self.kv1(x).chunk(2, dim=-1)
        lat = lat + self._attend(self.q1(lat), k, v)
        q, k, v = self.qkv2(lat).chunk(3, dim=-1)
        return lat + self._attend(q, k, v)


def build_model():
    return Latents()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, 32),)
'''

LATENTS_MHA = '''
import torch
import torch.nn as nn


class Model(nn.Module):
    """nn.MultiheadAttention from {latents} learned queries (its bmm path, need_weights)."""

    def __init__(self, dim=32, heads={heads}, latents={latents}):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(latents, dim))
        self.cross = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x):
        lat = self.latents.expand(x.shape[0], -1, -1)
        lat = lat + self.cross(lat, x, x, need_weights=True)[0]
        return lat + self.self_attn(lat, lat, lat, need_weights=True)[0]


def build_model():
    return Model()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, 32),)
'''

LATENTS_PER_HEAD = '''
import torch
import torch.nn as nn


class Model(nn.Module):
    """Weights with a head axis (H, D, d) through einsum, {latents} learned
    queries, heads folded into the batch for bmm."""

    def __init__(self, dim=32, heads={heads}, latents={latents}):
        super().__init__()
        d = dim // heads
        self.h, self.latents = heads, nn.Parameter(torch.randn(latents, dim))
        self.wq, self.wk, self.wv = (nn.Parameter(torch.randn(heads, dim, d)) for _ in range(3))

    def _attend(self, q, k, v):
        fold = lambda t: t.reshape(-1, *t.shape[2:])
        w = torch.bmm(fold(q), fold(k).transpose(1, 2)).softmax(-1)
        return torch.bmm(w, fold(v))

    def forward(self, x):
        lat = self.latents.expand(x.shape[0], -1, -1)
        heads = lambda t, w: torch.einsum("bnd,hde->bhne", t, w)
        out = self._attend(heads(lat, self.wq), heads(x, self.wk), heads(x, self.wv))
        q = heads(lat, self.wq)
        return out.sum() + self._attend(q, heads(lat, self.wk), heads(lat, self.wv)).sum()


def build_model():
    return Model()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, 32),)
'''


@pytest.mark.parametrize("source, heads, latents", [
    (LATENTS_BMM, 4, 24), (LATENTS_BMM, 2, 6), (LATENTS_MHA, 4, 24), (LATENTS_PER_HEAD, 2, 6)],
    ids=["bmm-4x24", "bmm-2x6", "multihead-4x24", "per_head_weights-2x6"])
def test_heads_with_a_constant_query_length(tmp_path, source, heads, latents):
    """Rows B·H·L with L constant: H heads of L queries, not H·L heads of one."""
    path = _write(tmp_path, "latents", source.format(heads=heads, latents=latents))
    a = attncost.analyze(path, seq_len=40, device="cpu")
    got = [(s.heads, a.at(s.query_len, 40, 1), a.at(s.key_len, 40, 1)) for s in a.sites]
    assert got == [(heads, latents, 40), (heads, latents, latents)]
    mod = load_module(path)
    torch.manual_seed(0)
    model = mod.build_model().eval().requires_grad_(False)  # the latents enter as inputs
    for n, batch in ((40, 1), (57, 2)):
        assert a.at(a.flops, n, batch) == count_flops(model, mod.example_inputs(n, batch))


# ------------------------------------------------------------------ transformers configs, eager

WHISPER = dict(model_type="whisper", architectures=["WhisperForConditionalGeneration"],
               d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
               decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=8,
               max_source_positions=24, max_target_positions=256, vocab_size=128, pad_token_id=0,
               bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
CLIP = dict(model_type="clip", architectures=["CLIPModel"], projection_dim=16,
            text_config=dict(hidden_size=32, intermediate_size=64, num_attention_heads=4,
                             num_hidden_layers=2, vocab_size=128, max_position_embeddings=256),
            vision_config=dict(hidden_size=32, intermediate_size=64, num_attention_heads=2,
                               num_hidden_layers=2, image_size=32, patch_size=8))
T5 = dict(model_type="t5", architectures=["T5ForConditionalGeneration"], d_model=32, d_kv=8,
          d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4, vocab_size=128,
          relative_attention_num_buckets=8)

#: name -> (config, [(heads, query length, key length) of each site at N=n], sorted)
CONFIGS = {
    # encoder: 24 positions (its input features are fixed), 4 heads; decoder: 2 heads.
    "whisper": (WHISPER, lambda n: sorted([(4, 24, 24)] * 2 + [(2, n, n), (2, n, 24)] * 2)),
    # vision: N patches + a class token, 2 heads; text: N tokens, 4 heads.
    "clip": (CLIP, lambda n: sorted([(2, n + 1, n + 1)] * 2 + [(4, n, n)] * 2)),
    "t5": (T5, lambda n: sorted([(4, n, n)] * 6)),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_eager_heads_of_configs(tmp_path, name):
    fields, expected = CONFIGS[name]
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(fields))
    a = attncost.analyze(folder, seq_len=40, kv_cache=False, device="cpu",
                         attn_implementation="eager")
    for n in (40, 67):
        got = sorted((s.heads, a.at(s.query_len, n, 1), a.at(s.key_len, n, 1)) for s in a.sites)
        assert got == expected(n), (name, n)


WRITTEN_MASK = '''
import torch
import torch.nn as nn


class Model(nn.Module):
    """A mask written into slices of zeros (as Swin builds its shift mask):
    queries of the first half do not see keys of the second half."""

    def __init__(self, dim=32, heads=2):
        super().__init__()
        self.h, self.qkv = heads, nn.Linear(dim, 3 * dim)

    def forward(self, x):
        b, n, e = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.h, -1).permute(2, 0, 3, 1, 4).unbind(0)
        mask = torch.zeros(n, n, device=x.device)
        mask[: n // 2, n // 2:] = {blocked}
        w = (q @ k.transpose(-1, -2) + mask).softmax(-1)
        return (w @ v).transpose(1, 2).reshape(b, n, e)


def build_model():
    return Model()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, 32),)
'''


@pytest.mark.parametrize("blocked", ["float('-inf')", "-100.0"])
def test_a_mask_written_in_place_is_read(tmp_path, blocked):
    path = _write(tmp_path, "written", WRITTEN_MASK.format(blocked=blocked))
    a = attncost.analyze(path, seq_len=64, device="cpu")
    (site,) = a.sites
    n = 512
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    pairs = int((~((i < n // 2) & (j >= n // 2))).sum())
    assert a.at(site.useful_flops, n, 1) == HEADS * PER_PAIR * pairs


def test_a_causal_mask_on_groups_folded_into_the_batch_is_each_groups_triangle():
    """Groups of the sequence folded into the batch, each under its own
    causal mask: the site's queries are the N tokens, its keys one group's
    N/G; the useful work is G triangles of N/G, not one of N (which would be
    more than the site computes).  In sequence positions, query i meets the
    earlier keys of its group (i, i − G, i − 2G, ...: the Sparse
    Transformer's strided pattern), 1/G of the causal pairs: sparse."""
    cg = load_module(MODELS / "causal_groups.py")
    a = attncost.analyze(MODELS / "causal_groups.py", seq_len=64, device="cpu")
    assert [(s.variant, s.causal) for s in a.sites] == [("sparse", True)] * 2
    assert all(s.complexity == "N*k*d" for s in a.sites)
    per_pair = cg.HEADS * 2 * (cg.DIM_QK + cg.DIM_V)
    for n in (64, 200):
        strided = sum(1 for i in range(n) for j in range(i + 1) if (i - j) % cg.GROUPS == 0)
        m = n // cg.GROUPS
        assert strided == cg.GROUPS * m * (m + 1) // 2
        for s in a.sites:
            assert a.at(s.useful_flops, n, 1) == cg.GROUPS * m * (m + 1) // 2 * per_pair, n
            assert a.at(s.useful_flops, n, 1) <= a.at(s.flops, n, 1)
    torch.manual_seed(0)
    model = cg.build_model().eval().requires_grad_(False)
    for n, b in ((64, 1), (200, 2)):
        assert a.at(a.flops, n, b) == count_flops(model, cg.example_inputs(n, b)), (n, b)


def test_a_blocks_mask_is_read_at_a_length_where_the_trace_runs():
    """A trace whose range (64..71) holds more lengths than its conditions
    allow (N a multiple of 16): the mask, made from each block's positions,
    is read at a length where the trace runs (64, not 71, where the graph's
    reshape into blocks fails), and each block's triangle is the useful work."""
    pb = load_module(MODELS / "pinned_blocks.py")
    a = attncost.analyze(MODELS / "pinned_blocks.py", seq_len=64, device="cpu")
    (s,) = a.sites
    assert (s.variant, s.causal, s.window) == ("local", True, pb.BLOCK)
    assert not any("not evaluated" in note for note in s.notes), s.notes
    triangle = pb.BLOCK * (pb.BLOCK + 1) // 2
    per_pair = pb.HEADS * 2 * (pb.DIM_HEAD + pb.DIM_HEAD)
    assert a.at(s.useful_flops, 64, 1) == 64 // pb.BLOCK * triangle * per_pair
    torch.manual_seed(0)
    model = pb.build_model().eval().requires_grad_(False)
    for b in (1, 2):
        assert a.at(a.flops, 64, b) == count_flops(model, pb.example_inputs(64, b)), b


def test_a_size_made_a_python_int_stays_a_size():
    # int(2·n − 1) sizes a relative-position table (segment-anything's
    # get_rel_pos): torch.compile reads int() of a size as torch.sym_int, and
    # so does the trace, which then holds at every multiple of 4 but 16 (the
    # table is not resized there); the windows of 4 are read as windows
    rt = load_module(MODELS / "resized_position_table.py")
    a = attncost.analyze(MODELS / "resized_position_table.py", seq_len=64, device="cpu")
    assert [(s.variant, s.causal, s.window) for s in a.sites] == \
        [("local", False, rt.WINDOW), ("dense", False, None)]
    assert a.n_range[1] is None and a.n_range[0] <= rt.WINDOW
    assert a.valid_for().endswith(f"N a multiple of {rt.WINDOW}, N ≠ {rt.TABLE_LEN}")
    assert not a.notes, a.notes
    local = a.sites[0]
    per_pair = rt.HEADS * 2 * (rt.DIM_HEAD + rt.DIM_HEAD)
    torch.manual_seed(0)
    model = rt.build_model().eval().requires_grad_(False)
    for n, b in ((64, 1), (96, 2)):
        assert a.at(local.useful_flops, n, b) == b * n * rt.WINDOW * per_pair
        assert a.at(a.flops, n, b) == count_flops(model, rt.example_inputs(n, b)), (n, b)


def test_a_branch_on_the_tables_own_length_at_the_same_cost_holds_for_every_n():
    # traced at N = 64, the length of the position table, the code compares N
    # with it; analysed a step away and found to cost the same at 64, the
    # formulas hold at every N; where the branch costs less at 64, they do not
    path = MODELS / "native_grid_positions.py"
    grid = load_module(path)
    a = attncost.analyze(path, seq_len=grid.POSITIONS, device="cpu")
    assert a.n_range == (1, None) and a.valid_for() is None, (a.n_range, a.valid_for())
    assert any("another branch" in note for note in a.notes), a.notes
    torch.manual_seed(0)
    model = grid.build_model().eval().requires_grad_(False)
    for n, b in ((grid.POSITIONS, 1), (100, 2)):
        assert a.at(a.flops, n, b) == count_flops(model, grid.example_inputs(n, b)), (n, b)
        assert a.at(a.sites[0].useful_flops, n, b) == \
            b * grid.HEADS * n * n * 2 * (2 * grid.DIM_HEAD)


def test_a_branch_on_the_tables_own_length_that_costs_less_holds_there_alone(tmp_path):
    path = tmp_path / "cheaper_at_grid.py"
    source = (MODELS / "native_grid_positions.py").read_text()
    path.write_text(source.replace("SKIP_AT_GRID = False", "SKIP_AT_GRID = True"))
    grid = load_module(path)
    a = attncost.analyze(path, seq_len=grid.POSITIONS, device="cpu")
    assert a.n_range == (grid.POSITIONS, grid.POSITIONS)
    torch.manual_seed(0)
    model = grid.build_model().eval().requires_grad_(False)
    for n, b in ((grid.POSITIONS, 1), (100, 2)):  # 100: analysed again there
        assert a.at(a.flops, n, b) == count_flops(model, grid.example_inputs(n, b)), (n, b)


def test_factorized_rows_are_local_and_columns_strided():
    """Row attention: each query the earlier keys of its row of L (local,
    window L); column attention: the earlier keys L, 2L, ... back (sparse).
    Pairs counted one by one in sequence positions."""
    fs = load_module(MODELS / "factorized_strided.py")
    a = attncost.analyze(MODELS / "factorized_strided.py", seq_len=64, device="cpu")
    rows, cols = a.sites[0::2], a.sites[1::2]
    assert [(s.variant, s.causal, s.window) for s in rows] == [("local", True, fs.L)] * 2
    assert [(s.variant, s.causal) for s in cols] == [("sparse", True)] * 2
    per_pair = fs.HEADS * 2 * (fs.DH + fs.DH)
    for n in (64, 160):
        row_pairs = sum(1 for i in range(n) for j in range(i + 1) if i // fs.L == j // fs.L)
        col_pairs = sum(1 for i in range(n) for j in range(i + 1) if (i - j) % fs.L == 0)
        assert a.at(rows[0].useful_flops, n, 1) == row_pairs * per_pair, n
        assert a.at(cols[0].useful_flops, n, 1) == col_pairs * per_pair, n
    torch.manual_seed(0)
    model = fs.build_model().eval()
    for n, b in ((64, 1), (96, 2)):
        assert a.at(a.flops, n, b) == count_flops(model, fs.example_inputs(n, b)), (n, b)
