#!/usr/bin/env python3
"""Turns one scripts/gpu-check.sh run into the results table.

  scripts/gpu_results.py --out RUN_DIR [--results bench/results]

Reads RUN_DIR/{gpu.csv, MANIFEST, tests.tsv, bench.json, sanitizer.tsv} and writes
<results>/<gpu>-<date>.md (the table a reader looks at) and .json (the same numbers for
scripts). Standard library only: it runs on the GPU machines' Python as well as here.
"""
import argparse
import csv
import datetime
import json
import os
import re
import sys

# The CUDA issue's bar: memory-bound kernels at >= 70% of the measured copy bandwidth.
MEMORY_BOUND_TARGET = 0.70
TARGETED = ("RmsNorm", "Rope", "Swiglu", "AdamW", "EmbeddingBackward", "CrossEntropy")


def read(path, default=""):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return default


def gpu_info(out):
    rows = list(csv.reader(read(os.path.join(out, "gpu.csv")).splitlines()))
    if len(rows) < 2:
        return {"name": "unknown-gpu"}
    head = [h.strip() for h in rows[0]]
    vals = [v.strip() for v in rows[1]]
    return dict(zip(head, vals)) | {"name": vals[0]}


def tests(out):
    res = []
    for line in read(os.path.join(out, "tests.tsv")).splitlines():
        parts = line.split("\t")
        if len(parts) >= 4:
            rc = int(parts[1]) if parts[1].lstrip("-").isdigit() else parts[1]  # "-": not run
            res.append({"binary": parts[0], "rc": rc, "time": parts[2],
                        "summary": parts[3].strip()})
    return res


def sanitizer(out):
    res = []
    for line in read(os.path.join(out, "sanitizer.tsv")).splitlines():
        parts = line.split("\t")
        if len(parts) >= 4:
            res.append({"tool": parts[0], "binary": parts[1], "rc": parts[2],
                        "summary": parts[3].strip()})
        elif line.strip():
            res.append({"tool": "-", "binary": "-", "rc": "-", "summary": line.strip()})
    return res


def salvage_bench_json(text):
    """The context and every complete benchmark entry of a Google Benchmark JSON file cut off
    mid-write (the binary aborted), plus one error row saying so."""
    dec = json.JSONDecoder()
    data = {"context": {}, "benchmarks": []}
    i = text.find('"context"')
    if i >= 0:
        try:
            data["context"], _ = dec.raw_decode(text, text.index("{", i))
        except ValueError:
            pass
    i = text.find('"benchmarks"')
    if i >= 0:
        i = text.index("[", i) + 1
        while True:
            j = text.find("{", i)
            if j < 0:
                break
            try:
                obj, i = dec.raw_decode(text, j)
            except ValueError:
                break
            data["benchmarks"].append(obj)
    data["benchmarks"].append({"name": "(the rest)", "error_occurred": True,
                               "error_message": "the binary stopped mid-run; see its log"})
    return data


def bench_json(out, name):
    """A Google Benchmark JSON output of the run (what survives of it if the binary stopped
    mid-run), or None when there is none."""
    text = read(os.path.join(out, name))
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return salvage_bench_json(text)


def bench(out, name="bench.json"):
    data = bench_json(out, name)
    if data is None:
        return {}, []
    rows = []
    for b in data.get("benchmarks", []):
        if b.get("run_type") == "aggregate" or b.get("error_occurred"):
            if b.get("error_occurred"):
                rows.append({"name": b["name"], "error": b.get("error_message", "error")})
            continue
        row = {k: b.get(k) for k in ("name", "label", "us", "GB/s", "frac_copy", "TFLOP/s",
                                     "frac_gemm")}
        row["name"] = re.sub(r"/min_time:[0-9.]+|/manual_time", "", row["name"])
        rows.append(row)
    return data.get("context", {}), rows


def ab_rows(out):
    """[(variant, bench row)] from the bench_ab_<VAR>.json runs of gpu-check.sh."""
    res = []
    for name in sorted(os.listdir(out)) if os.path.isdir(out) else []:
        if name.startswith("bench_ab_") and name.endswith(".json"):
            var = read(os.path.join(out, name[:-5] + ".var")).strip() or name[9:-5]
            res += [(var, r) for r in bench(out, name)[1]]
    return res


NCU_METRICS = ("Duration", "DRAM Throughput", "Memory Throughput", "Compute (SM) Throughput",
               "Registers Per Thread", "Achieved Occupancy", "Theoretical Occupancy",
               "Block Limit Registers", "Issue Slots Busy", "No Eligible")


def profiles(out):
    """[(name, {metric: 'value unit'})] from gpu-check's ncu_<filter>.txt files."""
    res = []
    for name in sorted(os.listdir(out)) if os.path.isdir(out) else []:
        if not (name.startswith("ncu_") and name.endswith(".txt")):
            continue
        got = {}
        for line in read(os.path.join(out, name)).splitlines():
            for m in NCU_METRICS:
                if line.strip().startswith(m) and m not in got:
                    got[m] = " ".join(line.split()[len(m.split()):])
        res.append((name[4:-4], got))
    return res


def device_runs(out, stem):
    """{device: metrics.jsonl rows} of the runs <out>/<stem>-cuda and <stem>-cpu."""
    runs = {}
    for dev in ("cuda", "cpu"):
        rows = []
        for line in read(os.path.join(out, f"{stem}-{dev}", "metrics.jsonl")).splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass
        runs[dev] = rows
    return runs


def device_pair(out, stem):
    """A training run on cuda vs cpu (<stem>-cuda, <stem>-cpu: the toy LM, or r1-pretrain):
    per-step loss agreement and tokens/s."""
    runs = device_runs(out, stem)
    if not runs["cuda"] or not runs["cpu"]:
        return None
    n = min(len(runs["cuda"]), len(runs["cpu"]))
    rel = [abs(a["loss"] - b["loss"]) / abs(b["loss"])
           for a, b in zip(runs["cuda"][:n], runs["cpu"][:n])]

    def median_tps(rows):
        v = sorted(r["tokens_per_s"] for r in rows[len(rows) // 10:])  # skip warm-up steps
        return v[len(v) // 2] if v else 0.0

    return {"steps": n, "first_loss": runs["cpu"][0]["loss"],
            "final_loss_cpu": runs["cpu"][n - 1]["loss"],
            "final_loss_cuda": runs["cuda"][n - 1]["loss"],
            "max_rel_loss_diff": max(rel), "max_rel_loss_diff_first10": max(rel[:10]),
            "tokens_per_s_cpu": median_tps(runs["cpu"]),
            "tokens_per_s_cuda": median_tps(runs["cuda"])}


def grpo(out):
    """r1-grpo on cuda vs cpu from the same base: reward / accuracy means and step time."""
    runs = device_runs(out, "grpo")
    if not runs["cuda"] or not runs["cpu"]:
        return None
    n = min(len(runs["cuda"]), len(runs["cpu"]))

    def mean(dev, key, a=0, b=None):
        v = [r[key] for r in runs[dev][a:b if b is not None else n] if r.get(key) is not None]
        return sum(v) / len(v) if v else float("nan")

    half = n // 2
    res = {"steps": n}
    mode = os.path.join(out, "grpo-decode-cuda.txt")
    res["decode_cuda"] = open(mode).read().strip() if os.path.exists(mode) else "config default"
    inv = os.path.join(out, "grpo-invariant-cuda.txt")
    res["invariant_gemm_cuda"] = (open(inv).read().strip() == "1") if os.path.exists(inv) else None
    for dev in ("cuda", "cpu"):
        res[dev] = {"reward_first_half": mean(dev, "reward", 0, half),
                    "reward_second_half": mean(dev, "reward", half, n),
                    "accuracy_first_half": mean(dev, "accuracy", 0, half),
                    "accuracy_second_half": mean(dev, "accuracy", half, n),
                    "step_time_s": mean(dev, "step_time_s", 1, n),  # step 1 has the warm-up
                    # where a step's time goes: sampling the rollouts, and the policy update
                    "rollout_s": mean(dev, "rollout_s", 1, n),
                    "update_s": mean(dev, "update_s", 1, n),
                    "logprob_mismatch_max": max((r["logprob_mismatch_max"] for r in runs[dev][:n]
                                                 if r.get("logprob_mismatch_max") is not None),
                                                default=float("nan"))}
    return res


def fp8_table(rows):
    """FP8 GEMM kernels side by side per shape, with the ratios the FP8 issue asks for: the
    wgmma kernel against cuBLASLt block-scaled and per-tensor, its fraction of the measured
    FP8 peak (the best cuBLASLt per-tensor rate of the run); grouped kernels against loops of
    dense calls."""
    dense, grouped, wgrad, labels = {}, {}, {}, {}
    for r in rows:
        name = r.get("name", "")
        g = re.match(r"Fp8Grouped(\w+)/(\d+)/(\d+)/(\d+)/(\d+)", name)
        w = re.match(r"Fp8Wgrad(\w+)/(\d+)/(\d+)/(\d+)$", name)
        m = re.match(r"Fp8(\w+)/(\d+)/(\d+)/(\d+)$", name)
        if r.get("TFLOP/s") is None:
            continue
        if w:
            wgrad.setdefault(tuple(int(x) for x in w.group(2, 3, 4)), {})[w.group(1)] = r["TFLOP/s"]
        elif g:
            grouped.setdefault(tuple(int(x) for x in g.group(2, 3, 4, 5)), {})[g.group(1)] = r["TFLOP/s"]
        elif m:
            key = tuple(int(x) for x in m.group(2, 3, 4))
            dense.setdefault(key, {})[m.group(1)] = r["TFLOP/s"]
            if m.group(1) == "Wgmma":
                lab = re.match(r"wgmma (\S+)", r.get("label") or "")
                labels[key] = lab.group(1) if lab else ""
    md = []
    if dense:
        peak = max((v.get("CublasLtTensor") or 0) for v in dense.values())
        md += ["## FP8 block-scaled GEMM (TFLOP/s, bf16 out)", "",
               "mma1 / mma2: the mma.sync kernel with one / two shared-memory stages; wgmma: the "
               "TMA + wgmma kernel at the tile shape it picked (tuned table or default); "
               f"frac peak: wgmma over the best cuBLASLt per-tensor rate of this run ({peak:.0f}).",
               "",
               "| M | N | K | simple | mma1 | mma2 | wgmma (tile) | cuBLASLt block | "
               "cuBLASLt per-tensor | cuBLASLt bf16 | wgmma / block | wgmma / per-tensor | "
               "wgmma / bf16 | frac peak |",
               "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for (m, n, k), v in sorted(dense.items()):
            blk, ten, wg = v.get("CublasLtBlock"), v.get("CublasLtTensor"), v.get("Wgmma")
            b16 = v.get("CublasLtBf16")
            tile = f" ({labels[(m, n, k)]})" if labels.get((m, n, k)) else ""
            md.append(f"| {m} | {n} | {k} | {fmt(v.get('Simple'), '.1f')} | "
                      f"{fmt(v.get('Mma1'), '.1f')} | {fmt(v.get('Mma2'), '.1f')} | "
                      f"{fmt(wg, '.1f')}{tile if wg else ''} | {fmt(blk, '.1f')} | {fmt(ten, '.1f')} | "
                      f"{fmt(b16, '.1f')} | "
                      f"{fmt(wg / blk if wg and blk else None, '.2f')} | "
                      f"{fmt(wg / ten if wg and ten else None, '.2f')} | "
                      f"{fmt(wg / b16 if wg and b16 else None, '.2f')} | "
                      f"{fmt(wg / peak if wg and peak else None, '.2f')} |")
        md.append("")
    if wgrad:
        md += ["## FP8 wgrad GEMM, 1D1D (TFLOP/s, f32 out)", "",
               "dw (M = out, N = in) = dy^T x over K = 4096 tokens, both operands with 1x128 "
               "scales along the tokens (as linear_fp8 runs it); 2D: the same GEMM with 128x128 "
               "scales on b (the epilogue's cost of a per-column scale).", "",
               "| M | N | K | mma 1D1D | mma 2D | wgmma 1D1D | cuBLASLt 1D1D | mma 1D1D / 2D | "
               "wgmma 1D1D / cuBLASLt |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for (m, n, k), v in sorted(wgrad.items()):
            a, b, c = v.get("1D1DMma"), v.get("2DMma"), v.get("1D1DCublasLt")
            wg = v.get("1D1DWgmma")
            md.append(f"| {m} | {n} | {k} | {fmt(a, '.1f')} | {fmt(b, '.1f')} | {fmt(wg, '.1f')} | "
                      f"{fmt(c, '.1f')} | {fmt(a / b if a and b else None, '.2f')} | "
                      f"{fmt(wg / c if wg and c else None, '.2f')} |")
        md.append("")
    if grouped:
        md += ["## Grouped FP8 GEMM, MoE experts (TFLOP/s, bf16 out)", "",
               "E experts x m tokens, N x K per expert. One launch: simple, mma.sync, wgmma "
               "(contiguous layout), wgmma masked; loops of dense calls: mma.sync, wgmma, "
               "cuBLASLt block-scaled.", "",
               "| E | m | N | K | simple | mma | wgmma | wgmma masked | loop mma | loop wgmma | "
               "loop cuBLASLt | wgmma / loop wgmma | wgmma / loop cuBLASLt |",
               "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for (e, m, n, k), v in sorted(grouped.items()):
            wg, lt, lw = v.get("Wgmma"), v.get("LoopCublasLt"), v.get("LoopWgmma")
            md.append(f"| {e} | {m} | {n} | {k} | {fmt(v.get('Simple'), '.1f')} | "
                      f"{fmt(v.get('Mma'), '.1f')} | {fmt(wg, '.1f')} | "
                      f"{fmt(v.get('WgmmaMasked'), '.1f')} | {fmt(v.get('LoopMma'), '.1f')} | "
                      f"{fmt(lw, '.1f')} | {fmt(lt, '.1f')} | "
                      f"{fmt(wg / lw if wg and lw else None, '.2f')} | "
                      f"{fmt(wg / lt if wg and lt else None, '.2f')} |")
        md.append("")
    return md


def tuned_tables(out):
    """The tuned tables r1-fp8-tune wrote in this run: (file name, text)."""
    d = os.path.join(out, "tuned")
    if not os.path.isdir(d):
        return []
    return [(f, read(os.path.join(d, f))) for f in sorted(os.listdir(d)) if f.endswith(".tsv")]


def fmt(v, spec):
    return "" if v is None else format(v, spec)


def decode(out):
    """bench_rl's Sampling rows on the GPU: tokens/s and the time of a decode step per mode."""
    rows = []
    for prec, f in (("bf16", "bench_decode.json"), ("bf16, fp8 projections", "bench_decode_fp8.json")):
        data = bench_json(out, f)
        if data is None:
            continue
        for b in data.get("benchmarks", []):
            if b.get("run_type") == "aggregate":
                continue
            name = re.sub(r"/[0-9]+$", "", re.sub(r"/min_time:[0-9.]+|/real_time", "", b["name"]))
            if b.get("error_occurred"):
                rows.append({"name": name, "prec": prec, "error": b.get("error_message", "error")})
                continue
            rows.append({"name": name, "prec": prec, "label": b.get("label", ""),
                         "tokens_per_s": b.get("generated_tokens/s"),
                         "decode_step_us": b.get("decode_step_us"),
                         "prefill_ms": b.get("prefill_ms"), "decode_ms": b.get("decode_ms")})
    return rows


def decode_table(rows):
    if not rows:
        return ["## Decode step (bench_rl --device cuda --dtype bf16)", "",
                "- not run or failed (see bench_decode.log)", ""]
    md = ["## Decode step (bench_rl --device cuda --dtype bf16)", "",
          "The tiny model, 16 prompts x 8 samples x 64 new tokens per call; eager: the step "
          "launched kernel by kernel; static: the graph-safe step run eagerly (padded batch; "
          "every expert on every token in bf16, the masked expert layout with fp8 "
          "projections); graphs: that step replayed from CUDA graphs (captures included in "
          "the time).", "",
          "| precision | mode | tokens/s | decode step (us) | prefill (ms) | decode (ms) | vs eager |",
          "|---|---|---:|---:|---:|---:|---:|"]
    for prec in dict.fromkeys(r["prec"] for r in rows):
        group = [r for r in rows if r["prec"] == prec]
        eager = next((r for r in group if r["name"].endswith("/eager") and "error" not in r), None)
        for r in group:
            if "error" in r:
                md.append(f"| {prec} | {r['name']} | FAILED: {r['error']} | | | | |")
                continue
            ratio = (eager["decode_step_us"] / r["decode_step_us"]
                     if eager and r.get("decode_step_us") else None)
            md.append(f"| {prec} | {r['name'].split('/')[-1]} | {fmt(r['tokens_per_s'], '.0f')} | "
                      f"{fmt(r['decode_step_us'], '.0f')} | {fmt(r['prefill_ms'], '.1f')} | "
                      f"{fmt(r['decode_ms'], '.1f')} | {fmt(ratio, '.2f')}x |")
    return md + [""]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--results", default="bench/results")
    a = ap.parse_args()

    gpu = gpu_info(a.out)
    manifest = read(os.path.join(a.out, "MANIFEST")).splitlines()
    commit = manifest[0] if manifest else "commit unknown"
    ctx, rows = bench(a.out)
    _, fp8_rows = bench(a.out, "bench_fp8.json")
    e2e = device_pair(a.out, "toy")
    pre = {p: device_pair(a.out, f"pretrain-{p}") for p in ("default", "fp8")}
    rl = grpo(a.out)
    ts = tests(a.out)
    san = sanitizer(a.out)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    slug = re.sub(r"[^a-z0-9]+", "-", gpu["name"].lower()).strip("-")
    os.makedirs(a.results, exist_ok=True)
    # One file per run: the GPU, the date and the bundle's commit (a session may run twice).
    m = re.search(r"commit ([0-9a-f]{7})", commit)
    stem = os.path.join(a.results, f"{slug}-{date}" + (f"-{m.group(1)}" if m else ""))

    md = [f"# r1 GPU check: {gpu['name']}, {date}", "",
          f"- {commit}", f"- driver {gpu.get('driver_version', '?')}, "
          f"memory {gpu.get('memory.total [MiB]', '?')}, "
          f"max clocks SM {gpu.get('clocks.max.sm [MHz]', '?')} / "
          f"memory {gpu.get('clocks.max.memory [MHz]', '?')}",
          f"- measured ceilings: device copy {float(ctx.get('copy_gbps', 0)):.0f} GB/s "
          f"(2 GiB cudaMemcpy D2D, read + write), cuBLASLt bf16 8192^3 "
          f"{float(ctx.get('gemm_bf16_tflops', 0)):.0f} TFLOP/s",
          "- produced by `scripts/gpu-check.sh` (tests, `bench_cuda_kernels`, compute-sanitizer)",
          "", "## Tests (R1_REQUIRE_CUDA=1: no skips)", "",
          "| binary | exit | time | gtest summary |", "|---|---|---|---|"]
    for t in ts:
        md.append(f"| {t['binary']} | {t['rc']} | {t['time']} | {t['summary']} |")
    md += ["", "## Kernels", "",
           "Memory-bound rows: GB/s counts the bytes the kernel must move once; frac_copy is "
           "that over the copy ceiling (target >= 0.70 for the kernels marked *).", "",
           "| kernel | shape / dtype | us | GB/s | frac_copy | TFLOP/s | frac_gemm |",
           "|---|---|---:|---:|---:|---:|---:|"]
    below = []
    for r in rows:
        if "error" in r:
            md.append(f"| {r['name']} | ERROR: {r['error']} | | | | | |")
            continue
        mark = "*" if r["name"].startswith(TARGETED) else ""
        if mark and r.get("frac_copy") is not None and r["frac_copy"] < MEMORY_BOUND_TARGET:
            below.append(f"{r['name']} ({r['frac_copy']:.2f})")
        md.append(f"| {r['name']}{mark} | {r.get('label') or ''} | {fmt(r.get('us'), '.1f')} | "
                  f"{fmt(r.get('GB/s'), '.0f')} | {fmt(r.get('frac_copy'), '.2f')} | "
                  f"{fmt(r.get('TFLOP/s'), '.1f')} | {fmt(r.get('frac_gemm'), '.2f')} |")
    md += ["", "Below the 0.70 target: " + (", ".join(below) if below else "none"), ""]
    variants = ab_rows(a.out)
    if variants:
        md += ["Variants (the same benchmark with a run-time switch set; scripts/gpu-check.sh "
               "R1_GPU_AB):", "", "| kernel | variant | us | GB/s | frac_copy |",
               "|---|---|---:|---:|---:|"]
        for var, r in variants:
            if "error" in r:
                md.append(f"| {r['name']} | {var} | ERROR: {r['error']} | | |")
            else:
                md.append(f"| {r['name']} | {var} | {fmt(r.get('us'), '.1f')} | "
                          f"{fmt(r.get('GB/s'), '.0f')} | {fmt(r.get('frac_copy'), '.2f')} |")
        md.append("")
    prof = profiles(a.out)
    if prof:
        md += ["Nsight Compute (one launch each; the full sections are in the run's ncu_*.txt):",
               ""]
        for name, got in prof:
            md.append(f"- {name}: " + ("; ".join(f"{k} {v}" for k, v in got.items())
                                        if got else "no metrics (see its ncu_*.txt)"))
        md.append("")
    md += fp8_table(fp8_rows)
    tuned = tuned_tables(a.out)
    tune_failed = [l for l in read(os.path.join(a.out, "fp8_tune.log")).splitlines() if "FAILED" in l]
    if tune_failed:
        md += ["## r1-fp8-tune: configurations that FAILED their check", ""] + \
              [f"- {l}" for l in tune_failed] + [""]
    for name, text in tuned:
        md += [f"## Tuned FP8 tile shapes ({name}, from r1-fp8-tune; copy to bench/tuned/)", "",
               "```", text.rstrip(), "```", ""]
    dec = decode(a.out)
    md += decode_table(dec)
    md += ["## End to end: r1-toy-lm, CUDA against the CPU", ""]
    if e2e:
        md += [f"- {e2e['steps']} steps from the same f32 weights: loss {e2e['first_loss']:.4f} -> "
               f"{e2e['final_loss_cpu']:.4f} (CPU) / {e2e['final_loss_cuda']:.4f} (CUDA); "
               f"largest per-step relative loss difference {e2e['max_rel_loss_diff']:.2e} "
               f"({e2e['max_rel_loss_diff_first10']:.2e} over the first 10 steps)",
               f"- median tokens/s: CPU {e2e['tokens_per_s_cpu']:.0f}, CUDA "
               f"{e2e['tokens_per_s_cuda']:.0f} "
               f"({e2e['tokens_per_s_cuda'] / max(e2e['tokens_per_s_cpu'], 1e-9):.2f}x)", ""]
    else:
        md += ["- not run or failed (see toy-*.log)", ""]
    md += ["## End to end: r1-pretrain (the tiny DeepSeek-V3 from scratch), CUDA against the CPU", "",
           "- the base's config and tokenizer, a 3000-document corpus, the same batches and "
           "initial weights on both; fp8: DeepSeek-V3's recipe (the GPU's FP8 GEMMs against "
           "the CPU's exact reference)", "",
           "| precision | steps | loss, first -> last (CPU / CUDA) | max rel. loss diff | "
           "first 10 steps | tokens/s CPU | tokens/s CUDA | speed-up |",
           "|---|---:|---|---:|---:|---:|---:|---:|"]
    for p, r in pre.items():
        if r:
            md.append(f"| {'f32' if p == 'default' else p} | {r['steps']} | {r['first_loss']:.4f} -> "
                      f"{r['final_loss_cpu']:.4f} / {r['final_loss_cuda']:.4f} | "
                      f"{r['max_rel_loss_diff']:.2e} | {r['max_rel_loss_diff_first10']:.2e} | "
                      f"{r['tokens_per_s_cpu']:.0f} | {r['tokens_per_s_cuda']:.0f} | "
                      f"{r['tokens_per_s_cuda'] / max(r['tokens_per_s_cpu'], 1e-9):.2f}x |")
        else:
            md.append(f"| {'f32' if p == 'default' else p} | not run or failed (see pretrain-{p}-*.log) |"
                      " | | | | | |")
    md += [""]
    md += ["## End to end: r1-grpo (configs/grpo/tiny.json from the R1-Zero base), CUDA against the CPU", ""]
    if rl:
        md += [f"- {rl['steps']} steps, the same seeds (the rollouts part ways once the devices "
               "round differently: compare the means, not the steps); CUDA decode mode: "
               f"{rl.get('decode_cuda', 'config default')}; CUDA batch-invariant gemm "
               f"(R1_INVARIANT_GEMM): "
               f"{ {True: 'on', False: 'off', None: 'not recorded'}[rl.get('invariant_gemm_cuda')] }",
               "",
               "| device | reward, 1st half | reward, 2nd half | accuracy, 1st half | "
               "accuracy, 2nd half | s/step | rollout s | update s | logprob_mismatch_max |",
               "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for dev in ("cuda", "cpu"):
            r = rl[dev]
            md.append(f"| {dev} | {r['reward_first_half']:.3f} | {r['reward_second_half']:.3f} | "
                      f"{r['accuracy_first_half']:.3f} | {r['accuracy_second_half']:.3f} | "
                      f"{r['step_time_s']:.3f} | {r.get('rollout_s', float('nan')):.3f} | "
                      f"{r.get('update_s', float('nan')):.3f} | {r['logprob_mismatch_max']:.2g} |")
        md += ["", f"- speed-up of a GRPO step, CUDA over the CPU (OMP_NUM_THREADS="
               f"{os.environ.get('OMP_NUM_THREADS', '?')}): "
               f"{rl['cpu']['step_time_s'] / max(rl['cuda']['step_time_s'], 1e-9):.2f}x "
               f"(rollouts {rl['cpu'].get('rollout_s', float('nan')) / max(rl['cuda'].get('rollout_s', float('nan')), 1e-9):.2f}x, "
               f"update {rl['cpu'].get('update_s', float('nan')) / max(rl['cuda'].get('update_s', float('nan')), 1e-9):.2f}x)", ""]
    else:
        md += ["- not run or failed (see grpo-*.log)", ""]
    md += [
           "## compute-sanitizer", "", "| tool | binary | exit | summary |", "|---|---|---|---|"]
    for s in san:
        md.append(f"| {s['tool']} | {s['binary']} | {s['rc']} | {s['summary']} |")
    for name, text in tuned:
        with open(f"{stem}-{name}", "w", encoding="utf-8") as f:
            f.write(text)
    with open(stem + ".md", "w", encoding="utf-8") as f:
        f.write("\n".join(md) + "\n")
    with open(stem + ".json", "w", encoding="utf-8") as f:
        json.dump({"gpu": gpu, "commit": commit, "date": date, "context": ctx, "tests": ts,
                   "benchmarks": rows, "fp8_gemm": fp8_rows, "sanitizer": san,
                   "toy_lm": e2e, "pretrain": pre, "grpo": rl, "decode": dec}, f, indent=1)
    print(f"gpu_results: wrote {stem}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
