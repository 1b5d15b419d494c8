#!/usr/bin/env bash
# Runs one CPU training step of the same small stack in r1 (bench/bench_train_step.cc) and in
# PyTorch eager (scripts/bench_train_step_torch.py) at the same thread count, and prints both
# step times and the ratio r1 / torch (below 1: r1 is faster).
#   scripts/bench-train-step.sh [threads] [--dim 256 --hidden 768 --vocab 2048 --layers 4
#                                          --batch 8 --seq 128]
# Needs build/bin/bench_train_step (ninja -C build bench_train_step).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cpu-env.sh
threads=${1:-$(nproc)}
shift || true
export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads
bin=${R1_BUILD_DIR:-build}/bin/bench_train_step
[[ -x $bin ]] || { echo "missing $bin: ninja -C build bench_train_step" >&2; exit 1; }

r1_json=$("$bin" "$@" --benchmark_format=json 2>/dev/null)
torch_json=$(/usr/bin/python3 scripts/bench_train_step_torch.py --threads "$threads" "$@")
/usr/bin/python3 - "$r1_json" "$torch_json" "$threads" <<'PY'
import json, sys
r1 = json.loads(sys.argv[1])["benchmarks"][0]
torch = json.loads(sys.argv[2])
r1_ms = r1["real_time"]  # the benchmark's unit is ms
print(json.dumps(dict(impl="r1", threads=int(sys.argv[3]), step_ms=r1_ms,
                      tokens_per_s=r1["tokens/s"], loss=r1["loss"], label=r1.get("label"))))
print(json.dumps(torch))
print(f"threads {sys.argv[3]}: r1 {r1_ms:.2f} ms/step, torch {torch['step_ms']:.2f} ms/step, "
      f"r1/torch step time {r1_ms / torch['step_ms']:.2f}")
PY
