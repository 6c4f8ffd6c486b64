"""The bundled kernels beside torch SDPA and FlexAttention, in one process, on one GPU.

bf16, B=1, H=16, d=128.  Times are medians of triton.testing.do_bench (CUDA
events, warm-up, L2 flushed); TFLOP/s use the mask-aware ``useful_flops`` of
specs/variants.yaml for every implementation alike.  "speed" is reference
time / our time (above 1: ours is faster).

    PYTHONPATH=$PWD python3 benchmarks/kernels_vs_sdpa.py [--no-flex] [--quick]
"""
from __future__ import annotations

import argparse
import inspect
import sys
import time

import torch
import torch.nn.functional as F
import triton
import triton.testing

from attncost.kernels import dense, linear, local, sparse
from attncost.patterns.formulas import formula

B, H, D = 1, 16, 128
DTYPE = torch.bfloat16
WINDOW = 512
SPARSE_BLOCK = 128
BIGBIRD = {"global_blocks": 1, "window_blocks": 3, "random_blocks": 2, "seed": 0}
K = 1024

STARTED = time.perf_counter()


def out(line: str = "") -> None:
    print(line, flush=True)


def bench_ms(fn) -> float:
    fn()
    torch.cuda.synchronize()
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def qkv(n: int):
    gen = torch.Generator(device="cuda").manual_seed(0)
    return tuple(torch.randn(B, H, n, D, device="cuda", dtype=DTYPE, generator=gen) for _ in range(3))


def useful(variant: str, n: int, **symbols) -> int:
    return formula(variant).evaluate("useful_flops", B=B, H=H, N=n, d=D, **symbols)


def row(case: str, n: int, ours_ms: float | None, ref_name: str, ref_ms: float | None, flops: int, note: str = ""):
    def tf(ms):
        return f"{flops / (ms * 1e-3) / 1e12:8.1f}" if ms else "       -"

    def ms_(ms):
        return f"{ms:9.3f}" if ms else "        -"

    speed = f"{ref_ms / ours_ms:6.2f}" if ours_ms and ref_ms else "     -"
    out(f"{case:<24}{n:>9}  {ms_(ours_ms)} {tf(ours_ms)}   {ref_name:<14}{ms_(ref_ms)} {tf(ref_ms)}  {speed}  {note}")


def header(title: str) -> None:
    out()
    out(f"## {title}  [{time.perf_counter() - STARTED:.0f}s]")
    out(f"{'case':<24}{'N':>9}  {'ours ms':>9} {'TFLOP/s':>8}   {'reference':<14}{'ref ms':>9} {'TFLOP/s':>8}  {'speed':>6}")


def attempt(fn, label: str):
    try:
        return fn()
    except torch.cuda.OutOfMemoryError:
        out(f"  {label}: out of memory")
    except Exception as exc:  # keep going: one failure must not hide the other numbers
        out(f"  {label}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    finally:
        torch.cuda.empty_cache()
    return None


def best_config(kernel) -> str:
    cfg = getattr(kernel, "best_config", None)
    if cfg is None:
        return ""
    return f"cfg {cfg.kwargs} w{cfg.num_warps} s{cfg.num_stages}"


def sdpa(q, k, v, causal):
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def run_dense(lens):
    header("dense vs torch SDPA")
    for causal in (False, True):
        name = "causal_dense" if causal else "dense"
        for n in lens:
            q, k, v = qkv(n)
            ours = attempt(lambda: bench_ms(lambda: dense.flash_attention(q, k, v, causal=causal)), f"{name} {n}")
            note = best_config(dense._banded_attn_fwd_tuned)
            ref = attempt(lambda: bench_ms(lambda: sdpa(q, k, v, causal)), f"sdpa {n}")
            row(name, n, ours, "sdpa", ref, useful(name, n), note)
            del q, k, v
    n = 16 * K
    q, k, v = qkv(n)
    ours = attempt(lambda: bench_ms(lambda: dense.flash_attention(q, k, v, use_tma=False)), "dense pointer")
    ref = attempt(lambda: bench_ms(lambda: sdpa(q, k, v, False)), "sdpa")
    row("dense (pointer loads)", n, ours, "sdpa", ref, useful("dense", n), best_config(dense._banded_attn_fwd_tuned))


def run_local(lens, results):
    header(f"local, causal window {WINDOW}, vs causal SDPA (full causal work)")
    for n in lens:
        q, k, v = qkv(n)
        ours = attempt(lambda: bench_ms(lambda: local.local_attention(q, k, v, WINDOW, causal=True)), f"local {n}")
        results[n] = ours
        ref = attempt(lambda: bench_ms(lambda: sdpa(q, k, v, True)), f"sdpa {n}")
        row(f"local causal w={WINDOW}", n, ours, "sdpa causal", ref, useful("local", n, w=WINDOW),
            best_config(dense._banded_attn_fwd_tuned))
        del q, k, v


def bigbird(n):
    nb = n // SPARSE_BLOCK
    layout = sparse.bigbird_layout(nb, **BIGBIRD)
    return layout, sparse.layout_to_block_lists(layout.cuda())


def run_sparse(lens, results):
    header(f"block-sparse BigBird (block {SPARSE_BLOCK}), vs causal SDPA")
    for n in lens:
        q, k, v = qkv(n)
        layout, lists = bigbird(n)
        kq = sparse.keys_per_query(layout, n, SPARSE_BLOCK)
        ours = attempt(lambda: bench_ms(lambda: sparse.block_sparse_attention(q, k, v, lists, SPARSE_BLOCK)),
                       f"sparse {n}")
        results[n] = ours
        ref = attempt(lambda: bench_ms(lambda: sdpa(q, k, v, True)), f"sdpa {n}")
        flops = formula("sparse").evaluate("useful_flops", B=B, H=H, N=n, d=D, k=kq)
        row("sparse bigbird", n, ours, "sdpa causal", ref, flops,
            f"k={float(kq):.0f} {best_config(sparse._block_sparse_fwd_tuned)}")
        del q, k, v


def run_linear(lens):
    header("linear (elu + 1, r = d) vs causal SDPA where SDPA fits")
    for n in lens:
        q, k, v = qkv(n)
        flops = useful("linear", n, r=D)
        ref = attempt(lambda: bench_ms(lambda: sdpa(q, k, v, True)), f"sdpa {n}") if n <= 64 * K else None
        for causal in (False, True):
            ours = attempt(lambda: bench_ms(lambda: linear.linear_attention(q, k, v, "elu", causal)),
                           f"linear {n}")
            row(f"linear {'causal' if causal else 'non-causal'}", n, ours, "sdpa causal", ref, flops)
        del q, k, v


def run_flex(local_lens, sparse_lens, local_ours, sparse_ours):
    try:
        from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention
    except ImportError:
        out("FlexAttention not available in this torch")
        return
    header("FlexAttention (torch.compile) with block masks; 'speed' = flex time / our time")
    flex = torch.compile(flex_attention, dynamic=False)
    compile_mask = "_compile" in inspect.signature(create_block_mask).parameters

    def sliding(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & (q_idx - kv_idx < WINDOW)

    for n in local_lens:
        q, k, v = qkv(n)
        kwargs = {"_compile": True} if compile_mask else {}
        mask = attempt(lambda: create_block_mask(sliding, None, None, n, n, device="cuda", **kwargs),
                       f"flex mask {n}")
        ref = attempt(lambda: bench_ms(lambda: flex(q, k, v, block_mask=mask)), f"flex local {n}") if mask else None
        row(f"local causal w={WINDOW}", n, local_ours.get(n), "flex", ref, useful("local", n, w=WINDOW))
        del q, k, v
    for n in sparse_lens:
        q, k, v = qkv(n)
        layout, lists = bigbird(n)
        nb = n // SPARSE_BLOCK
        indices = torch.zeros(1, 1, nb, nb, dtype=torch.int32, device="cuda")
        indices[..., : lists.cols.shape[-1]] = lists.cols
        mask = attempt(lambda: BlockMask.from_kv_blocks(lists.counts[None].contiguous(), indices,
                                                        BLOCK_SIZE=SPARSE_BLOCK), f"flex block mask {n}")
        ref = attempt(lambda: bench_ms(lambda: flex(q, k, v, block_mask=mask)), f"flex sparse {n}") if mask else None
        kq = sparse.keys_per_query(layout, n, SPARSE_BLOCK)
        row("sparse bigbird", n, sparse_ours.get(n), "flex", ref,
            formula("sparse").evaluate("useful_flops", B=B, H=H, N=n, d=D, k=kq))
        del q, k, v


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-flex", action="store_true", help="skip FlexAttention (its compile takes a while)")
    parser.add_argument("--quick", action="store_true", help="fewer lengths")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        out("needs a CUDA GPU")
        return 2
    out(f"# {torch.cuda.get_device_name()}  torch {torch.__version__}  triton {triton.__version__}"
        f"  bf16 B={B} H={H} d={D}")
    dense_lens = [4 * K, 16 * K] if args.quick else [4 * K, 16 * K, 32 * K]
    local_lens = [4 * K, 64 * K] if args.quick else [4 * K, 16 * K, 64 * K]
    sparse_lens = [16 * K, 64 * K]
    linear_lens = [64 * K, 1024 * K] if args.quick else [16 * K, 64 * K, 256 * K, 1024 * K]
    local_ours, sparse_ours = {}, {}
    run_dense(dense_lens)
    run_local(local_lens, local_ours)
    run_sparse(sparse_lens, sparse_ours)
    run_linear(linear_lens)
    if not args.no_flex:
        run_flex(local_lens, sparse_lens, local_ours, sparse_ours)
    out(f"\ndone in {time.perf_counter() - STARTED:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
