"""What CUDA kernels allocate where they differ from the traced CPU ones.

* ``scaled_dot_product_attention`` runs the backend torch picks on an sm80+
  GPU (flash > memory-efficient > math, as torch's sdp_utils orders them)
  and allocates what that backend allocates under no_grad.
* ``softmax(fp16 x, dtype=float32)`` upcasts inside the kernel: the fp32
  copy a CPU makes first is never allocated.
* cuBLAS keeps a workspace once the first matrix product ran.
"""
from __future__ import annotations

import sympy
import torch
import torch.fx as fx

from ..memory.model import Allocation
from .allocation import register_allocation_rule, register_workspace
from .flops import FLOP_RULES
from .ops import SDPA_OPS, qkv_args, schema_args

aten = torch.ops.aten

#: Head-dim alignment the memory-efficient kernel needs (elements), sm80+.
MEM_EFF_HEAD_ALIGN = {True: 8, False: 4}  # half precision?
#: preprocess_mask pads an attn_mask whose strides are not multiples of this.
MEM_EFF_MASK_ALIGN = 8
#: Flash pads the head dim to a multiple of this (pad_last_dim<8>).
FLASH_HEAD_ALIGN = 8
FLASH_MAX_HEAD_DIM = 256
#: Value head dims above this make the fp16/bf16 memory-efficient kernel keep
#: an fp32 output accumulator (more than one value iteration per block).
MEM_EFF_SINGLE_ITERATION_HEAD_DIM = 128

#: The cuBLAS workspace PyTorch allocates through its caching allocator on the
#: first matrix product, and keeps: CUBLAS_WORKSPACE_CONFIG's default ":4096:8"
#: on Hopper (8 buffers of 4 MiB), measured as the constant offset between
#: prediction and max_memory_allocated on an H200 (docs/validation/).
CUBLAS_WORKSPACE_BYTES = 8 * 4096 * 1024


def sdpa_backend(dtype: torch.dtype, head_dim_qk: int, head_dim_v: int, has_mask: bool) -> str:
    """The backend ``scaled_dot_product_attention`` picks on an sm80+ GPU."""
    half = dtype in (torch.float16, torch.bfloat16)
    if half and not has_mask and head_dim_qk == head_dim_v and head_dim_qk <= FLASH_MAX_HEAD_DIM:
        return "flash"
    align = MEM_EFF_HEAD_ALIGN[half]
    if head_dim_qk % align == 0 and head_dim_v % align == 0:
        return "efficient"
    return "math"


def _round_up(x: int, to: int) -> int:
    return -(-x // to) * to


def sdpa_allocations(traced, node: fx.Node):
    """(backend, output bytes, [(workspace label, bytes)]) of one SDPA call on
    CUDA under no_grad.

    flash: output (head dim padded to 8) and an fp32 logsumexp per query row,
    which the flash kernel always writes; q, k, v are copied when padded.
    efficient: output only (logsumexp has 0 columns when no gradient is
    needed); a mask whose strides are not multiples of 8 is copied padded;
    fp16/bf16 with a value head dim over 128 keeps an fp32 accumulator.
    math: the composite's N×N scores and softmax (fp32 for fp16/bf16 inputs).
    """
    args = schema_args(node)
    q, k, v = qkv_args(node)
    mask = args.get("attn_mask")
    qv = q.meta["val"]
    qs, ks, vs = (traced.shape(x) for x in (q, k, v))
    es = qv.element_size()
    d_qk, d_v = int(qs[-1]), int(vs[-1])
    backend = sdpa_backend(qv.dtype, d_qk, d_v, isinstance(mask, fx.Node))
    rows = sympy.Mul(*qs[:-1])  # B·H·N_q
    if backend == "flash":
        outputs = [sympy.expand(rows * _round_up(d_v, FLASH_HEAD_ALIGN) * es), sympy.expand(rows * 4)]
        workspace = [] if d_qk % FLASH_HEAD_ALIGN == 0 else [
            (f"flash-padded {name}",
             sympy.expand(sympy.Mul(*shape[:-1]) * _round_up(int(shape[-1]), FLASH_HEAD_ALIGN) * es))
            for name, shape in (("q", qs), ("k", ks), ("v", vs))]
    elif backend == "efficient":
        outputs = [sympy.expand(rows * d_v * es), sympy.Integer(0)]
        workspace = _efficient_workspace(traced, qv.dtype, d_v, rows, mask)
    else:
        outputs = [sympy.expand(rows * d_v * es), sympy.Integer(0)]
        workspace = _math_workspace(qv, (qs, ks, vs), rows, bool(args.get("is_causal", False)))
    return backend, outputs, workspace


def _efficient_workspace(traced, dtype, d_v: int, rows, mask) -> list:
    workspace = []
    if dtype != torch.float32 and d_v > MEM_EFF_SINGLE_ITERATION_HEAD_DIM:
        workspace.append(("efficient-attention fp32 accumulator", sympy.expand(rows * d_v * 4)))
    if isinstance(mask, fx.Node):
        padded = padded_mask_bytes(traced, mask)
        if padded != 0:
            workspace.append(("attn_mask padded to a multiple of 8", padded))
    return workspace


def _math_workspace(qv, shapes, rows, causal: bool) -> list:
    qs, ks, vs = shapes
    es = qv.element_size()
    cs = 4 if qv.dtype in (torch.float16, torch.bfloat16) else es
    workspace = [("math-attention scores and softmax", sympy.expand(2 * rows * ks[-2] * cs))]
    if cs != es:
        upcast = sum((sympy.Mul(*s) for s in shapes), sympy.Integer(0)) * cs
        workspace.append(("math-attention fp32 q, k, v", sympy.expand(upcast)))
    if causal:
        workspace.append(("math-attention causal mask", sympy.expand(qs[-2] * ks[-2] * (1 + cs))))
    return workspace


def padded_mask_bytes(traced, mask: fx.Node) -> sympy.Expr:
    """Bytes of the padded copy preprocess_mask makes (0 when aligned)."""
    val = mask.meta["val"]
    shape = [traced.expr(s) for s in val.shape]
    strides = [traced.expr(s) for s in val.stride()]
    if not shape:
        return sympy.Integer(0)
    last = shape[-1]
    padded_last = last + MEM_EFF_MASK_ALIGN - sympy.Mod(last, MEM_EFF_MASK_ALIGN)
    nbytes = sympy.Mul(*shape[:-1]) * padded_last * val.element_size()
    if strides[-1] != 1:
        return sympy.expand(nbytes)
    aligned = sympy.And(*[sympy.Eq(sympy.Mod(s, MEM_EFF_MASK_ALIGN), 0) for s in strides[:-1]])
    if aligned is sympy.true:
        return sympy.Integer(0)
    if aligned is sympy.false:
        return sympy.expand(nbytes)
    return sympy.Piecewise((0, aligned), (sympy.expand(nbytes), True))


@register_allocation_rule("cuda", *SDPA_OPS)
def cuda_sdpa(traced, node: fx.Node, traced_allocations: list[Allocation]) -> list[Allocation]:
    """The chosen backend's outputs (alive as long as the traced ones) and its
    workspaces (alive only inside the call)."""
    backend, outputs, workspace = sdpa_allocations(traced, node)
    first = traced_allocations[0]
    deaths = {x.output: x.death for x in traced_allocations}
    out = []
    for k, nbytes in enumerate(outputs):
        if k in deaths or k == 0:
            out.append(Allocation(first.time, deaths.get(k, first.death), nbytes, node, k,
                                  label=f"{backend} attention output" if k == 0
                                  else f"{backend} attention logsumexp"))
    for label, nbytes in workspace:
        out.append(Allocation(first.time, first.time + 1, nbytes, node, len(outputs),
                              kind="workspace", label=label))
    return out


@register_allocation_rule("cuda", aten._to_copy)
def cuda_softmax_upcast(traced, node: fx.Node,
                        traced_allocations: list[Allocation]) -> list[Allocation]:
    """_softmax(x, dim, half_to_float=True) reads the fp16 input directly."""
    return [a for a in traced_allocations if not a.half_softmax]


@register_workspace("cuda")
def cublas_workspace(traced) -> int:
    """cuBLAS's workspace, once any op with matrix work (a FLOP rule) ran."""
    uses = any(n.op == "call_function" and n.target in FLOP_RULES
               for n in traced.graph_module.graph.nodes)
    return CUBLAS_WORKSPACE_BYTES if uses else 0
