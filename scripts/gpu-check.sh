#!/usr/bin/env bash
# The one-command GPU check. On a machine with an NVIDIA GPU (sm_90a: H100/H200/H800):
#   1. every CUDA test (R1_REQUIRE_CUDA=1: a test that cannot see the GPU fails, never skips),
#   2. the kernel benchmarks (bench_cuda_kernels: copy and cuBLASLt ceilings first;
#      r1-fp8-tune, the FP8 GEMM's tile-shape sweep, then bench_fp8_gemm with its table),
#      the decode step eager / graph-safe / from CUDA graphs (bench_rl --device cuda),
#      r1-toy-lm trained on the GPU beside the same run on the CPU, the tiny DeepSeek-V3
#      pretrained R1_GPU_PRETRAIN_STEPS (default 30) steps on each in f32 and in fp8, and
#      R1_GPU_GRPO_STEPS (default 60) GRPO steps of the tiny R1-Zero config from the bundled
#      base on the GPU and on the CPU (the reward curves and the speed-up),
#   3. compute-sanitizer memcheck and racecheck over the CUDA tests (when the toolkit has it),
# then writes a results table: <results>/<gpu>-<date>.md and .json (scripts/gpu_results.py).
#
# It runs the binaries of .gpu-bundle/ (unpacked from .gpu-bundle.tar.xz when that is newer),
# made on any machine by scripts/gpu-bundle.sh: the GPU machines have no -dev packages and no
# network, and compiling there costs GPU time.
# Without a bundle it builds one first, which needs this repository's dependencies
# (scripts/setup.sh) on the machine.
#
# Usage: scripts/gpu-check.sh [--out DIR] [--results DIR] [--no-sanitizer]
#                             [--sanitizer-budget SECONDS] [--sanitize test_a,test_b]
#                             [--budget SECONDS]
#   --out DIR       logs and raw outputs (default runs/gpu-check-<date>)
#   --results DIR   where the table goes (default bench/results)
#   --sanitizer-budget  seconds for all sanitizer runs together (default 300); a run cut
#                   short is reported as "timed out", not as clean
#   --sanitize LIST only these test binaries under compute-sanitizer (default: all)
#   --budget SECONDS  the whole check ends inside this many seconds (default: no limit): each
#                   step's timeout is cut to what is left, less 30 s kept for the table, and a
#                   step with under 10 s left is recorded as "not run (budget)". GPU time is
#                   lent by the minute; a hang in one kernel must not cost the rest of the table.
# Environment, for a rerun that needs only part of it (GPU time is lent by the minute):
#   R1_GPU_SKIP="bench_cuda_kernels r1-fp8-tune bench_fp8_gemm bench_rl variants r1-toy-lm r1-pretrain r1-grpo"
#                                  steps left out
#   R1_GPU_TESTS="test_a test_b"   only these test binaries
#   R1_GPU_BENCH_FILTER=REGEX      only these bench_cuda_kernels rows
#   R1_GPU_AB="VAR=value:REGEX ..."  run-time kernel variants, each tested (R1_GPU_AB_TESTS)
#                                  and benchmarked beside the default (see the A/B step)
#   R1_GPU_PROFILE="FILTER:KERNEL_REGEX ..."  Nsight Compute sections for those kernels
#   R1_GPU_GRPO_STEPS, R1_TOY_STEPS  lengths of the end-to-end runs
#   R1_GPU_GRPO_DECODE=static|graphs  the CUDA GRPO run's decode mode (default: the config's)
# Exit status: 0 when every test passed, 1 otherwise (the table is written either way).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD

out=runs/gpu-check-$(date -u +%Y%m%d-%H%M%S)
results=bench/results
sanitizer=1
san_budget=300
san_only=""
budget=0
while (($#)); do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --results) results=$2; shift 2 ;;
    --no-sanitizer) sanitizer=0; shift ;;
    --sanitizer-budget) san_budget=$2; shift 2 ;;
    --sanitize) san_only=",$2,"; shift 2 ;;
    --budget) budget=$2; shift 2 ;;
    *) echo "gpu-check: unknown argument '$1' (see the header of $0)" >&2; exit 2 ;;
  esac
done
mkdir -p "$out" "$results"
out=$(cd "$out" && pwd)
t0=$(date +%s)
elapsed() { echo $(( $(date +%s) - t0 ))s; }
# cap N: N seconds, or what the budget leaves (minus 30 s for the table) when that is less;
# 0 when under 10 s are left (the caller records the step as not run).
cap() {
  local want=$1 left
  if ((budget > 0)); then
    left=$(( t0 + budget - 30 - $(date +%s) ))
    ((left < want)) && want=$left
    ((want < 10)) && want=0
  fi
  echo "$want"
}
# R1_GPU_SKIP="bench_fp8_gemm r1-grpo ...": steps left out on purpose (a rerun that needs
# only some of them); recorded like the steps the budget cut.
off() { [[ " ${R1_GPU_SKIP:-} " == *" $1 "* ]]; }
skip() {
  if off "${1%-c*}"; then echo "gpu-check: $1 not run (R1_GPU_SKIP)"; else echo "gpu-check: $1 not run (budget spent at $(elapsed))"; fi
}

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu-check: no NVIDIA GPU visible (nvidia-smi -L failed)" >&2
  exit 2
fi
if [[ -f .gpu-bundle.tar.xz && ( ! -d .gpu-bundle || .gpu-bundle.tar.xz -nt .gpu-bundle ) ]]; then
  rm -rf .gpu-bundle && tar -xJf .gpu-bundle.tar.xz && touch .gpu-bundle
fi
[[ -x .gpu-bundle/bin/bench_cuda_kernels ]] || scripts/gpu-bundle.sh
bundle=$root/.gpu-bundle
export LD_LIBRARY_PATH=$bundle/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export R1_REQUIRE_CUDA=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
# cuBLASLt is the GPU machine's: the toolkit's, or else a pip wheel's (PyTorch ships one).
if ldd "$bundle/bin/bench_cuda_kernels" | grep -q 'libcublasLt.*not found'; then
  lt=$(timeout 60 find /usr /opt /root /home -name 'libcublasLt.so.13' 2>/dev/null | head -1)
  [[ -n "$lt" ]] && export LD_LIBRARY_PATH=$(dirname "$lt"):$LD_LIBRARY_PATH &&
    echo "gpu-check: cuBLASLt from $lt"
fi
missing=$(ldd "$bundle"/bin/* 2>/dev/null | grep 'not found' | sort -u)
[[ -z "$missing" ]] || echo "gpu-check: WARNING, libraries not found: $missing"
# The PyTorch reference tests (attention, MoE routing, GRPO, parity) run the GPU machine's own
# PyTorch when Debian's /usr/bin/python3 has none, from this checkout's tests/torch_ref.
export R1_SOURCE_DIR=$root
if [[ -z ${R1_TEST_PYTHON:-} ]]; then
  for py in /usr/bin/python3 "$(command -v python3)"; do
    if [[ -x "$py" ]] && "$py" -c 'import torch, numpy' 2>/dev/null; then
      export R1_TEST_PYTHON=$py
      break
    fi
  done
fi
echo "gpu-check: PyTorch reference tests run ${R1_TEST_PYTHON:-no Python with torch and numpy}"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem \
  --format=csv >"$out/gpu.csv" 2>&1
cp "$bundle/MANIFEST" "$out/MANIFEST"
echo "gpu-check: $(sed -n 2p "$out/gpu.csv"); bundle $(head -1 "$bundle/MANIFEST")"

# ---- 1. tests ------------------------------------------------------------------------------
status=0
: >"$out/tests.tsv"
for t in "$bundle"/bin/test_*; do
  [[ -x "$t" ]] || continue
  name=$(basename "$t")
  # R1_GPU_TESTS="test_a test_b": only these (a rerun after a change to some kernels).
  if [[ -n ${R1_GPU_TESTS:-} && " $R1_GPU_TESTS " != *" $name "* ]]; then
    printf '%s\t-\t-\tnot run (R1_GPU_TESTS)\n' "$name" >>"$out/tests.tsv"
    continue
  fi
  lim=$(cap 150)
  if ((lim == 0)); then
    printf '%s\t-\t-\tnot run (budget)\n' "$name" >>"$out/tests.tsv"; skip "$name"; status=1; continue
  fi
  start=$(date +%s)
  timeout "$lim" "$t" --gtest_output="xml:$out/$name.xml" >"$out/$name.log" 2>&1
  rc=$?
  summary=$(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$out/$name.log" | tr '\n' ' ')
  printf '%s\t%s\t%ss\t%s\n' "$name" "$rc" "$(( $(date +%s) - start ))" "$summary" >>"$out/tests.tsv"
  if ((rc != 0)); then
    status=1
    echo "gpu-check: $name FAILED (rc $rc); failures:"
    grep -E -A3 '^\[  FAILED  \]|Failure$' "$out/$name.log" | grep -v '^--$' | head -60
    # Each failed test again alone: a kernel that traps or faults leaves the context's error
    # sticky, and every later CUDA test of the binary fails with it. Alone, a test that then
    # passes was fallout; one that fails again is a failure of its own.
    alone_pass="" alone_fail=""
    for f in $(sed -nE 's/^\[  FAILED  \] ([A-Za-z0-9_/.]+).*/\1/p' "$out/$name.log" | sort -u | head -20); do
      lim=$(cap 60)
      ((lim == 0)) && { alone_fail+=" $f(not-rerun:budget)"; continue; }
      if timeout "$lim" "$t" --gtest_filter="$f" >"$out/$name.alone.${f//\//_}.log" 2>&1; then
        alone_pass+=" $f"
      else
        alone_fail+=" $f"
      fi
    done
    printf '%s\talone\t-\tpass alone:%s; fail alone:%s\n' "$name" "${alone_pass:- none}" \
      "${alone_fail:- none}" >>"$out/tests.tsv"
    echo "gpu-check: $name failures rerun alone: pass (fallout):${alone_pass:- none}; fail:${alone_fail:- none}"
  else
    echo "gpu-check: $name ok ($summary)"
  fi
done
echo "gpu-check: tests done at $(elapsed)"

# ---- 2. benchmarks -------------------------------------------------------------------------
bench_args=(--benchmark_out="$out/bench.json" --benchmark_out_format=json)
# R1_GPU_BENCH_FILTER: a --benchmark_filter regex (a rerun that needs only some rows).
[[ -n ${R1_GPU_BENCH_FILTER:-} ]] && bench_args+=(--benchmark_filter="$R1_GPU_BENCH_FILTER")
lim=$(cap 240)
off bench_cuda_kernels && lim=0
((lim == 0)) && skip bench_cuda_kernels ||
timeout "$lim" "$bundle/bin/bench_cuda_kernels" "${bench_args[@]}" >"$out/bench.log" 2>&1 ||
  { echo "gpu-check: bench_cuda_kernels failed (rc $?), tail:"; tail -20 "$out/bench.log"; status=1; }
# The wgmma FP8 GEMM's tile-shape sweep: each configuration checked against the simple
# kernel, then timed; the table lands in $out/tuned (copied to the results directory) and
# bench_fp8_gemm below reads it. The committed table (bench/tuned/) is the fallback.
export R1_TUNED_DIR="$PWD/bench/tuned"
lim=$(cap 150)
off r1-fp8-tune && lim=0
if ((lim == 0)); then
  skip r1-fp8-tune
elif [[ -x "$bundle/bin/r1-fp8-tune" ]]; then
  mkdir -p "$out/tuned"
  if R1_TUNED_DIR="$out/tuned" timeout "$lim" "$bundle/bin/r1-fp8-tune" >"$out/fp8_tune.log" 2>&1; then
    export R1_TUNED_DIR="$out/tuned"
  else
    echo "gpu-check: r1-fp8-tune failed (rc $?), tail:"; tail -20 "$out/fp8_tune.log"; status=1
    ls "$out/tuned"/*.tsv >/dev/null 2>&1 && export R1_TUNED_DIR="$out/tuned"
  fi
fi
lim=$(cap 200)
off bench_fp8_gemm && lim=0
if ((lim == 0)); then
  skip bench_fp8_gemm
elif [[ -x "$bundle/bin/bench_fp8_gemm" ]]; then
  timeout "$lim" "$bundle/bin/bench_fp8_gemm" --benchmark_out="$out/bench_fp8.json" \
    --benchmark_out_format=json >"$out/bench_fp8.log" 2>&1 ||
    { echo "gpu-check: bench_fp8_gemm failed (rc $?), tail:"; tail -20 "$out/bench_fp8.log"; status=1; }
fi
# Kernel variants the code can switch between at run time (an environment variable each),
# benchmarked beside the default so that the next change picks the faster from numbers:
# "VAR=value:benchmark filter" items.
# R1_ROW_VARIANT (kernels/cuda/common/launch.cuh) reshapes the RMSNorm and cross-entropy
# forward row kernels; R1_RMSNORM_BWD=smem keeps the two-read RMSNorm backward;
# R1_RMSNORM_BWD_ROWS sets the rows per RMSNorm backward block (default 32); R1_ROW_PIPE=1
# streams the RMSNorm rows through shared memory by bulk copies (kernels/cuda/norm_pipe.cu).
ab_default="R1_ROW_PIPE=1:RmsNorm R1_RMSNORM_BWD=smem:RmsNormBackward"
for r in 8 16 64; do ab_default+=" R1_RMSNORM_BWD_ROWS=$r:RmsNormBackward"; done
for v in 1 2 3 4 5 6 7; do ab_default+=" R1_ROW_VARIANT=$v:RmsNorm|CrossEntropyForward"; done
for ab in ${R1_GPU_AB:-$ab_default}; do
  off variants && { skip variants; break; }
  var=${ab%%:*} filter=${ab#*:} tag=${ab%%:*}
  tag=${tag//=/_}
  lim=$(cap 60)
  ((lim == 0)) && { skip "variant $var"; continue; }
  # The variant's code paths are tested before they are timed: the tests that cover them
  # (R1_GPU_AB_TESTS, default test_cuda_model_ops) run with the switch set.
  for tb in ${R1_GPU_AB_TESTS:-test_cuda_model_ops}; do
    start=$(date +%s)
    env "$var" timeout "$lim" "$bundle/bin/$tb" >"$out/$tb.$tag.log" 2>&1
    rc=$?
    summary=$(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$out/$tb.$tag.log" | tr '\n' ' ')
    printf '%s\t%s\t%ss\t%s\n' "$tb ($var)" "$rc" "$(( $(date +%s) - start ))" "$summary" \
      >>"$out/tests.tsv"
    ((rc == 0)) || { status=1; echo "gpu-check: $tb with $var FAILED (rc $rc)"; }
  done
  lim=$(cap 60)
  ((lim == 0)) && { skip "variant $var"; continue; }
  env "$var" timeout "$lim" "$bundle/bin/bench_cuda_kernels" --benchmark_filter="$filter" \
    --benchmark_out="$out/bench_ab_$tag.json" --benchmark_out_format=json \
    >"$out/bench_ab_$tag.log" 2>&1 ||
    echo "gpu-check: variant $var failed (rc $?)"
  echo "$var" >"$out/bench_ab_$tag.var"
done
# Nsight Compute on named kernels, when asked: R1_GPU_PROFILE="FILTER:KERNEL_REGEX ..." runs
# bench_cuda_kernels --benchmark_filter=FILTER under ncu and profiles the second launch of
# the first kernel matching KERNEL_REGEX (the first is the warm-up), with the sections that
# say why a kernel sits below its ceiling: speed of light, occupancy and launch statistics,
# warp states, scheduler, memory workload. Text into ncu_<FILTER>.txt; gpu_results.py quotes
# the headline numbers.
if [[ -n ${R1_GPU_PROFILE:-} ]]; then
  ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
  for pr in $R1_GPU_PROFILE; do
    filter=${pr%%:*} kname=${pr#*:}
    tag=$(printf '%s' "$filter" | tr -c 'A-Za-z0-9_' '_')
    lim=$(cap 90)
    ((lim == 0)) && { skip "profile $filter"; continue; }
    [[ -n "$ncu" && -x "$ncu" ]] || { echo "gpu-check: ncu not found, no profiles"; break; }
    timeout "$lim" "$ncu" --kernel-name "regex:$kname" --launch-skip 1 --launch-count 1 \
      --section SpeedOfLight --section Occupancy --section LaunchStats \
      --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis \
      "$bundle/bin/bench_cuda_kernels" --benchmark_filter="$filter" >"$out/ncu_$tag.txt" 2>&1 ||
      echo "gpu-check: ncu on $filter failed (rc $?)"
  done
fi
echo "gpu-check: benchmarks done at $(elapsed)"

# ---- 2a. the decode step: eager, graph-safe, replayed from CUDA graphs (bench_rl) ----------
# The tiny model in bf16, 128 samples x 64 tokens: the step is launch-bound, what graphs fix.
lim=$(cap 90)
off bench_rl && lim=0
if ((lim == 0)); then
  skip bench_rl
elif [[ -x "$bundle/bin/bench_rl" ]]; then
  timeout "$lim" "$bundle/bin/bench_rl" --config configs/tiny.json --device cuda --dtype bf16 \
    --benchmark_filter=Sampling --benchmark_out="$out/bench_decode.json" \
    --benchmark_out_format=json >"$out/bench_decode.log" 2>&1 ||
    { echo "gpu-check: bench_rl --device cuda failed (rc $?), tail:"; tail -20 "$out/bench_decode.log"; status=1; }
  # The same with FP8 projections: the static and graphs steps run the experts in the grouped
  # GEMM's masked layout (the routed cost) instead of every expert on every token.
  lim=$(cap 90)
  if ((lim == 0)); then
    skip "bench_rl fp8"
  else
    timeout "$lim" "$bundle/bin/bench_rl" --config configs/tiny.json --device cuda --dtype bf16 \
      --precision fp8 --benchmark_filter=Sampling --benchmark_out="$out/bench_decode_fp8.json" \
      --benchmark_out_format=json >"$out/bench_decode_fp8.log" 2>&1 ||
      { echo "gpu-check: bench_rl --precision fp8 failed (rc $?), tail:"; tail -20 "$out/bench_decode_fp8.log"; status=1; }
  fi
fi
echo "gpu-check: decode benchmark done at $(elapsed)"

# ---- 2b. end to end: the toy LM trained on the GPU and on this machine's CPU ---------------
# Same seed, same initial weights (drawn on the CPU): the loss curves must agree to within the
# drift of different f32 summation orders; gpu_results.py compares them and the speed.
for dev in cuda cpu; do
  lim=$(cap 120)
  off r1-toy-lm && lim=0
  ((lim == 0)) && { skip "r1-toy-lm-$dev"; continue; }
  rm -rf "$out/toy-$dev"  # a rerun into the same --out starts afresh, not from the last run
  timeout "$lim" "$bundle/bin/r1-toy-lm" --device "$dev" --steps "${R1_TOY_STEPS:-100}" \
    --out "$out/toy-$dev" >"$out/toy-$dev.log" 2>&1 ||
    { echo "gpu-check: r1-toy-lm --device $dev failed (rc $?), tail:"; tail -5 "$out/toy-$dev.log"; status=1; }
done
echo "gpu-check: toy LM done at $(elapsed)"

# ---- 2b'. end to end: the tiny DeepSeek-V3 pretrained on the GPU and on the CPU, f32 and fp8 --
# r1-pretrain --device: the same corpus, batches and initial weights on both; in f32 the loss
# curves agree as the toy LM's do, in fp8 (DeepSeek-V3's recipe: MLA and expert projections
# through the FP8 quantizers and GEMMs, fprop, dgrad and 1D1D wgrad) to the tensor cores'
# accumulation against the CPU's exact sums. gpu_results.py compares them step by step. The
# base's config and tokenizer (no BPE training here), a small corpus.
if [[ -f $bundle/base/config.json && -x $bundle/bin/r1-pretrain ]]; then
  for prec in default fp8; do
    for dev in cuda cpu; do
      lim=$(cap 120)
      off r1-pretrain && lim=0
      ((lim == 0)) && { skip "r1-pretrain-$prec-$dev"; continue; }
      rm -rf "$out/pretrain-$prec-$dev"  # r1-pretrain would resume a previous check's run
      timeout "$lim" "$bundle/bin/r1-pretrain" --config "$bundle/base/config.json" \
        --tokenizer "$bundle/base/tokenizer.json" --docs 3000 --precision "$prec" \
        --steps "${R1_GPU_PRETRAIN_STEPS:-30}" --device "$dev" \
        --out "$out/pretrain-$prec-$dev" >"$out/pretrain-$prec-$dev.log" 2>&1 ||
        { echo "gpu-check: r1-pretrain --precision $prec --device $dev failed (rc $?), tail:"
          tail -5 "$out/pretrain-$prec-$dev.log"; status=1; }
    done
  done
  echo "gpu-check: pretraining done at $(elapsed)"
else
  echo "gpu-check: no base config or r1-pretrain in the bundle, pretraining step skipped"
fi

# ---- 2c. end to end: GRPO (configs/grpo/tiny.json) from the bundled base, GPU and CPU --------
# The same seeds; the rollouts part ways once the devices round differently, so the curves
# agree in distribution (gpu_results.py compares the mean reward and accuracy), not per step.
# R1_GPU_GRPO_DECODE=static|graphs: the CUDA run's rollouts in that decode mode (the GRPO
# config's "decode"; the CPU run keeps the default); recorded in the table.
# R1_GPU_INVARIANT_GEMM (default 1): the CUDA run's R1_INVARIANT_GEMM, the batch-invariant
# gemm under generation and scoring (kernels/cuda/gemm_invariant.cu) until it is the default;
# with it the run's logprob_mismatch_max should be 0, as on the CPU. Recorded in the table.
if [[ -f $bundle/base/model.safetensors ]]; then
  for dev in cuda cpu; do
    lim=$(cap 240)
    off r1-grpo && lim=0
    ((lim == 0)) && { skip "r1-grpo-$dev"; continue; }
    grpo_cfg=configs/grpo/tiny.json
    if [[ $dev == cuda && -n ${R1_GPU_GRPO_DECODE:-} ]]; then
      grpo_cfg=$out/grpo-config-cuda.json
      python3 -c 'import json, sys; c = json.load(open(sys.argv[1])); c["decode"] = sys.argv[2]
json.dump(c, open(sys.argv[3], "w"), indent=1)' configs/grpo/tiny.json "$R1_GPU_GRPO_DECODE" \
        "$grpo_cfg"
      echo "$R1_GPU_GRPO_DECODE" >"$out/grpo-decode-cuda.txt"
    fi
    inv=0
    [[ $dev == cuda ]] && inv=${R1_GPU_INVARIANT_GEMM:-1} && echo "$inv" >"$out/grpo-invariant-cuda.txt"
    rm -rf "$out/grpo-$dev"  # r1-grpo would resume a previous check's run from its checkpoint
    R1_INVARIANT_GEMM=$inv timeout "$lim" "$bundle/bin/r1-grpo" --init "$bundle/base" --out "$out/grpo-$dev" \
      --config "$grpo_cfg" --holdout "$bundle/base/heldout.jsonl" \
      --max-steps "${R1_GPU_GRPO_STEPS:-60}" --device "$dev" >"$out/grpo-$dev.log" 2>&1 ||
      { echo "gpu-check: r1-grpo --device $dev failed (rc $?), tail:"; tail -5 "$out/grpo-$dev.log"; status=1; }
  done
  echo "gpu-check: GRPO done at $(elapsed)"
else
  echo "gpu-check: no base in the bundle, GRPO step skipped"
fi

# ---- 3. compute-sanitizer ------------------------------------------------------------------
san=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
: >"$out/sanitizer.tsv"
if ((sanitizer)) && [[ -x "$san" ]]; then
  san_left=$(cap "$san_budget")
  san_end=$(( $(date +%s) + san_left ))
  # racecheck takes test_attention last: it ran past the whole 150 s budget on the H200
  # (ee1d294) and left every other binary unchecked.
  mapfile -t order < <(ls "$bundle"/bin/test_* | grep -v '/test_attention$'; ls "$bundle"/bin/test_attention 2>/dev/null)
  for tool in memcheck racecheck; do
    for t in "${order[@]}"; do
      [[ -x "$t" ]] || continue
      name=$(basename "$t")
      [[ -z "$san_only" || "$san_only" == *",$name,"* ]] || continue
      # racecheck looks for shared-memory races: cuBLASLt's kernels are not ours to check
      # (and take minutes under it).
      [[ "$tool" == racecheck && "$name" == test_cuda_gemm ]] && continue
      left=$(( san_end - $(date +%s) ))
      if ((left < 10)); then
        printf '%s\t%s\t-\tnot run (sanitizer budget spent)\n' "$tool" "$name" >>"$out/sanitizer.tsv"
        continue
      fi
      # racecheck only matters for kernels with shared memory; both run every test case.
      # The out-of-memory test makes cudaMalloc fail on purpose; memcheck would count those
      # API errors.
      timeout "$left" "$san" --tool "$tool" --error-exitcode 99 --print-limit 20 "$t" \
        --gtest_filter=-CudaAllocator.OutOfMemoryEmptiesTheCacheAndRetries \
        >"$out/$name.$tool.log" 2>&1
      rc=$?
      ((rc == 124)) && { printf '%s\t%s\t124\ttimed out\n' "$tool" "$name" >>"$out/sanitizer.tsv"; continue; }
      errs=$(grep -Eo '(ERROR SUMMARY: [0-9]+ error|RACECHECK SUMMARY: .*)' \
        "$out/$name.$tool.log" | tail -1)
      printf '%s\t%s\t%s\t%s\n' "$tool" "$name" "$rc" "${errs:-no summary}" >>"$out/sanitizer.tsv"
      ((rc == 99)) && status=1
      echo "gpu-check: $tool $name rc=$rc ${errs:-}"
    done
  done
else
  echo "gpu-check: compute-sanitizer not run ($san missing or --no-sanitizer)" | tee "$out/sanitizer.tsv"
fi
echo "gpu-check: sanitizer done at $(elapsed)"

python3 scripts/gpu_results.py --out "$out" --results "$results" || status=1
echo "gpu-check: finished in $(elapsed), status $status"
exit $status
