#!/usr/bin/env bash
# The two halves of a GRPO step on the tiny preset — sampling (KV-cached generation of
# 16 prompts x 8 samples x 64 new tokens) and one GRPO update on those 128 sequences — in r1
# (bench/bench_rl.cc) and in PyTorch eager on the reference model
# (scripts/bench_rl_torch.py), both at one thread. Prints a table of tokens/s and the ratio
# r1 / torch (the target is >= 2), and writes it to bench/results/cpu-rl-<date>.md with the
# CPU model and the commit.
#
# Both run ROUNDS times, alternating (default 3), and each case keeps its best round: on a
# shared machine the other jobs only ever slow a run down. Tokens/s is per second of the
# process's CPU time (one thread: its busy time, which other jobs disturb least); the
# wall-clock rates are written beside it.
#   ROUNDS=3 scripts/bench-rl.sh [--config configs/tiny.json]
# Needs build/bin/bench_rl (ninja -C build bench_rl); R1_BUILD_DIR picks another build dir.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cpu-env.sh
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
bin=${R1_BUILD_DIR:-build}/bin/bench_rl
[[ -x $bin ]] || { echo "missing $bin: ninja -C build bench_rl" >&2; exit 1; }
rounds=${ROUNDS:-3}

runs=$(mktemp)
trap 'rm -f "$runs"' EXIT
for ((i = 1; i <= rounds; ++i)); do
  echo "round $i/$rounds" >&2
  "$bin" "$@" --benchmark_format=json 2>/dev/null | /usr/bin/python3 -c \
    'import json, sys; print(json.dumps(dict(impl="r1", **json.load(sys.stdin))))' >>"$runs"
  /usr/bin/python3 scripts/bench_rl_torch.py --threads 1 "$@" >>"$runs"
done
cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
commit=$(git rev-parse --short HEAD)
[[ -z $(git status --porcelain --untracked-files=no -- . ':!bench/results') ]] || commit="$commit + uncommitted changes"
out=bench/results/cpu-rl-$(date +%F).md
/usr/bin/python3 - "$runs" "$cpu" "$commit" "$out" "$*" <<'PY'
import json, os, sys
runs_path, cpu, commit, out, args = sys.argv[1:6]
runs = [json.loads(l) for l in open(runs_path)]
# r1: {case: [benchmark record per round]}, the names without Google Benchmark's suffixes
r1 = {}
for r in (r for r in runs if r["impl"] == "r1"):
    for b in r["benchmarks"]:
        r1.setdefault(b["name"].split("/min_time")[0], []).append(b)
torch_runs = [r for r in runs if r["impl"] == "torch"]

def r1_rates(case, counter):
    """(best tokens/s per CPU second, best per wall second) over the rounds."""
    bs = r1[case]  # the counters are wall-clock rates; cpu_time and real_time share a unit
    return (max(b[counter] * b["real_time"] / b["cpu_time"] for b in bs),
            max(b[counter] for b in bs))

def torch_rates(part, key):
    rs = [r[part] for r in torch_runs]
    return max(r[key] * r["ms"] / r["cpu_ms"] for r in rs), max(r[key] for r in rs)

rows = [("sampling", "generated", r1_rates("Sampling/eager/1", "generated_tokens/s"),
         torch_rates("sampling", "generated_tokens_per_s"))]
CASES = [("GrpoUpdate/1/1", "batch invariant, prompt shared"),
         ("GrpoUpdate/1/0", "batch invariant, prompt per sample"),
         ("GrpoUpdate/0/1", "OpenBLAS, prompt shared")]
for case, name in CASES:
    rows.append((f"training, {name}", "completion", r1_rates(case, "trained_tokens/s"),
                 torch_rates("training", "trained_tokens_per_s")))
    rows.append((f"training, {name}", "total", r1_rates(case, "total_tokens/s"),
                 torch_rates("training", "total_tokens_per_s")))
table = ["| case | tokens | r1 tokens/s | PyTorch tokens/s | r1 / PyTorch | (wall clock: r1, PyTorch, ratio) |",
         "|---|---|---:|---:|---:|---:|"]
table += [f"| {c} | {k} | {a[0]:.0f} | {b[0]:.0f} | {a[0] / b[0]:.2f} | "
          f"{a[1]:.0f}, {b[1]:.0f}, {a[1] / b[1]:.2f} |" for c, k, a, b in rows]
print("\n".join(table))

def ms_list(xs):
    return ", ".join(f"{x:.0f}" for x in xs)

load = open("/proc/loadavg").read().split()[:3]
s = r1["Sampling/eager/1"]  # (the arg: DecodeMode::kEager)
md = [f"# r1 vs PyTorch eager, RL sampling and GRPO update, {os.path.basename(out)[7:-3]}",
      "",
      f"- CPU: {cpu} ({os.cpu_count()} logical CPUs; load average {' '.join(load)} after the "
      "run, the other jobs of a shared machine included)",
      f"- commit {commit}; PyTorch {torch_runs[0]['torch']}; 1 thread (OMP_NUM_THREADS=1, "
      f"torch.set_num_threads(1)); OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '')}",
      f"- produced by `ROUNDS={len(torch_runs)} {('scripts/bench-rl.sh ' + args).strip()}`: "
      "r1 and PyTorch alternate, each case keeps its best round; tokens/s per second of CPU "
      "time (wall-clock rates in the last column)",
      "- work: tiny preset (configs/tiny.json), random init; sampling = 16 prompts x 8 samples "
      "x 64 new tokens (prefill included, temperature 1, no stop tokens); training = one GRPO "
      "update on 128 sequences of 40 + 64 tokens (forward over B x T = 128 x 103, loss on the "
      "64 completion tokens, backward, AdamW). GrpoTrainer runs the batch-invariant, "
      "prompt-shared case: each question's 40 prompt tokens are computed once for its 8 "
      "samples (DeepseekV3::forward_shared; the same logprobs bit for bit); PyTorch, like "
      "TRL, computes them per sample. The per-sample row is the same arithmetic on both sides",
      "", *table, "",
      "Per-round times (ms per call, wall / CPU):",
      "",
      f"- r1 sampling: {ms_list(b['real_time'] for b in s)} / {ms_list(b['cpu_time'] for b in s)}"
      f" (prefill {ms_list(b['prefill_ms'] for b in s)}, decode {ms_list(b['decode_ms'] for b in s)})",
      f"- PyTorch sampling: {ms_list(r['sampling']['ms'] for r in torch_runs)} / "
      f"{ms_list(r['sampling']['cpu_ms'] for r in torch_runs)} (cached decode checked against "
      f"the full forward: max |dlogit| {torch_runs[0]['sampling']['cache_max_abs_logit_diff']:.2g})",
      *[f"- r1 update, {name}: {ms_list(b['real_time'] for b in r1[case])} / "
        f"{ms_list(b['cpu_time'] for b in r1[case])}"
        for case, name in CASES],
      f"- PyTorch update: {ms_list(r['training']['ms'] for r in torch_runs)} / "
      f"{ms_list(r['training']['cpu_ms'] for r in torch_runs)}", ""]
os.makedirs(os.path.dirname(out), exist_ok=True)
with open(out, "w") as f:
    f.write("\n".join(md))
print(f"wrote {out}")
PY
