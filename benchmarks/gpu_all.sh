#!/usr/bin/env bash
# Every GPU check in one run, from the repository root (about 8 minutes at most):
#   1. peak memory and largest N, predicted vs measured   -> $OUT/memory_<gpu>.json, memory.log
#   2. the bundled kernels (benchmarks/gpu_validate.sh)    -> $OUT/validation_<gpu>.*, ...
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
GPU=$(python3 -c "from attncost.kernels.harness import gpu_slug; print(gpu_slug())" 2>/dev/null) || GPU=gpu
timeout -k 10 170 python3 benchmarks/gpu_memory.py "$OUT/memory_${GPU}.json" --seconds 150 \
  2>&1 | tee "$OUT/memory.log" | tail -n 20
bash benchmarks/gpu_validate.sh
