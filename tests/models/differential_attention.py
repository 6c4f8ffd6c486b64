"""Differential attention (Ye et al., 2024), as its reference code writes
it: one softmax over 2·HEADS score heads of DIM_QK, each pair's maps
combined as the first less λ times the second, the difference applied to
a value head twice as wide.  Causal by an additive -inf mask; KV_HEADS
key/value heads shared by repeat (GQA)."""
import math
import torch, torch.nn as nn, torch.nn.functional as F
DIM, HEADS, KV_HEADS = 64, 2, 1
DIM_QK = DIM // HEADS // 2  # each of the 2·HEADS score heads
DIM_V = 2 * DIM_QK  # each of the HEADS value heads


def repeat_kv(x, n_rep):
    bs, n_kv_heads, slen, head_dim = x.shape
    if n_rep == 1:
        return x
    return x[:, :, None, :, :].expand(bs, n_kv_heads, n_rep, slen, head_dim).reshape(
        bs, n_kv_heads * n_rep, slen, head_dim)


class MultiheadDiffAttn(nn.Module):
    def __init__(self, depth):
        super().__init__()
        self.num_heads = HEADS
        self.num_kv_heads = KV_HEADS
        self.n_rep = HEADS // KV_HEADS
        self.head_dim = DIM // HEADS // 2
        self.scaling = self.head_dim ** -0.5
        self.q_proj = nn.Linear(DIM, DIM, bias=False)
        self.k_proj = nn.Linear(DIM, DIM // self.n_rep, bias=False)
        self.v_proj = nn.Linear(DIM, DIM // self.n_rep, bias=False)
        self.out_proj = nn.Linear(DIM, DIM, bias=False)
        self.lambda_init = 0.8 - 0.6 * math.exp(-0.3 * depth)
        for n in ["lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"]:
            setattr(self, n, nn.Parameter(torch.zeros(self.head_dim).normal_(0, 0.1)))
        self.subln = nn.RMSNorm(2 * self.head_dim, eps=1e-5)

    def forward(self, x, attn_mask=None):
        bsz, tgt_len, embed_dim = x.size()
        src_len = tgt_len
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = q.view(bsz, tgt_len, 2 * self.num_heads, self.head_dim)
        k = k.view(bsz, src_len, 2 * self.num_kv_heads, self.head_dim)
        v = v.view(bsz, src_len, self.num_kv_heads, 2 * self.head_dim)
        offset = src_len - tgt_len
        q = q.transpose(1, 2)
        k = repeat_kv(k.transpose(1, 2), self.n_rep)
        v = repeat_kv(v.transpose(1, 2), self.n_rep)
        q *= self.scaling
        attn_weights = torch.matmul(q, k.transpose(-1, -2))
        if attn_mask is None:
            attn_mask = torch.triu(
                torch.zeros([tgt_len, src_len]).float().fill_(float("-inf")).type_as(attn_weights),
                1 + offset)
        attn_weights = torch.nan_to_num(attn_weights)
        attn_weights += attn_mask
        attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).type_as(attn_weights)
        lambda_1 = torch.exp(torch.sum(self.lambda_q1 * self.lambda_k1, dim=-1).float()).type_as(q)
        lambda_2 = torch.exp(torch.sum(self.lambda_q2 * self.lambda_k2, dim=-1).float()).type_as(q)
        lambda_full = lambda_1 - lambda_2 + self.lambda_init
        attn_weights = attn_weights.view(bsz, self.num_heads, 2, tgt_len, src_len)
        attn_weights = attn_weights[:, :, 0] - lambda_full * attn_weights[:, :, 1]
        attn = torch.matmul(attn_weights, v)
        attn = self.subln(attn)
        attn = attn * (1 - self.lambda_init)
        attn = attn.transpose(1, 2).reshape(bsz, tgt_len, self.num_heads * 2 * self.head_dim)
        return self.out_proj(attn)


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([MultiheadDiffAttn(i) for i in range(2)])

    def forward(self, x):
        for layer in self.layers:
            x = x + layer(x)
        return x


def build_model():
    return Model()


def example_inputs(seq_len, batch=1):
    return (torch.randn(batch, seq_len, DIM),)
