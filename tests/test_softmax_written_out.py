"""A softmax written out as exp(scores - logsumexp(scores)), as Reformer
computes it, is a softmax: its site is found and read like any other.
Oracles: FlopCounterMode over a real forward, and the causal pairs counted
by brute force."""
import textwrap

import torch

import attncost
from oracle import count_flops, load_module

MODEL = """
import torch
import torch.nn as nn
HEADS, D = 2, 16
class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(32, 3 * HEADS * D)
    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, HEADS, D).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2)
        causal = torch.ones(n, n, dtype=torch.bool).tril()
        scores = torch.where(causal, scores, torch.full_like(scores, -1e9))
        weights = torch.exp(scores - torch.logsumexp(scores, dim=-1, keepdim=True))
        return (weights @ v).transpose(1, 2).reshape(b, n, HEADS * D)
def build_model():
    return Model()
def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, 32),)
"""


def test_exp_of_scores_less_their_logsumexp_is_a_softmax(tmp_path):
    path = tmp_path / "written_out.py"
    path.write_text(textwrap.dedent(MODEL))
    a = attncost.analyze(path, seq_len=64, device="cpu")
    (site,) = a.sites
    assert (site.variant, site.causal, site.heads, site.head_dim) == ("dense", True, 2, 16)
    n = 512
    pairs = int((torch.arange(n)[None, :] <= torch.arange(n)[:, None]).sum())
    assert a.at(site.useful_flops, n, 1) == 2 * 2 * (16 + 16) * pairs
    mod = load_module(path)
    model = mod.build_model().eval()
    for length, batch in ((64, 1), (96, 2)):
        assert a.at(a.flops, length, batch) == count_flops(model, mod.example_inputs(length, batch))
