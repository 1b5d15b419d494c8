#!/usr/bin/env bash
# The main job: the tiny R1-Zero pipeline on the CPU, with built-in defaults.
#   scripts/r1-zero.sh [OUT_DIR]        (default runs/r1-zero; rerun to resume)
# Sets up and builds (a CPU build in build-cpu/), writes a held-out question set (three task
# families: countdown, ordering, list), pretrains the tiny DeepSeek-V3 base on the synthetic corpus
# (r1-pretrain), evaluates it (r1-eval: pass@1 over 8 samples at T 0.6, top-p 0.95, cons@8),
# runs R1-Zero GRPO from it with rule-based rewards (r1-grpo, configs/grpo/tiny.json),
# evaluates again, plots every metrics.jsonl and prints the before/after table.
# Env: R1_PRETRAIN_STEPS, R1_GRPO_STEPS, R1_HOLDOUT_PER_TASK override the defaults;
# OMP_NUM_THREADS the threads (default 1: measured faster than 2 on 2-core machines);
# R1_DEVICE=cuda[:i] runs every stage on that GPU (a CUDA build in build-cuda/; needs nvcc).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cpu-env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
out=${1:-runs/r1-zero}
device=${R1_DEVICE:-cpu}
build=build-cpu cuda=OFF
[[ $device == cpu ]] || build=build-cuda cuda=ON
bin=$build/bin
t0=$(date +%s)

R1_BUILD_DIR=$build R1_CUDA=$cuda scripts/setup.sh --targets "r1-data r1-pretrain r1-grpo r1-eval r1-sample"
mkdir -p "$out"

# Held-out questions: never in the corpus (r1-pretrain --holdout) nor in RL (r1-grpo --holdout).
held="$out/heldout.jsonl"
if [[ ! -s $held ]]; then
  n=${R1_HOLDOUT_PER_TASK:-64}
  : > "$held.tmp"
  for task in countdown ordering list; do
    "$bin/r1-data" tasks --task "$task" --n "$n" --seed 777 --difficulty 1 --lang both \
      --out "$out/heldout-$task.jsonl" >/dev/null
    cat "$out/heldout-$task.jsonl" >> "$held.tmp"
    rm "$out/heldout-$task.jsonl"
  done
  mv "$held.tmp" "$held"
fi

echo "== r1-zero: pretraining the tiny base"
"$bin/r1-pretrain" --config configs/tiny.json --out "$out/base" --holdout "$held" \
  --steps "${R1_PRETRAIN_STEPS:-1400}" --device "$device"
echo "== r1-zero: evaluating the base"
"$bin/r1-eval" --checkpoint "$out/base/checkpoint" --prompts "$held" --samples 8 \
  --temperature 0.6 --top-p 0.95 --out "$out/eval-base.json" --completions "$out/eval-base.jsonl" \
  --device "$device"
echo "== r1-zero: GRPO with rule-based rewards"
"$bin/r1-grpo" --init "$out/base/checkpoint" --out "$out/zero" --config configs/grpo/tiny.json \
  --holdout "$held" ${R1_GRPO_STEPS:+--max-steps "$R1_GRPO_STEPS"} --device "$device"
echo "== r1-zero: evaluating R1-Zero"
"$bin/r1-eval" --checkpoint "$out/zero/checkpoint" --prompts "$held" --samples 8 \
  --temperature 0.6 --top-p 0.95 --out "$out/eval-zero.json" --completions "$out/eval-zero.jsonl" \
  --device "$device"

scripts/plot "$out/base" >/dev/null
scripts/plot "$out/zero" >/dev/null
/usr/bin/python3 scripts/r1_zero_report.py "$out" | tee "$out/report.md"
echo "r1-zero: done in $(( $(date +%s) - t0 ))s; plots in $out/base/plots and $out/zero/plots"
