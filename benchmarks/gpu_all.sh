#!/usr/bin/env bash
# Every GPU check in one run, from the repository root (about 20 minutes at most);
# each step has its own time limit and log, so one failure keeps the others' results:
#   0. the CUDA context of this card                       -> $OUT/cuda_context_<gpu>.txt
#   1. allocator traces of small forwards                  -> tests/data/allocator/*_<gpu>.json
#   2. peak memory, reserved memory and the largest N under
#      allocator caps of 8, 12, 24 and 80 GiB               -> $OUT/memory_<gpu>.json, memory.log
#   3. a training step's peak, with and without checkpointing -> $OUT/training_<gpu>.json
#   4. calibration tables (attncost calibrate)             -> attncost/specs/calibration/<gpu>.yaml
#   5. forward and decode latency                          -> $OUT/latency_<gpu>.json
#   6. the bundled kernels (benchmarks/gpu_validate.sh)    -> $OUT/validation_<gpu>.*, ...
# Copy $OUT/*.json into docs/validation/ and commit them with the traces and the calibration.
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT" tests/data/allocator
GPU=$(python3 -c "from attncost.kernels.harness import gpu_slug; print(gpu_slug())" 2>/dev/null) || GPU=gpu
timeout -k 5 60 python3 benchmarks/measure_cuda_context.py > "$OUT/cuda_context_${GPU}.txt" 2>&1
for case in "mha_causal 2048 2" "sdpa_causal_gqa 4096 1" "dense_unfused 1024 1"; do
  set -- $case
  timeout -k 5 60 python3 benchmarks/record_allocator_trace.py "tests/models/$1.py" \
    "tests/data/allocator/$1_$2_${GPU}.json" --seq-len "$2" --batch "$3" 2>&1 | tail -n 3
done
timeout -k 10 330 python3 benchmarks/gpu_memory.py "$OUT/memory_${GPU}.json" --seconds 300 \
  --caps 8,12,24,80 2>&1 | tee "$OUT/memory.log" | tail -n 20
timeout -k 10 260 python3 benchmarks/measure_training.py "$OUT/training_${GPU}.json" \
  --seconds 240 2>&1 | tee "$OUT/training.log" | tail -n 10
timeout -k 10 200 python3 -m attncost.cli calibrate --out "attncost/specs/calibration/${GPU}.yaml" \
  2>&1 | tee "$OUT/calibrate.log" | tail -n 5
timeout -k 10 330 python3 benchmarks/measure_latency.py --out "$OUT/latency_${GPU}.json" \
  --seconds 300 2>&1 | tee "$OUT/latency.log" | tail -n 20
[ -n "$SKIP_KERNELS" ] || bash benchmarks/gpu_validate.sh
