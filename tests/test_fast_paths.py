"""torch's fused transformer paths (nn.MultiheadAttention in eval, without
gradients, and nn.TransformerEncoderLayer) traced as a real forward runs
them.

Oracles: the CPU allocator's own record of a real forward (tests/memprofile.py:
every allocation and free, inside the fused kernels too) for the peak, at
lengths and batches the analysis never traced; FLOPs counted by hand from
the modules' shapes (FlopCounterMode counts the fused ops as 0).
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

import attncost
from attncost.expr import N, degree

sys.path.insert(0, str(Path(__file__).parent))
from memprofile import allocation_peak  # noqa: E402

TRACED_AT = 96
#: (N, B) never traced: odd lengths, a batch of 2.
LENGTHS = [(301, 1), (517, 2)]

MODELS = {
    # default need_weights=True: the weights averaged over heads are returned
    "mha_weights": """
class M(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
        self.ff = nn.Linear(32, 32)
    def forward(self, x):
        y, w = self.attn(x, x, x)
        return self.ff(x + y), w
""",
    # no weights, 6 heads of 8
    "mha_no_weights": """
class M(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(48, 6, batch_first=True)
    def forward(self, x):
        return self.attn(x, x, x, need_weights=False)[0]
""",
    # a key padding mask (the last quarter padded): mask type 1
    "mha_padding": """
class M(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(32, 2, batch_first=True)
    def forward(self, x):
        n = x.shape[1]
        pad = torch.arange(n, device=x.device) >= n - n // 4
        pad = pad.unsqueeze(0).expand(x.shape[0], n)
        return self.attn(x, x, x, key_padding_mask=pad, need_weights=False)[0]
""",
    # post-norm ReLU layers, 2 of them
    "encoder_relu": """
class M(nn.Module):
    def __init__(self):
        super().__init__()
        layer = nn.TransformerEncoderLayer(64, 4, 96, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    def forward(self, x):
        return self.encoder(x)
""",
    # pre-norm GELU layers, 3 of them, with a causal mask
    "encoder_gelu_causal": """
class M(nn.Module):
    def __init__(self):
        super().__init__()
        layer = nn.TransformerEncoderLayer(64, 8, 80, batch_first=True, activation="gelu",
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, 3, enable_nested_tensor=False)
    def forward(self, x):
        n = x.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(n, device=x.device)
        return self.encoder(x, mask=mask, is_causal=True)
""",
}
WIDTH = {"mha_weights": 32, "mha_no_weights": 48, "mha_padding": 32, "encoder_relu": 64,
         "encoder_gelu_causal": 64}


def _write(tmp_path_factory, name: str) -> Path:
    path = tmp_path_factory.mktemp("fast") / f"{name}.py"
    path.write_text("import torch, torch.nn as nn\n" + MODELS[name] + f"""
def build_model():
    return M()
def example_inputs(n, batch=1):
    return (torch.randn(batch, n, {WIDTH[name]}),)
""")
    return path


def _module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    cache = {}

    def get(name: str, device: str = "cpu"):
        if (name, device) not in cache:
            path = _write(tmp_path_factory, name)
            cache[name, device] = (path, attncost.analyze(path, seq_len=TRACED_AT,
                                                          device=device))
        return cache[name, device]
    return get


@pytest.mark.parametrize("name", list(MODELS))
def test_peak_equals_what_the_cpu_allocator_saw(analysed, name):
    path, a = analysed(name)
    source = _module(path)
    model = source.build_model().eval()
    for n, b in LENGTHS:
        torch.manual_seed(0)
        real = allocation_peak(model, source.example_inputs(n, b))
        assert a.at(a.peak_memory_bytes, n, b) == real, (n, b)


def _layer_flops(b, n, d, ff, heads):
    """One self-attention layer by hand: the packed QKV and output products,
    Q·Kᵀ and P·V over every pair, and (an encoder layer) the two FFN products."""
    head_dim = d // heads
    projections = 2 * b * n * d * 3 * d + 2 * b * n * d * d
    attention = 2 * (2 * b * heads * n * n * head_dim)
    return projections + attention + (2 * 2 * b * n * d * ff if ff else 0)


@pytest.mark.parametrize("name, per_layer, layers, extra", [
    ("mha_weights", (32, 0, 4), 1, lambda b, n: 2 * b * n * 32 * 32),
    ("mha_no_weights", (48, 0, 6), 1, lambda b, n: 0),
    ("mha_padding", (32, 0, 2), 1, lambda b, n: 0),
    ("encoder_relu", (64, 96, 4), 2, lambda b, n: 0),
    ("encoder_gelu_causal", (64, 80, 8), 3, lambda b, n: 0),
])
def test_flops_equal_a_hand_count(analysed, name, per_layer, layers, extra):
    _, a = analysed(name)
    for n, b in LENGTHS:
        expected = layers * _layer_flops(b, n, *per_layer) + extra(b, n)
        assert a.at(a.flops, n, b) == expected, (n, b)


def test_sites_name_the_fused_computation(analysed):
    _, mha = analysed("mha_no_weights")
    (site,) = mha.sites
    assert (site.variant, site.implementation, site.heads, site.head_dim) == \
        ("dense", "unfused", 6, 8)
    _, encoder = analysed("encoder_gelu_causal")
    assert len(encoder.sites) == 3
    for site in encoder.sites:
        assert (site.variant, site.causal, site.heads, site.head_dim) == ("dense", True, 8, 8)
    _, padded = analysed("mha_padding")
    (site,) = padded.sites
    # keys in the padded last quarter are reached by no query: at a multiple
    # of 4, N·(3N/4) pairs of N² (a mask of keys applies to every query)
    assert site.variant == "sparse"
    assert a_at(padded, site.useful_flops, 512) * 4 == a_at(padded, site.flops, 512) * 3


def a_at(analysis, expr, n):
    return analysis.at(expr, n, 1)


def test_cuda_without_weights_runs_the_memory_efficient_kernel(analysed):
    """On CUDA the fused op hands a call without weights and with a head dim
    a multiple of 8 to scaled_dot_product_attention (fp32: the
    memory-efficient kernel): no N×N tensor; with weights it keeps the
    scores."""
    _, cuda = analysed("mha_no_weights", "cuda")
    (site,) = cuda.sites
    assert site.implementation == "sdpa"
    assert degree(cuda.peak_memory_bytes) == 1
    _, with_weights = analysed("mha_weights", "cuda")
    assert with_weights.sites[0].implementation == "unfused"
    assert degree(with_weights.peak_memory_bytes) == 2
    # with a mask the kernel keeps its own path (a key padding mask is not SDPA's shape)
    _, masked = analysed("mha_padding", "cuda")
    assert masked.sites[0].implementation != "sdpa"
    assert degree(masked.peak_memory_bytes) == 2


def test_training_keeps_the_python_path(analysed, tmp_path):
    """With gradients the modules never take the fused path."""
    path, _ = analysed("encoder_relu")
    a = attncost.analyze(path, seq_len=TRACED_AT, device="cpu", mode="train")
    assert a.sites and all(s.variant == "dense" for s in a.sites)
    assert a.at(a.forward_flops, 64, 1) == 2 * _layer_flops(1, 64, 64, 96, 4)
