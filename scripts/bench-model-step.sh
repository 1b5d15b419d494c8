#!/usr/bin/env bash
# One CPU training step of a configs/ preset in r1 (bench/bench_model_step.cc) and in the
# PyTorch reference models (scripts/bench_model_step_torch.py), at the same thread count;
# prints both and the ratio of tokens/s (above 1: r1 is faster).
#   scripts/bench-model-step.sh [threads] [--config configs/tiny.json --batch 8 --seq 64]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cpu-env.sh
threads=${1:-$(nproc)}
shift || true
export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads
bin=${R1_BUILD_DIR:-build}/bin/bench_model_step
[[ -x $bin ]] || { echo "missing $bin: ninja -C build bench_model_step" >&2; exit 1; }
r1_json=$("$bin" "$@" --benchmark_format=json 2>/dev/null)
torch_json=$(/usr/bin/python3 scripts/bench_model_step_torch.py --threads "$threads" "$@")
/usr/bin/python3 - "$r1_json" "$torch_json" "$threads" <<'PY'
import json, sys
r1 = json.loads(sys.argv[1])["benchmarks"][0]
t = json.loads(sys.argv[2])
print(json.dumps(dict(impl="r1", threads=int(sys.argv[3]), step_ms=r1["real_time"],
                      tokens_per_s=r1["tokens/s"], loss=r1["loss"], label=r1.get("label"))))
print(json.dumps(t))
print(f"threads {sys.argv[3]} {t['config']}: r1 {r1['real_time']:.1f} ms/step "
      f"({r1['tokens/s']:.0f} tok/s), torch {t['step_ms']:.1f} ms/step "
      f"({t['tokens_per_s']:.0f} tok/s); r1/torch tokens/s {r1['tokens/s'] / t['tokens_per_s']:.2f}")
PY
