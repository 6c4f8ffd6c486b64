#!/usr/bin/env bash
# Validate the bundled kernels on one GPU, in under five minutes, from the repository root:
#   1. environment (GPU, versions)                     -> $OUT/env.txt
#   2. run_validation for every variant (correctness,
#      time and memory sweeps vs the formulas)          -> $OUT/validation_<gpu>.json, .png, validate.log
#   3. kernels beside torch SDPA and FlexAttention      -> $OUT/kernels_vs_sdpa.txt
# Each step has its own time limit and log, so one failure or timeout keeps the others' results.
# attncost need not be installed: the repository root goes on PYTHONPATH.
set -x
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
START=$(date +%s)

# 1. environment
{
  date -u
  nvidia-smi || true
  python3 -c "import sys, torch, triton; print(sys.version); print('torch', torch.__version__, 'triton', triton.__version__); print(torch.cuda.get_device_name())"
} > "$OUT/env.txt" 2>&1
GPU=$(python3 -c "from attncost.kernels.harness import gpu_slug; print(gpu_slug())" 2>>"$OUT/env.txt") || GPU=gpu
[ -n "$GPU" ] || GPU=gpu
JSON="$OUT/validation_${GPU}.json"
PNG="$OUT/validation_${GPU}.png"

# 2. validation: the JSON is rewritten after every variant, so a timeout keeps the finished ones
timeout -k 10 190 python3 -m attncost.kernels.harness --device cuda --json "$JSON" --plot "$PNG" \
  > "$OUT/validate.log" 2>&1
echo "validation exit status $? after $(( $(date +%s) - START ))s" >> "$OUT/validate.log"
if [ -s "$JSON" ] && [ ! -s "$PNG" ]; then
  timeout 30 python3 -c "import json, sys; from attncost.kernels.harness import plot_validation; plot_validation(json.load(open(sys.argv[1])), sys.argv[2])" \
    "$JSON" "$PNG" >> "$OUT/validate.log" 2>&1
fi

# 3. kernels vs SDPA / FlexAttention; the later FlexAttention compile gets whatever time is left
LEFT=$(( 285 - ($(date +%s) - START) ))
[ "$LEFT" -gt 20 ] || LEFT=20
timeout -k 5 "$LEFT" python3 benchmarks/kernels_vs_sdpa.py > "$OUT/kernels_vs_sdpa.txt" 2>&1
echo "benchmark exit status $? after $(( $(date +%s) - START ))s" >> "$OUT/kernels_vs_sdpa.txt"

# Summary on stdout
set +x
echo "=== validation summary ($JSON)"
python3 - "$JSON" <<'EOF' || tail -n 30 "$OUT/validate.log"
import json, sys
report = json.load(open(sys.argv[1]))
print("device:", report.get("device"))
for r in report["results"]:
    pts = [p for p in r["points"] if "seconds" in p]
    last = pts[-1] if pts else {}
    fit = r.get("fitted_exponent")
    print(f"{r['variant']:<13} ok={r['ok']!s:<5} correct={r['correct']!s:<5} err={r['max_abs_error']}"
          f" exp={fit if fit is None else round(fit, 3)} (formula {r['formula_exponent']})"
          f" mem_ok={r.get('memory_ok')} kv={r.get('settings', {}).get('kv_fetch')}"
          + (f" N={last['seq_len']} {last['seconds'] * 1e3:.3f}ms {last['tflops']:.1f}TF/s"
             f" bytes x{last['bytes_ratio']:.3f}" if last else "")
          + (f" errors={r['errors']}" if r.get("errors") else ""))
    for p in r["points"]:
        if "error" in p:
            print("   ", p["seq_len"], p["error"])
EOF
echo "=== validate.log (tail)"
tail -n 15 "$OUT/validate.log"
echo "=== kernels_vs_sdpa.txt"
cat "$OUT/kernels_vs_sdpa.txt"
echo "total $(( $(date +%s) - START ))s"
