"""timm's VisionTransformer with ``dynamic_img_size``: its position
embeddings are resampled to the image's grid, and returned as they are at
the grid they were made for.  Checked against FlopCounterMode on a real
forward at lengths and batches never traced."""
from __future__ import annotations

import sys
from pathlib import Path

import attncost

HERE = Path(__file__).parent
for _folder in (HERE, HERE.parent):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

from corpus import real_flops  # noqa: E402
from oracle import count_flops, load_module  # noqa: E402


def test_a_model_asked_at_its_own_grid_is_traced_with_n_a_symbol():
    """Eight blocks, asked at N = 64, the grid its position embeddings are
    made for: timm's ``resample_abs_pos_embed`` returns them as they are
    when the grid is theirs, a branch on the length.  The model traced a
    step away holds everywhere but 64 and costs the same there, so its
    formulas are the answer, not a fit from short traces as for a loop
    over N."""
    vit = load_module(HERE / "published_timm_vit_deep.py")
    a = attncost.analyze(HERE / "published_timm_vit_deep.py", seq_len=64)
    assert a.n_range[1] is None and a.n_range[0] <= 8 and a.valid_for() in (None, "N >= 2")
    assert len(a.sites) == vit.DEPTH and {s.variant for s in a.sites} == {"dense"}
    assert any("another branch" in note for note in a.notes), a.notes
    assert not any("fitted" in note for note in a.notes), a.notes
    for n, b in ((64, 1), (40, 2), (150, 2)):
        assert a.at(a.flops, n, b) == real_flops("timm_vit_deep", n, b), (n, b)


def test_heads_mixed_by_a_linear_layer_with_a_bias_keep_the_site():
    """timm's CaiT mixes the weights across heads with a Linear that has a
    bias: the bias added to the weights on their way to ·V is passed, and
    each talking-heads block is a dense site over the 64 patches."""
    cait = load_module(HERE / "published_timm_cait.py")
    a = attncost.analyze(HERE / "published_timm_cait.py", seq_len=64, device="cpu")
    talking = [s for s in a.sites if s.name.startswith("blocks.")]
    assert len(talking) == cait.DEPTH and len(a.sites) == cait.DEPTH + 1
    n = cait.PATCHES
    per_pair = cait.HEADS * 2 * (cait.DIM_HEAD + cait.DIM_HEAD)
    assert [a.at(s.useful_flops, n, 1) for s in talking] == [n * n * per_pair] * cait.DEPTH
    assert all((s.variant, s.heads) == ("dense", cait.HEADS) for s in talking)
    model = cait.build_model().eval().requires_grad_(False)  # FlopCounterMode's module
    assert a.at(a.flops, n, 1) == count_flops(model, cait.example_inputs(n))  # tracker
