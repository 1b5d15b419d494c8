#!/usr/bin/env bash
# The main job until scripts/r1-zero.sh exists: set up, build, train the tiny byte-level LM
# (examples/toy_lm.cc) on the CPU, plot its metrics. Extra args go to r1-toy-lm.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cpu-env.sh
scripts/setup.sh
out=runs/toy-lm
build/bin/r1-toy-lm --out "$out" "$@"
scripts/plot "$out"
echo "train-toy: metrics in $out/metrics.jsonl, plots in $out/plots/"
