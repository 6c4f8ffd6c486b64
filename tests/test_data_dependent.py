"""Models whose code turns sizes into Python ints or reads values from data.

Each model is written here and analysed from a file; the oracle is
FlopCounterMode over a real forward at a length the trace never saw (and at
the traced one), or a count derived by hand from the shapes.
"""
from __future__ import annotations

import textwrap

import pytest
import torch

import attncost
from attncost.errors import ModelError
from attncost.expr import value_at
from attncost.loader import load
from attncost.memory import peak_memory
from attncost.memory.liveness import graph_allocations
from attncost.rules.ops import FLEX_ATTENTION
from attncost.tracing import trace
from attncost.tracing.einx_sizes import _size_expression
from conftest import MODELS
from memtrack import measure
from oracle import count_flops, load_module

HEADER = """
import torch
from torch import nn
DIM, HEADS, D = 64, 2, 16
def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, DIM),)
def build_model():
    return Model()
"""


def write_model(tmp_path, name: str, body: str, header: str = HEADER):
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(header) + textwrap.dedent(body))
    return path


def oracle(path, n: int, batch: int) -> int:
    mod = load_module(path)
    torch.manual_seed(0)
    model = mod.build_model().eval()
    return count_flops(model, mod.example_inputs(n, batch=batch))


def assert_flops(a, path, lengths):
    for n, b in lengths:
        assert a.at(a.flops, n, b) == oracle(path, n, b), (n, b)


# ------------------------------------------------------------------ einx sizes stay symbolic

EINX = """
import einx
class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(DIM, 3 * HEADS * D, bias=False)
        self.slopes = nn.Parameter(torch.ones(HEADS, 1, 1))
    def forward(self, x):
        n = x.shape[1]
        q, k, v = einx.id("b n (three h d) -> three b h n d", self.qkv(x), three=3, h=HEADS)
        pos = torch.arange(n, device=x.device)
        bias = -einx.subtract("j, i -> 1 i j", pos, pos).abs() * self.slopes
        scores = torch.einsum("bhid,bhjd->bhij", q, k) + bias
        out = scores.softmax(-1) @ v
        return einx.id("b h (c w) d -> b c w (h d)", out, w=8).sum(2)
"""


def test_einx_keeps_the_length_symbolic(tmp_path):
    path = write_model(tmp_path, "einx_model", EINX)
    a = attncost.analyze(path, seq_len=128, device="cpu")
    # A trace that fixed N to 128 would hold there only (or refuse to run).
    assert a.n_range[1] is None or a.n_range[1] > 200
    assert_flops(a, path, [(128, 1), (200, 2)])


def test_einx_literal_that_is_not_a_product_of_sizes_is_refused():
    # 128 scaled to 128·1009 is the size; 130 → 128·1009 + 2 is N + 2: not a product.
    assert _size_expression(128, 128 * 1009, [128]) is not None
    assert _size_expression(130, 128 * 1009 + 2, [128]) is None
    assert _size_expression(7, 7, [128]) is None


CACHING = """
class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(DIM, DIM)
        self.positions = None
    def forward(self, x):
        n = x.shape[1]
        if self.positions is None or self.positions.shape[0] < n:
            self.positions = torch.arange(n, device=x.device)
            self.register_buffer("cached", torch.zeros(n, DIM), persistent=False)
        return self.proj(x) + self.cached[:n] + self.positions[:n, None]
"""


def test_state_stored_while_tracing_is_undone(tmp_path):
    path = write_model(tmp_path, "caching", CACHING)
    loaded = load(path)
    trace(loaded, 96)
    assert loaded.module.positions is None and "cached" not in dict(loaded.module.named_buffers())
    a = attncost.analyze(path, seq_len=96, device="cpu")
    assert a.memory.liveness == "eager replay", a.memory.notes


# ------------------------------------------------------------------ sizes through 0-d tensors

CHUNKS = """
W = 8
class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(DIM, 3 * DIM, bias=False)
    def forward(self, x):
        b, n, _ = x.shape
        chunks = torch.div(n, W, rounding_mode="trunc")
        q, k, v = self.qkv(x).chunk(3, -1)
        q, k, v = (t.view(b, chunks, W, DIM) for t in (q, k, v))
        out = (q @ k.transpose(-1, -2)).softmax(-1) @ v
        last = chunks - 1
        return out.reshape(b, n, DIM)[:, : last * W]
"""


def test_a_length_computed_as_a_tensor_stays_symbolic(tmp_path):
    path = write_model(tmp_path, "chunks", CHUNKS)
    a = attncost.analyze(path, seq_len=128, device="cpu")
    assert a.n_range[1] is None
    assert_flops(a, path, [(128, 1), (256, 2)])


# ------------------------------------------------------------------ values read from data

PAD = """
class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(DIM, DIM, bias=False)
        self.extra = nn.Linear(DIM, DIM, bias=False)
    def forward(self, x):
        y = self.proj(x)
        if (x > 100).any().item():  # never with randn inputs
            y = self.extra(y)
        return y
"""


def test_branch_on_input_data_is_fixed_as_the_inputs_give_it(tmp_path):
    path = write_model(tmp_path, "pad", PAD)
    a = attncost.analyze(path, seq_len=128, device="cpu")
    assert a.n_range[1] is None
    fixed = [note for note in a.notes if "read from data" in note]
    assert len(fixed) == 1 and "fixed as the example inputs give it: 0" in fixed[0], a.notes
    # One projection: 2·B·N·DIM·DIM, by hand and by the oracle.
    assert a.at(a.flops, 300, 2) == 2 * 2 * 300 * 64 * 64 == oracle(path, 300, 2)


COUNT = """
class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(DIM, DIM, bias=False)
        self.extra = nn.Linear(DIM, DIM, bias=False)
    def forward(self, x):
        kept = (x[0, ::STEP, 0] > -100).sum().item()  # every STEP-th position: N / STEP
        y = self.proj(x)
        if kept > 50:
            y = self.extra(y)
        return y
"""


def test_a_data_value_that_changes_with_n_holds_the_trace_to_its_length(tmp_path):
    path = write_model(tmp_path, "count", "STEP = 2\n" + COUNT)
    a = attncost.analyze(path, seq_len=192, device="cpu")
    assert a.n_range == (192, 192)
    note = next(n for n in a.notes if "read from data" in n)
    assert "96 at N=192" in note and "48 at N=96" in note and "traced N only" in note
    assert a.at(a.flops, 192, 1) == oracle(path, 192, 1)


def test_a_length_read_from_data_is_n_and_its_branches_bound_n(tmp_path):
    """A count of every position is N at each length read: it is read as N,
    and the branch taken on it (``kept > 50``, a runtime assertion on the
    value) becomes the condition N > 50, past which the trace holds."""
    path = write_model(tmp_path, "count", "STEP = 1\n" + COUNT)
    a = attncost.analyze(path, seq_len=96, device="cpu")
    assert a.n_range == (51, None)
    note = next(n for n in a.notes if "read from data" in n)
    assert "96 at N=96" in note and "48 at N=48" in note and "read as N" in note
    for n, batch in ((96, 1), (300, 2), (40, 1)):  # at 40 the branch is not taken
        assert a.at(a.flops, n, batch) == oracle(path, n, batch), n


#: PAD with log2(N) more projections: levels that no polynomial in N fits
LEVELS = "import math\n" + PAD.replace("        y = self.proj(x)\n", """\
        y = self.proj(x)
        for _ in range(int(math.log2(x.shape[1]))):
            y = y + self.proj(y)
""")


def test_a_branch_on_data_in_a_trace_at_one_length_is_fixed_as_the_inputs_give_it(tmp_path):
    """A model that takes its length as a number, with costs no polynomial
    fits (log2(N) levels), is traced at the requested length alone; a
    branch on its input's data there is decided as in a symbolic trace."""
    path = write_model(tmp_path, "levels", LEVELS)
    a = attncost.analyze(path, seq_len=128, device="cpu")
    assert a.n_range == (128, 128)
    fixed = [note for note in a.notes if "read from data" in note]
    assert fixed == ["a value read from data (a tensor's .item()) was fixed as the example "
                     "inputs give it: 0 (0 at N=128)"], a.notes
    # 1 + log2(128) projections of 2·B·N·DIM·DIM each, by hand and by the oracle
    assert a.at(a.flops, 128, 1) == 8 * 2 * 128 * 64 * 64 == oracle(path, 128, 1)


WEIGHTS = """
class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(DIM, DIM, bias=False)
    def forward(self, x):
        if (self.proj.weight > 0).any().item():
            return self.proj(x)
        return x
"""


def test_a_branch_on_weights_is_one_clear_line(tmp_path):
    path = write_model(tmp_path, "weights", WEIGHTS)
    with pytest.raises(ModelError) as err:
        attncost.analyze(path, seq_len=64, device="cpu")
    message = str(err.value)
    assert "\n" not in message and "weights" in message and ".item()" in message


# ------------------------------------------------------------------ content-based routing

ROUTING_TOPK = """
CLUSTERS = 4
class Routing(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(DIM, 3 * HEADS * D, bias=False)
        self.centroids = nn.Parameter(torch.randn(HEADS, CLUSTERS, D))
        self.out = nn.Linear(HEADS * D, DIM, bias=False)
    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, HEADS, D).permute(2, 0, 3, 1, 4)
        w = n // CLUSTERS
        sim = torch.einsum("bhnd,hcd->bhcn", q, self.centroids)
        idx = sim.topk(w, dim=-1).indices.reshape(b, HEADS, CLUSTERS * w)
        at = idx[..., None].expand(-1, -1, -1, D)
        qc, kc, vc = (t.gather(2, at).view(b, HEADS, CLUSTERS, w, D) for t in (q, k, v))
        attn = (qc @ kc.transpose(-1, -2) * D ** -0.5).softmax(-1)
        oc = (attn @ vc).reshape(b, HEADS, CLUSTERS * w, D)
        out = torch.zeros_like(q).scatter_add(2, at, oc)
        count = torch.zeros(b, HEADS, n, 1).scatter_add(2, idx[..., None], torch.ones_like(oc[..., :1]))
        out = out / count.clamp(min=1)
        return self.out(out.transpose(1, 2).reshape(b, n, HEADS * D))
class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(Routing() for _ in range(2))
    def forward(self, x):
        for layer in self.layers:
            x = x + layer(x)
        return x
"""

ROUTING_SORTED = """
CLUSTERS = 4
class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(DIM, 3 * HEADS * D, bias=False)
        self.centroids = nn.Parameter(torch.randn(CLUSTERS, D))
    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, HEADS, D).permute(2, 0, 3, 1, 4)
        cluster = (q @ self.centroids.t()).argmax(-1)                # (b, h, n)
        order = (cluster * n + torch.arange(n)).argsort(-1)
        at = order[..., None].expand(-1, -1, -1, D)
        w = n // CLUSTERS
        qs, ks, vs = (t.gather(2, at).view(b, HEADS, CLUSTERS, w, D) for t in (q, k, v))
        out = ((qs @ ks.transpose(-1, -2)).softmax(-1) @ vs).reshape(b, HEADS, n, D)
        unsorted = torch.empty_like(out).scatter(2, at, out)
        return unsorted.transpose(1, 2).reshape(b, n, HEADS * D)
"""


@pytest.mark.parametrize("name, body", [("routing_topk", ROUTING_TOPK),
                                        ("routing_sorted", ROUTING_SORTED)],
                         ids=["topk", "sorted"])
def test_routing_into_fixed_size_clusters_analyses(tmp_path, name, body):
    path = write_model(tmp_path, name, body)
    a = attncost.analyze(path, seq_len=256, device="cpu")
    assert a.n_range[1] is None and a.sites
    assert_flops(a, path, [(256, 1), (384, 2)])
    # Which keys a query meets is chosen by the input (a top-k or a sort of
    # routing scores): sparse, content-based.  Each of the N queries of each
    # of the 2 heads meets the N/4 keys of its cluster, every one of them used.
    for site in a.sites:
        assert (site.variant, site.content_based, site.causal, site.heads) == \
            ("sparse", True, False, HEADS_OF_TEST)
        for n in (256, 2048):
            assert a.at(site.useful_flops, n, 1) == 2 * HEADS_OF_TEST * n * (n // 4) * (16 + 16)


HEADS_OF_TEST = 2

#: Clusters chosen by the input, applied as a boolean mask over all N×N
#: scores (with a causal one, or with a float bias computed from the input).
CONTENT_MASK = """
CLUSTERS = 4
class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(DIM, 3 * HEADS * D, bias=False)
        self.centroids = nn.Parameter(torch.randn(CLUSTERS, D))
        self.gate = nn.Linear(DIM, HEADS)
    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, HEADS, D).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2)
        causal = torch.ones(n, n, dtype=torch.bool).tril()
        if MODE == "clusters":
            cq, ck = ((t @ self.centroids.t()).argmax(-1) for t in (q, k))
            allowed = (cq[..., :, None] == ck[..., None, :]) & causal
            scores = scores.masked_fill(~allowed, float("-inf"))
        elif MODE == "ranked":  # a float mask keeping the 8 keys a gate ranks highest (Doge)
            rank = self.gate(x).transpose(1, 2)[..., None, :].expand(b, HEADS, n, n)
            rank = rank.masked_fill(~causal, float("-inf"))
            kept = torch.zeros_like(rank).scatter(-1, rank.topk(min(8, n), dim=-1).indices, 1.0)
            bias = torch.zeros_like(rank).masked_fill(kept == 0, torch.finfo(rank.dtype).min)
            scores = scores + bias
        else:  # a decay computed from the input: it weighs pairs, it blocks none
            decay = torch.nn.functional.logsigmoid(self.gate(x)).transpose(1, 2).cumsum(-1)
            scores = scores + (decay[..., :, None] - decay[..., None, :])
            scores = scores.masked_fill(~causal, float("-inf"))
        out = scores.softmax(-1) @ v
        return out.transpose(1, 2).reshape(b, n, HEADS * D)
"""


@pytest.mark.parametrize("mode, content", [("clusters", True), ("decay", False)])
def test_a_mask_chosen_by_the_input_is_content_based(tmp_path, mode, content):
    path = write_model(tmp_path, mode, f"MODE = {mode!r}\n" + CONTENT_MASK)
    a = attncost.analyze(path, seq_len=128, device="cpu")
    (site,) = a.sites
    assert (site.variant, site.content_based, site.causal) == \
        ("sparse" if content else "dense", content, True)
    # At most the causal pairs: N(N+1)/2 per head, 2·(d + d_v) FLOPs each.
    n = 1024
    assert a.at(site.useful_flops, n, 1) == HEADS_OF_TEST * n * (n + 1) // 2 * 2 * (16 + 16)
    assert_flops(a, path, [(128, 1), (96, 2)])


def test_a_float_mask_from_a_ranking_of_the_input_is_content_based(tmp_path):
    # the keys kept are the top 8 of a gate computed from the input, their
    # mask a float bias (0 or the dtype's minimum): the input chooses them
    path = write_model(tmp_path, "ranked", "MODE = 'ranked'\n" + CONTENT_MASK)
    a = attncost.analyze(path, seq_len=128, device="cpu")
    (site,) = a.sites
    assert (site.variant, site.content_based) == ("sparse", True)
    assert_flops(a, path, [(128, 1), (96, 2)])


# ------------------------------------------------------------------ Longformer


def _longformer(write_config):
    return write_config("longformer", model_type="longformer", hidden_size=64,
                        num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                        attention_window=[16, 16], vocab_size=100, max_position_embeddings=1030,
                        pad_token_id=1)


def test_longformer_analyses_under_eager(write_config):
    folder = _longformer(write_config)
    a = attncost.analyze(folder, seq_len=256, attn_implementation="eager", device="cpu",
                         dtype="float32")
    assert any("read from data" in n and ": 0 " in n for n in a.notes), a.notes
    # The replay decides the same branch, so memory is the eager replay's.
    assert a.memory.liveness == "eager replay", a.memory.notes
    from transformers import LongformerConfig, LongformerModel

    config = LongformerConfig.from_pretrained(folder)
    config._attn_implementation = "eager"
    model = LongformerModel(config).eval()
    for n, b in ((256, 1), (384, 2)):  # multiples of the window, as the trace's guards say
        ids = torch.randint(3, 100, (b, n))
        assert a.at(a.flops, n, b) == count_flops(model, (ids,)), (n, b)
        assert a.memory.intermediate_at(n, b) == measure(model, (ids,)).peak_intermediate_bytes
    # Sliding chunks (queries and keys cut into overlapping chunks, the
    # scores padded into diagonals): each query attends to the keys at most
    # attention_window / 2 = 8 positions away, found through the values.
    assert [(t.variant, t.causal, t.window, t.heads) for t in a.sites] == \
        [("local", False, 17, 2)] * 2
    n = 1024  # the model's positions stop at 1,030
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    pairs = int(((i - j).abs() <= 8).sum())
    d = 64 // 2
    for site in a.sites:
        assert a.at(site.useful_flops, n, 1) == 2 * 2 * (d + d) * pairs


def test_longformer_whose_positions_stop_at_510_is_probed_where_it_runs(write_config):
    """max_position_embeddings 512 with RoBERTa's offset of 2: the model runs
    up to 510 tokens, so only the 256-token probe reads its pairs (the
    longer probes raise)."""
    folder = write_config("longformer_512", model_type="longformer", hidden_size=64,
                          num_hidden_layers=1, num_attention_heads=2, intermediate_size=128,
                          attention_window=[16], vocab_size=100, max_position_embeddings=512,
                          pad_token_id=1)
    a = attncost.analyze(folder, seq_len=256, attn_implementation="eager", device="cpu",
                         dtype="float32")
    (site,) = a.sites
    assert (site.variant, site.causal, site.window) == ("local", False, 17)
    n = 496  # the longest multiple of the window the positions allow
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    pairs = int(((i - j).abs() <= 8).sum())
    assert a.at(site.useful_flops, n, 1) == 2 * 2 * (32 + 32) * pairs


#: Longformer's window (512 keys, 256 either side) is longer than the
#: lengths analysed: the model pads the sequence to a multiple of it
LONGFORMER = dict(model_type="longformer", architectures=["LongformerForMaskedLM"],
                  hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                  intermediate_size=128, vocab_size=128, max_position_embeddings=520,
                  attention_window=512, pad_token_id=1, bos_token_id=0, eos_token_id=2)


def _band_pairs(n: int, half: int) -> int:
    """(query, key) pairs at most ``half`` positions apart, by brute force."""
    i = torch.arange(n)
    return int(((i[:, None] - i[None, :]).abs() <= half).sum())


def test_a_window_longer_than_the_sequence_is_a_window(write_config):
    """Padded to one window of 512, the sequence is as long at every N up to
    512: a guard that says so (the padded length over its count of windows
    is 512) fixes no length, and the trace holds for every N to 512.  The
    site is the local window of 513 keys; what it lets through is the band
    of 256 either side among the real tokens (the padding is masked),
    counted by brute force, at N=64 (inside the band) and N=400 (beyond)."""
    folder = write_config("longformer", **LONGFORMER)
    a = attncost.analyze(folder, seq_len=64, attn_implementation="eager", device="cpu",
                         dtype="float32")
    assert [(s.variant, s.causal, s.window) for s in a.sites] == [("local", False, 513)]
    assert a.holds_at(400, 2)
    model = _eager(folder, "LongformerForMaskedLM").requires_grad_(False)
    for n, batch in ((64, 1), (400, 2)):
        ids = torch.randint(4, 128, (batch, n))
        assert a.at(a.flops, n, batch) == count_flops(model, (ids,)), n
        per_pair = 4 * 2 * (16 + 16)  # 4 heads of 16: 2·(d + d_v) a pair and head
        assert a.at(a.useful_attention_flops, n, batch) == \
            batch * per_pair * _band_pairs(n, 256), n


# ------------------------------------------------------------------ LongT5


def _eager(folder, architecture: str):
    """The real model of a config folder, eager, with random weights."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(folder)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    return getattr(transformers, architecture)(config).eval()


def test_longt5_local_attention_reads_its_window(write_config):
    """LongT5's local attention pads N to blocks of radius + 1 = 9 and lets
    each query meet the keys of its block and the two beside it (27
    computed) less those |i - j| >= 9 apart (_mask_local_attention_mask):
    17 keys, a band; its FLOPs per padded block read as ceiling(N/9)."""
    folder = write_config("longt5", model_type="longt5", architectures=["LongT5EncoderModel"],
                          d_model=32, d_kv=8, num_heads=4, num_layers=2, d_ff=64, vocab_size=128,
                          local_radius=8, encoder_attention_type="local")
    # in bfloat16 (the default), whose position codes are exact up to 256 only
    a = attncost.analyze(folder, seq_len=64, attn_implementation="eager", device="cpu")
    assert [(s.variant, s.causal, s.window, s.heads) for s in a.sites] == \
        [("local", False, 17, 4)] * 2
    assert all("ceiling(N/9)" in str(s.flops) for s in a.sites)
    n = 512
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    pairs = int(((i - j).abs() < 9).sum())
    for site in a.sites:  # 2·(8 + 8) FLOPs per pair and head
        assert a.at(site.useful_flops, n, 1) == 4 * 2 * (8 + 8) * pairs
    model = _eager(folder, "LongT5EncoderModel")
    for n, b in ((64, 1), (100, 2)):
        assert a.at(a.flops, n, b) == count_flops(model, (torch.randint(0, 128, (b, n)),))


# ------------------------------------------------------------------ BigBird


BIGBIRD = dict(model_type="big_bird", architectures=["BigBirdModel"], hidden_size=32,
               num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=100,
               max_position_embeddings=512, attention_type="block_sparse", block_size=8,
               num_random_blocks=2)


def _bigbird_pairs(n: int, block: int = 8, random: int = 2) -> int:
    """(query, key) pairs BigBird's block-sparse attention computes per head
    (modeling_big_bird.py, bigbird_block_sparse_attention): the first and
    last query blocks against every key; the second against blocks 0, 1, 2,
    the last and ``random`` picked ones, the next-to-last likewise; every
    other block against its 3 neighbours, the first and last blocks and
    ``random`` picked ones."""
    blocks = n // block
    return (2 * block * n + 2 * block * (4 + random) * block
            + (blocks - 4) * block * (5 + random) * block)


def test_bigbird_block_sparse_is_one_sparse_site_per_layer(write_config):
    """Past (5 + 2·random)·block tokens BigBird runs its block-sparse
    attention: five pieces of the queries, the middle one's scores
    concatenated from four products, one softmax.  Below that it swaps in
    full attention for good, which a trace at a short length must not leave
    behind."""
    folder = write_config("big_bird", **BIGBIRD)
    a = attncost.analyze(folder, seq_len=128, attn_implementation="eager", device="cpu",
                         dtype="float32")
    assert [(s.variant, s.implementation, s.heads, s.causal) for s in a.sites] == \
        [("sparse", "block-sparse", 4, False)] * 2
    for site in a.sites:  # Q·Kᵀ and P·V: 2·(8 + 8) FLOPs per pair and head
        assert a.at(site.flops, 128, 1) == 4 * 2 * (8 + 8) * _bigbird_pairs(128)
    model = _eager(folder, "BigBirdModel")
    for n, b in ((128, 1), (192, 2)):
        assert a.at(a.flops, n, b) == count_flops(model, (torch.randint(3, 100, (b, n)),))


def test_longformer_under_sdpa_names_the_implementation_that_works(write_config):
    """sdpa asked for by name: refused, naming eager; none asked for: eager,
    as transformers builds Longformer, said in the notes."""
    from attncost.loader import load

    folder = _longformer(write_config)
    with pytest.raises(ModelError) as err:
        attncost.analyze(folder, seq_len=256, device="cpu", attn_implementation="sdpa")
    assert "\n" not in str(err.value) and "--attn-implementation eager" in str(err.value)
    loaded = load(folder)
    assert loaded.attn_implementation == "eager"
    assert any("no sdpa attention" in note for note in loaded.notes)


# ------------------------------------------------------------------ FlexAttention's memory

FLEX = """
from torch.nn.attention.flex_attention import flex_attention
def bias(score, b, h, q_idx, kv_idx):
    return score + (q_idx - kv_idx)
class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(DIM, 3 * HEADS * D, bias=False)
    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, HEADS, D).permute(2, 0, 3, 1, 4)
        return flex_attention(q, k, v, score_mod=bias)
"""


def test_flex_memory_is_what_the_kernel_allocates(tmp_path):
    path = write_model(tmp_path, "flex", FLEX)
    loaded = load(path)
    traced = trace(loaded, 128)
    memory = peak_memory(traced, loaded, device="cpu")
    assert memory.liveness == "graph last use" and "flex_attention" in " ".join(memory.notes)
    flex = [x for x in graph_allocations(traced) if x.node.target is FLEX_ATTENTION]
    n, b = 1000, 3
    # By hand: the output (B, H, N, D) and the log-sum-exp and row maxima
    # (B, H, N), float32; the log-sum-exp and maxima are freed at once.
    assert [value_at(x.bytes, n, b) for x in flex] == [b * 2 * n * 16 * 4, b * 2 * n * 4,
                                                       b * 2 * n * 4]
    assert [x.death for x in flex[1:]] == [flex[0].time + 1] * 2
    assert flex[0].death is None  # the model's output
    # The peak, by hand: weights, input, the qkv projection (read by flex),
    # flex's outputs, and the empty BlockMask flex_attention builds when given
    # none (kv_num_blocks, kv_indices, q_num_blocks, q_indices: one int32 each).
    weights = 3 * HEADS_D * 64 * 4
    expected = weights + b * n * 64 * 4 + b * n * 3 * HEADS_D * 4 + b * 2 * n * (16 + 2) * 4 \
        + 4 * 4
    assert memory.at(n, b) == expected


HEADS_D = 2 * 16


def test_sizes_read_from_a_mask_that_no_branch_decides_are_fixed_from_the_inputs():
    """A prompt's valid tokens put before its padding (``text[:, mask]``,
    ``text[:, ~mask]``): two sizes read from the mask's values, used only as
    sizes, never branched on.  They are what the example inputs give (5 and
    3), so the joint attention runs over N + 8 tokens."""
    from attncost.expr import N

    path = MODELS / "valid_tokens_first.py"
    mod = load_module(path)
    a = attncost.analyze(path, seq_len=64, device="cpu")
    assert [(s.variant, s.query_len, s.key_len) for s in a.sites] == \
        [("dense", N + mod.TEXT, N + mod.TEXT)] * 2
    assert sum("fixed as the example inputs give it: 5" in note or
               "fixed as the example inputs give it: 3" in note for note in a.notes) == 2
    for n in (64, 500):
        by_hand = mod.HEADS * (n + mod.TEXT) ** 2 * 2 * 2 * mod.DIM_HEAD
        assert a.at(a.sites[0].useful_flops, n, 1) == by_hand
    torch.manual_seed(0)
    model = mod.build_model().eval()
    for n, b in ((64, 1), (96, 2)):
        assert a.at(a.flops, n, b) == count_flops(model, mod.example_inputs(n, b)), (n, b)


def test_sizes_kept_in_a_set_and_a_cache_stay_symbolic():
    """Lumina2's packing: each sample's length (text read from its mask, +
    N) goes into ``set()``, rotary angles into a cache keyed by the length,
    and the tokens into a zeroed buffer.  torch refuses to hash a size; the
    trace hashes it by its value and holds for every N."""
    from attncost.expr import N

    path = MODELS / "packed_text_and_image.py"
    mod = load_module(path)
    a = attncost.analyze(path, seq_len=64, device="cpu")
    assert [(s.variant, s.causal, s.query_len, s.key_len) for s in a.sites] == \
        [("dense", False, N + mod.TEXT, N + mod.TEXT)] * 2
    assert a.n_range == (1, None) and a.valid_for() is None
    torch.manual_seed(0)
    model = mod.build_model().eval()
    for n, b in ((64, 1), (100, 2)):
        by_hand = b * mod.HEADS * (n + mod.TEXT) ** 2 * 2 * 2 * mod.DIM_HEAD
        assert a.at(a.sites[0].useful_flops, n, b) == by_hand
        assert a.at(a.flops, n, b) == count_flops(model, mod.example_inputs(n, b)), (n, b)


def test_two_sizes_that_meet_at_one_length_rule_it_out(tmp_path):
    """``len({n, 2n − 64})`` is 2 at the traced length and 1 at N = 64: the
    trace must not assume they differ everywhere."""
    path = write_model(tmp_path, "sizes_in_a_set", """
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(DIM, DIM)
        def forward(self, x):
            n = x.shape[1]
            kinds = len({n, 2 * n - 64})
            return self.proj(x) * kinds
    """)
    a = attncost.analyze(path, seq_len=128, device="cpu")
    assert a.valid_for() is not None and "N ≠ 64" in a.valid_for(), a.valid_for()


def test_a_cache_keyed_by_a_shape_adds_no_condition(tmp_path):
    """A cache keyed by the input's shape (einops caches its recipes by
    (B, N, ...)): the batch and the length never meet as keys, so the trace
    holds with no condition (it said "N ≠ B")."""
    path = write_model(tmp_path, "shape_cache", """
    import functools
    @functools.lru_cache(maxsize=16)
    def plan(shape):
        return (shape[0] * shape[1], shape[2])
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(DIM, DIM)
        def forward(self, x):
            return self.proj(x.reshape(plan(tuple(x.shape)))).reshape(x.shape)
    """)
    a = attncost.analyze(path, seq_len=128, device="cpu")
    assert a.valid_for() is None, a.valid_for()


def test_a_size_read_from_data_in_traces_at_fixed_lengths_is_fixed_there():
    """A model traced at fixed lengths (it checks that the length is an
    int) whose packed length is read from data (``repeat_interleave`` by a
    tensor of counts, NaViT's image ids): each trace fixes that size as its
    inputs give it, and the fit holds; the block-diagonal mask lets through
    each image's pairs, counted by hand."""
    path = MODELS / "two_images_packed.py"
    mod = load_module(path)
    a = attncost.analyze(path, seq_len=64, device="cpu")
    assert [(s.variant, s.causal) for s in a.sites] == [("sparse", False)]
    torch.manual_seed(0)
    model = mod.build_model().eval()
    for n, b in ((64, 1), (100, 2)):
        pairs = (n // 2) ** 2 + (n - n // 2) ** 2
        assert a.at(a.sites[0].useful_flops, n, b) == b * mod.HEADS * pairs * 2 * 2 * mod.DIM_HEAD
        assert a.at(a.flops, n, b) == count_flops(model, mod.example_inputs(n, b)), (n, b)


def test_pairs_of_a_mask_in_a_trace_at_one_length_are_counted_there(tmp_path):
    """The same packed images, two of N patches each (2·N tokens), from a
    model that does not run at the short lengths a fit is made from: traced
    at N alone.  Its mask's pairs are the pairs there (two blocks of N), not
    a formula fitted to its side (2·N) and said in N."""
    path = tmp_path / "two_images_long_only.py"
    source = (MODELS / "two_images_packed.py").read_text()
    source = source.replace(
        "        counts = torch.tensor(",
        "        if n < 96:\n            raise ValueError('at least 48 patches an image')\n"
        "        counts = torch.tensor(")
    path.write_text(source.replace("torch.randn(batch, seq_len, DIM)",
                                   "torch.randn(batch, 2 * seq_len, DIM)"))
    mod = load_module(path)
    a = attncost.analyze(path, seq_len=64, device="cpu")
    assert a.n_range == (64, 64) and a.valid_for() == "N = 64 only"
    site = a.sites[0]
    assert site.density == 0.5
    assert a.at(site.useful_flops) == mod.HEADS * 2 * 64 ** 2 * 2 * 2 * mod.DIM_HEAD
    torch.manual_seed(0)
    assert a.at(a.flops) == count_flops(mod.build_model().eval(), mod.example_inputs(64))


def test_a_count_of_blocks_as_classes_and_as_a_tensor_stays_symbolic():
    """LongT5's block summaries: ``F.one_hot`` with N // 8 + 1 classes and
    ``torch.tensor(N // 8)`` both take a plain number, which fixed N to the
    traced length.  The trace holds for every N that is a multiple of 8."""
    from attncost.expr import N

    path = MODELS / "block_summaries.py"
    mod = load_module(path)
    a = attncost.analyze(path, seq_len=64, device="cpu")
    assert [(s.variant, s.query_len) for s in a.sites] == [("dense", N)] * 2
    assert [a.at(s.key_len, 200, 1) for s in a.sites] == [25] * 2
    assert a.n_range[1] is None
    torch.manual_seed(0)
    model = mod.build_model().eval()
    for n, b in ((64, 1), (200, 2), (1000, 1)):
        by_hand = b * mod.HEADS * n * (n // mod.BLOCK) * 2 * 2 * mod.DIM_HEAD
        assert a.at(a.sites[0].flops, n, b) == by_hand, (n, b)
        assert a.at(a.flops, n, b) == count_flops(model, mod.example_inputs(n, b)), (n, b)
