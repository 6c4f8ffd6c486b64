"""Kernelized linear attention beside a naive PyTorch reference.

softmax(q k^T) is replaced by phi(q) phi(k)^T for a positive feature map phi
of dimension r, so attention regroups as phi(Q) (phi(K)^T V) and never holds
an N x M matrix:

* non-causal: one kernel sums the state S = phi(K)^T V (r x d) and the
  normalizer z = sum_j phi(k_j) (r) over the sequence, a second computes
  out_i = phi(q_i) S / (phi(q_i) . z);
* causal (chunked): one pass over chunks of C rows carries S and z on chip;
  inside a chunk the masked C x C block phi(Q_c) phi(K_c)^T handles the
  diagonal, the carried state everything before it.

Feature maps (computed by a Triton kernel into r-wide buffers, which the
``linear`` formula's feature term counts):

* ``"elu"``: phi(x) = elu(x) + 1, r = d (Katharopoulos et al.);
* ``"favor"``: positive random features (Performer FAVOR+),
  phi(x) = exp(w_i . x' - |x'|^2 / 2 - c) + eps with x' = x d^(-1/4) and
  rows w_i of an (r, d) orthogonal Gaussian projection.  The stabilizer c is
  each query's own maximum and, for keys, one maximum per (batch, kv head);
  both cancel in the normalization.

Memory: Q, K, V, the output, phi(Q) and phi(K) in the input dtype; the
non-causal path adds the fp32 state S and z per key/value head; the causal
path keeps them in registers.  Time and memory are O(N).

Shapes: q (B, H, N, d); k and v (B, H_kv, M, d) with H % H_kv == 0 (GQA).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .blocks import check_qkv, dot_precision, expand_kv_heads

FEATURE_MAPS = ("elu", "favor")
#: Added to every FAVOR+ feature so the normalizer stays positive.
FAVOR_EPS = 1e-6

#: Block sizes: rows per program and value columns per program.
DEFAULT_CONFIG = {"BLOCK_N": 64, "BLOCK_DV": 64, "BLOCK_C": 64, "CAUSAL_BLOCK_DV": 32,
                  "num_warps": 4, "num_stages": 2}
INTERPRETER_CONFIG = {"BLOCK_N": 16, "BLOCK_DV": 16, "BLOCK_C": 16, "CAUSAL_BLOCK_DV": 16,
                      "num_warps": 4, "num_stages": 1}


@triton.jit
def _feature_map_fwd(X, W, OUT, STAB, n, x_scale, eps,
                     HEAD_DIM: tl.constexpr, R: tl.constexpr, BLOCK_N: tl.constexpr,
                     FAVOR: tl.constexpr, STAB_MODE: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """phi of a block of rows of X (rows of B*heads*n, HEAD_DIM) into OUT (rows, R).

    FAVOR STAB_MODE: 0 subtracts each row's own maximum (queries); 1 only
    folds the block's maximum into STAB[bh] (first pass over keys); 2
    subtracts STAB[bh] (second pass over keys).
    """
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    offs_n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_n < n
    rows = (bh * n + offs_n).to(tl.int64)
    x = tl.load(X + rows[:, None] * HEAD_DIM + offs_d[None, :], mask=row_ok[:, None], other=0.0).to(tl.float32)
    if not FAVOR:
        phi = tl.where(x > 0, x + 1.0, tl.exp(x))
        tl.store(OUT + rows[:, None] * HEAD_DIM + offs_d[None, :], phi.to(OUT.dtype.element_ty),
                 mask=row_ok[:, None])
    else:
        offs_r = tl.arange(0, R)
        x = x * x_scale
        w_t = tl.load(W + offs_r[None, :] * HEAD_DIM + offs_d[:, None])  # (HEAD_DIM, R) = W^T
        logits = tl.dot(x, w_t, input_precision=DOT_PRECISION) - 0.5 * tl.sum(x * x, 1)[:, None]
        if STAB_MODE == 1:
            logits = tl.where(row_ok[:, None], logits, float("-inf"))
            tl.atomic_max(STAB + bh, tl.max(tl.max(logits, 1), 0))
        else:
            if STAB_MODE == 0:
                phi = tl.exp(logits - tl.max(logits, 1)[:, None]) + eps
            else:
                phi = tl.exp(logits - tl.load(STAB + bh)) + eps
            tl.store(OUT + rows[:, None] * R + offs_r[None, :], phi.to(OUT.dtype.element_ty),
                     mask=row_ok[:, None])


@triton.jit
def _linear_state_fwd(PHIK, V, S, Z, n_kv, rows_per_split,
                      HEAD_DIM: tl.constexpr, R: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DV: tl.constexpr,
                      DOT_PRECISION: tl.constexpr):
    """S[bh] += phi(K)^T V and Z[bh] += sum phi(K) over one split of the rows.

    Grid: (splits, B * H_kv, HEAD_DIM // BLOCK_DV); splits add into the fp32
    state atomically, so S and Z start at zero.
    """
    split = tl.program_id(0)
    bh = tl.program_id(1)
    dv = tl.program_id(2) * BLOCK_DV
    offs_r = tl.arange(0, R)
    offs_dv = dv + tl.arange(0, BLOCK_DV)
    start = split * rows_per_split
    end = tl.minimum(start + rows_per_split, n_kv)
    s_acc = tl.zeros([R, BLOCK_DV], dtype=tl.float32)
    z_acc = tl.zeros([R], dtype=tl.float32)
    for start_n in range(start, end, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        row_ok = (offs_n < end)[:, None]
        rows = (bh * n_kv + offs_n).to(tl.int64)
        phik = tl.load(PHIK + rows[:, None] * R + offs_r[None, :], mask=row_ok, other=0.0)
        v = tl.load(V + rows[:, None] * HEAD_DIM + offs_dv[None, :], mask=row_ok, other=0.0)
        s_acc = tl.dot(tl.trans(phik), v, s_acc, input_precision=DOT_PRECISION)
        z_acc += tl.sum(phik.to(tl.float32), 0)
    state = S + bh.to(tl.int64) * R * HEAD_DIM
    tl.atomic_add(state + offs_r[:, None] * HEAD_DIM + offs_dv[None, :], s_acc)
    if dv == 0:
        tl.atomic_add(Z + bh * R + offs_r, z_acc)


@triton.jit
def _linear_output_fwd(PHIQ, S, Z, O, n_q, H, H_KV,
                       HEAD_DIM: tl.constexpr, R: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_DV: tl.constexpr,
                       STATE_PRECISION: tl.constexpr):
    """out = phi(Q) S / (phi(Q) . z) for one block of rows and value columns."""
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    dv = tl.program_id(2) * BLOCK_DV
    bh_kv = (bh // H) * H_KV + (bh % H) // (H // H_KV)
    offs_m = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_r = tl.arange(0, R)
    offs_dv = dv + tl.arange(0, BLOCK_DV)
    row_ok = (offs_m < n_q)[:, None]
    rows = (bh * n_q + offs_m).to(tl.int64)
    phiq = tl.load(PHIQ + rows[:, None] * R + offs_r[None, :], mask=row_ok, other=0.0).to(tl.float32)
    state = S + bh_kv.to(tl.int64) * R * HEAD_DIM
    s = tl.load(state + offs_r[:, None] * HEAD_DIM + offs_dv[None, :])
    z = tl.load(Z + bh_kv * R + offs_r)
    num = tl.dot(phiq, s, input_precision=STATE_PRECISION)
    den = tl.sum(phiq * z[None, :], 1)
    out = num / tl.where(den == 0.0, 1.0, den)[:, None]
    tl.store(O + rows[:, None] * HEAD_DIM + offs_dv[None, :], out.to(O.dtype.element_ty), mask=row_ok)


@triton.jit
def _linear_causal_fwd(PHIQ, PHIK, V, O, n, H, H_KV,
                       HEAD_DIM: tl.constexpr, R: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_DV: tl.constexpr,
                       DOT_PRECISION: tl.constexpr, STATE_PRECISION: tl.constexpr):
    """Causal linear attention, one chunk of BLOCK_C rows at a time.

    Grid: (B * H, HEAD_DIM // BLOCK_DV).  The state (S, z) of all earlier
    chunks lives in registers; the chunk's own keys enter through the
    lower-triangular block phi(Q_c) phi(K_c)^T.
    """
    bh = tl.program_id(0)
    dv = tl.program_id(1) * BLOCK_DV
    bh_kv = (bh // H) * H_KV + (bh % H) // (H // H_KV)
    offs_c = tl.arange(0, BLOCK_C)
    offs_r = tl.arange(0, R)
    offs_dv = dv + tl.arange(0, BLOCK_DV)
    lower = offs_c[:, None] >= offs_c[None, :]
    s = tl.zeros([R, BLOCK_DV], dtype=tl.float32)
    z = tl.zeros([R], dtype=tl.float32)
    for start in range(0, n, BLOCK_C):
        row_ok = (start + offs_c < n)[:, None]
        q_rows = (bh * n + start + offs_c).to(tl.int64)
        kv_rows = (bh_kv * n + start + offs_c).to(tl.int64)
        phiq = tl.load(PHIQ + q_rows[:, None] * R + offs_r[None, :], mask=row_ok, other=0.0)
        phik = tl.load(PHIK + kv_rows[:, None] * R + offs_r[None, :], mask=row_ok, other=0.0)
        v = tl.load(V + kv_rows[:, None] * HEAD_DIM + offs_dv[None, :], mask=row_ok, other=0.0)
        a = tl.dot(phiq, tl.trans(phik), input_precision=DOT_PRECISION)
        a = tl.where(lower, a, 0.0)
        num = tl.dot(a.to(v.dtype), v, input_precision=DOT_PRECISION)
        phiq32 = phiq.to(tl.float32)
        num = tl.dot(phiq32, s, num, input_precision=STATE_PRECISION)
        den = tl.sum(a, 1) + tl.sum(phiq32 * z[None, :], 1)
        out = num / tl.where(den == 0.0, 1.0, den)[:, None]
        tl.store(O + q_rows[:, None] * HEAD_DIM + offs_dv[None, :], out.to(O.dtype.element_ty), mask=row_ok)
        s = tl.dot(tl.trans(phik), v, s, input_precision=DOT_PRECISION)
        z += tl.sum(phik.to(tl.float32), 0)


# ---------------------------------------------------------------------------
# Python wrappers
# ---------------------------------------------------------------------------


def random_projection(head_dim: int, num_features: int, seed: int = 0, device=None) -> torch.Tensor:
    """(r, d) fp32 FAVOR+ projection: orthogonal Gaussian blocks, rows scaled to chi-distributed norms."""
    gen = torch.Generator().manual_seed(seed)
    blocks = []
    for _ in range(math.ceil(num_features / head_dim)):
        gaussian = torch.randn(head_dim, head_dim, generator=gen, dtype=torch.float64)
        q, _ = torch.linalg.qr(gaussian)
        blocks.append(q.T)
    w = torch.cat(blocks, dim=0)[:num_features]
    norms = torch.randn(num_features, head_dim, generator=gen, dtype=torch.float64).norm(dim=1)
    return (w * norms[:, None]).to(torch.float32).to(device).contiguous()


def _check_features(kind: str, head_dim: int, projection: torch.Tensor | None) -> int:
    if kind not in FEATURE_MAPS:
        raise ValueError(f"feature_map must be one of {FEATURE_MAPS}, got {kind!r}")
    if kind == "elu":
        return head_dim
    if projection is None or projection.dim() != 2 or projection.shape[1] != head_dim:
        raise ValueError(f"FAVOR+ needs an (r, {head_dim}) projection")
    r = projection.shape[0]
    if r < 16 or r > 256 or r & (r - 1):
        raise ValueError(f"FAVOR+ feature dimension must be a power of two in [16, 256], got {r}")
    return r


def compute_features(x: torch.Tensor, kind: str = "elu", projection: torch.Tensor | None = None,
                     is_query: bool = True, config: dict | None = None) -> torch.Tensor:
    """phi(x) for x (B, heads, N, d), as (B, heads, N, r) in x's dtype (see module docstring)."""
    B, Hx, N, d = x.shape
    r = _check_features(kind, d, projection)
    config = _config(x, config)
    x = x.contiguous()
    out = torch.empty((B, Hx, N, r), device=x.device, dtype=x.dtype)
    favor = kind == "favor"
    w = projection.to(device=x.device, dtype=torch.float32).contiguous() if favor else x
    grid = (triton.cdiv(N, config["BLOCK_N"]), B * Hx)
    common = dict(HEAD_DIM=d, R=r, BLOCK_N=config["BLOCK_N"], FAVOR=favor,
                  DOT_PRECISION=dot_precision(x.dtype), num_warps=config["num_warps"])
    x_scale = d ** -0.25
    if not favor or is_query:
        _feature_map_fwd[grid](x, w, out, out, N, x_scale, FAVOR_EPS, STAB_MODE=0, **common)
    else:
        stab = torch.full((B * Hx,), float("-inf"), device=x.device, dtype=torch.float32)
        _feature_map_fwd[grid](x, w, out, stab, N, x_scale, FAVOR_EPS, STAB_MODE=1, **common)
        _feature_map_fwd[grid](x, w, out, stab, N, x_scale, FAVOR_EPS, STAB_MODE=2, **common)
    return out


def _config(x: torch.Tensor, config: dict | None) -> dict:
    base = DEFAULT_CONFIG if x.is_cuda else INTERPRETER_CONFIG
    return {**base, **(config or {})}


def linear_attention(q, k, v, feature_map: str = "elu", causal: bool = False, *,
                     projection: torch.Tensor | None = None, num_features: int | None = None, seed: int = 0,
                     config: dict | None = None) -> torch.Tensor:
    """Linear attention phi(q_i) sum_j phi(k_j) v_j^T / phi(q_i) sum_j phi(k_j), j <= i when causal.

    For ``feature_map="favor"`` pass an (r, d) ``projection`` (see
    ``random_projection``) or let one be drawn from ``seed`` with
    r = ``num_features`` (default d).  ``config`` overrides block sizes.
    """
    check_qkv(q, k, v, same_length=causal)
    B, H, N, d = q.shape
    H_kv, M = k.shape[1], k.shape[2]
    if feature_map == "favor" and projection is None:
        projection = random_projection(d, num_features or d, seed, q.device)
    _check_features(feature_map, d, projection)
    config = _config(q, config)
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    phi_q = compute_features(q, feature_map, projection, is_query=True, config=config)
    phi_k = compute_features(k, feature_map, projection, is_query=False, config=config)
    r = phi_q.shape[-1]
    o = torch.empty_like(q)
    state_precision = "ieee" if q.dtype == torch.float32 else "tf32"
    if causal:
        block_dv = min(config["CAUSAL_BLOCK_DV"], d)
        _linear_causal_fwd[(B * H, d // block_dv)](
            phi_q, phi_k, v, o, N, H, H_kv, HEAD_DIM=d, R=r, BLOCK_C=config["BLOCK_C"], BLOCK_DV=block_dv,
            DOT_PRECISION=dot_precision(q.dtype), STATE_PRECISION=state_precision,
            num_warps=config["num_warps"], num_stages=config["num_stages"])
        return o
    block_dv = min(config["BLOCK_DV"], d)
    block_n = config["BLOCK_N"]
    s = torch.zeros((B, H_kv, r, d), device=q.device, dtype=torch.float32)
    z = torch.zeros((B, H_kv, r), device=q.device, dtype=torch.float32)
    # Enough splits of the rows to fill the GPU, each a whole number of blocks.
    target_programs = 4 * _multiprocessors(q.device)
    splits = max(1, min(triton.cdiv(M, block_n), target_programs // max(1, B * H_kv * (d // block_dv))))
    rows_per_split = triton.cdiv(triton.cdiv(M, splits), block_n) * block_n
    splits = triton.cdiv(M, rows_per_split)
    _linear_state_fwd[(splits, B * H_kv, d // block_dv)](
        phi_k, v, s, z, M, rows_per_split, HEAD_DIM=d, R=r, BLOCK_N=block_n, BLOCK_DV=block_dv,
        DOT_PRECISION=dot_precision(q.dtype), num_warps=config["num_warps"], num_stages=config["num_stages"])
    _linear_output_fwd[(triton.cdiv(N, block_n), B * H, d // block_dv)](
        phi_q, s, z, o, N, H, H_kv, HEAD_DIM=d, R=r, BLOCK_M=block_n, BLOCK_DV=block_dv,
        STATE_PRECISION=state_precision, num_warps=config["num_warps"], num_stages=config["num_stages"])
    return o


def _multiprocessors(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


# ---------------------------------------------------------------------------
# Naive references
# ---------------------------------------------------------------------------


def feature_map_reference(x: torch.Tensor, kind: str = "elu", projection: torch.Tensor | None = None,
                          is_query: bool = True) -> torch.Tensor:
    """phi(x) in fp32 with the same stabilizers as the kernel."""
    x = x.float()
    if kind == "elu":
        return torch.nn.functional.elu(x) + 1.0
    _check_features(kind, x.shape[-1], projection)
    xs = x * x.shape[-1] ** -0.25
    logits = xs @ projection.float().to(x.device).T - 0.5 * (xs * xs).sum(-1, keepdim=True)
    if is_query:
        stab = logits.amax(dim=-1, keepdim=True)
    else:
        stab = logits.amax(dim=(-2, -1), keepdim=True)
    return torch.exp(logits - stab) + FAVOR_EPS


def linear_reference(q, k, v, feature_map: str = "elu", causal: bool = False, *,
                     projection: torch.Tensor | None = None) -> torch.Tensor:
    """Naive linear attention: the full N x M matrix phi(Q) phi(K)^T, masked, row-normalized."""
    H = q.shape[1]
    phi_q = feature_map_reference(q, feature_map, projection, is_query=True)
    phi_k = expand_kv_heads(feature_map_reference(k, feature_map, projection, is_query=False), H)
    vf = expand_kv_heads(v.float(), H)
    a = phi_q @ phi_k.transpose(-1, -2)
    if causal:
        a = torch.tril(a)
    return ((a @ vf) / a.sum(-1, keepdim=True)).to(q.dtype)
