"""Published sparse, memory, hierarchical and latent attention, against the truth read from each
package's source (written in its model file, published_<name>.py).

The oracles: FlopCounterMode on a real forward (tests/oracle.py) at the
traced length and at a length and batch never traced; useful FLOPs against
the pairs each package's code lets through, counted here query by query ×
heads × 2·(d_qk + d_v)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import attncost

HERE = Path(__file__).parent
for _folder in (HERE, HERE.parent):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

from oracle import count_flops, load_module  # noqa: E402

_ANALYSES: dict = {}


def _analysed(name: str, seq_len: int):
    module = load_module(HERE / f"published_{name}.py")  # skips when the package is missing
    if name not in _ANALYSES:
        _ANALYSES[name] = attncost.analyze(HERE / f"published_{name}.py", seq_len=seq_len,
                                           device="cpu")
    return module, _ANALYSES[name]


def _flops_equal(module, a, points):
    torch.manual_seed(0)
    model = module.build_model().eval().requires_grad_(False)  # FlopCounterMode's module
    for n, b in points:                                         # tracker, under no_grad
        torch.manual_seed(0)
        assert a.at(a.flops, n, b) == count_flops(model, module.example_inputs(n, b)), (n, b)


def _useful(a, n: int) -> int:
    return sum(a.at(s.useful_flops, n, 1) for s in a.sites)


def test_native_sparse_attention_three_branches():
    """A mask built from compressed keys' positions (fewer keys than queries)
    is causal, and its pairs are counted at the length probed, not at the
    number of keys (which once evaluated the model at N=6 and crashed)."""
    nsa, a = _analysed("nsa", 64)
    assert len(a.sites) == 3 * nsa.DEPTH
    assert all(s.causal for s in a.sites if not s.content_based)
    # the compressed and the selected keys are the 2 key/value heads' (the
    # selected ones gathered for each query: 'b h qh i d, b h i j d')
    assert {s.kv_heads for s in a.sites if "sliding" not in s.name} == {nsa.KV_HEADS}
    per_pair = nsa.HEADS * 2 * (nsa.DIM_HEAD + nsa.DIM_HEAD)
    for n in (64, 256):
        pairs = sum(sum(nsa.keys_seen(q)) for q in range(n))
        assert _useful(a, n) == nsa.DEPTH * pairs * per_pair, n
    _flops_equal(nsa, a, [(64, 1), (96, 2)])


def test_compressive_memories_are_keys_every_query_sees():
    ct, a = _analysed("compressive", 64)
    assert len(a.sites) == ct.DEPTH and all(s.causal for s in a.sites)
    extra = ct.MEMORIES + ct.COMPRESSED
    # Q·Kᵀ, the position term q·pos_embᵀ and P·V: three products of width 16
    per_pair = ct.HEADS * 2 * (ct.DIM_HEAD + ct.DIM_HEAD + ct.DIM_HEAD)
    for n in (64, 200):
        pairs = sum(extra + i + 1 for i in range(n))
        assert _useful(a, n) == ct.DEPTH * pairs * per_pair, n
    _flops_equal(ct, a, [(64, 1), (96, 2)])


def test_megabyte_is_causal_inside_each_patch_folded_into_the_batch():
    """SDPA's is_causal on patches folded into the batch lets each patch's
    triangle through, not all of its square."""
    mb, a = _analysed("megabyte_flash", 128)
    per_pair = mb.HEADS * 2 * (mb.DIM_HEAD + mb.DIM_HEAD)
    for n in (128, 512):
        patches = -(-n // mb.PATCH)
        global_pairs = (patches + 1) * (patches + 2) // 2
        local_pairs = patches * (mb.PATCH + 1) * (mb.PATCH + 2) // 2
        want = (mb.DEPTH[0] * global_pairs + mb.DEPTH[1] * local_pairs) * per_pair
        assert _useful(a, n) == want, n
    _flops_equal(mb, a, [(128, 1), (192, 2)])


def test_h_transformer_diagonal_blocks_share_one_triangle():
    """Traced at one length (its levels are counted with math.log2): the
    finest level's 128 queries meet 16 keys under one 16×16 causal mask
    broadcast over the 8 blocks, so its useful work is that triangle's."""
    ht, a = _analysed("h_transformer_causal", 128)
    per_pair = ht.HEADS * 2 * (ht.DIM_HEAD + ht.DIM_HEAD)
    assert _useful(a, 128) == ht.DEPTH * ht.pairs(128) * per_pair
    assert all(a.at(s.useful_flops, 128, 1) <= a.at(s.flops, 128, 1) for s in a.sites)
    _flops_equal(ht, a, [(128, 1), (100, 2)])


def test_perceiver_latents_at_one_length_where_n_is_also_a_width():
    """Traced at N=64, the one length, where 64 is also a width of the
    model (its latents' features, its feed-forward's hidden 128 = 64·2):
    those axes are not the sequence, and the latents are tokens, not
    summaries of it."""
    pc, a = _analysed("perceiver", 64)
    assert len(a.sites) == 2 * pc.DEPTH
    assert {s.variant for s in a.sites} == {"dense"}
    assert all(s.implementation != "low-rank" for s in a.sites)
    # the latents over the tokens: a fixed number of queries, linear in N,
    # as a symbolic trace says, though the class was read at fixed lengths
    cross_sites = [s for s in a.sites if str(s.key_len) == "N"]
    assert len(cross_sites) == pc.DEPTH
    assert all(s.complexity == "N*M*d" for s in cross_sites)
    per_pair = 2 * (pc.DIM_HEAD + pc.DIM_HEAD)
    cross = pc.LATENTS * 64 * pc.CROSS_HEADS * per_pair
    latent = pc.LATENTS * pc.LATENTS * pc.LATENT_HEADS * per_pair
    assert _useful(a, 64) == pc.DEPTH * (cross + latent)
    _flops_equal(pc, a, [(64, 1), (96, 2)])


def test_perceiver_inverted_cross_attention_softmax_over_the_latents():
    """The latents compete for each token (a softmax over the queries):
    still the latents' attention to the tokens, every pair computed."""
    pc, a = _analysed("perceiver_inverted", 64)
    cross = [s for s in a.sites if str(s.key_len) == "N"]
    assert len(cross) == pc.DEPTH and len(a.sites) == 2 * pc.DEPTH
    assert all(s.query_len == pc.LATENTS and s.variant == "dense" for s in cross)
    per_pair = 2 * (pc.DIM_HEAD + pc.DIM_HEAD)
    latent = pc.LATENTS * pc.LATENTS * pc.LATENT_HEADS * per_pair
    for n in (64, 1000):
        cross_pairs = pc.LATENTS * n * pc.CROSS_HEADS * per_pair
        assert _useful(a, n) == pc.DEPTH * (cross_pairs + latent), n
    _flops_equal(pc, a, [(64, 1), (200, 2)])


def test_long_short_masks_on_concatenated_scores_are_counted():
    """Local and global scores concatenated, each masked on its own: the
    pairs each mask lets through, summed, not every pair computed."""
    ls, a = _analysed("long_short", 64)
    assert len(a.sites) == ls.DEPTH
    per_pair = ls.HEADS * 2 * (ls.DIM_HEAD + ls.DIM_HEAD)
    for n in (64, 512):
        assert _useful(a, n) == ls.DEPTH * sum(ls.keys_seen(q) for q in range(n)) * per_pair, n
    _flops_equal(ls, a, [(64, 1), (96, 2)])


def test_reformer_masks_written_by_index_assignment_are_read():
    """``dot[:, i, j] = value`` writes the causal and self masks into the
    scores: read as the scores they leave, a causal site whose pairs are
    the earlier keys (and the first query's own), counted as the softmax
    weighs them row by row."""
    rf, a = _analysed("reformer_full", 64)
    assert len(a.sites) == rf.DEPTH
    assert all(s.causal and s.variant == "dense" for s in a.sites)
    per_pair = rf.HEADS * 2 * (rf.DIM_HEAD + rf.DIM_HEAD)
    assert _useful(a, 64) == rf.DEPTH * rf.pairs(64) * per_pair
    _flops_equal(rf, a, [(64, 1), (96, 2)])


def test_halo_blocks_count_the_keys_inside_the_image():
    """Blocks of 16 queries folded into the batch with the heads, each
    meeting its 6×6 window of keys under a mask of the keys inside the
    image, which differs at the edge blocks: the pairs are counted over
    every block, not read on the first, and the heads are the projection's."""
    hn, a = _analysed("halonet", 64)
    assert len(a.sites) == hn.DEPTH
    assert all(s.variant == "local" and s.heads == hn.HEADS for s in a.sites)
    assert all(str(s.query_len) == "4*N" for s in a.sites)
    per_pair = hn.HEADS * 2 * (hn.DIM_HEAD + hn.DIM_HEAD)
    for n in (64, 200):
        blocks = n // hn.BLOCK
        # 4 rows of keys inside the strip; 4 columns of the block, and the
        # halo column on each side that is inside the image
        columns = [4 + (i > 0) + (i < blocks - 1) for i in range(blocks)]
        pairs = sum(16 * 4 * c for c in columns)
        assert _useful(a, n) == hn.DEPTH * pairs * per_pair, n
    _flops_equal(hn, a, [(64, 1), (96, 2)])
