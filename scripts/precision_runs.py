#!/usr/bin/env python3
"""FP8 vs bf16 vs f32 pretraining runs over several seeds: the table and plot of docs/fp8.md.

  /usr/bin/python3 scripts/precision_runs.py DIR [--window 50] [--early N] [--fp8 NAME]
      [--metric loss|val_loss] [--out PNG]

DIR holds runs named <precision><suffix> (precision default, bf16, fp8; suffix "" for seed 1,
"-s2", "-s3", ...), each with metrics.jsonl, made by

  for s in 1 2 3; do for p in default bf16 fp8; do OMP_NUM_THREADS=1 build/bin/r1-pretrain \\
    --config configs/tiny.json --steps 400 --precision $p --seed $s --out DIR/$p$([ $s = 1 ] || echo -s$s); done; done

--metric val_loss compares r1-pretrain's held-out loss (--val-rows) instead of the training
loss, on the steps that have it (--window and --early count those steps).
--fp8 NAME takes the runs named NAME<suffix> as the fp8 side (an ablation beside the plain
fp8 runs in the same DIR, e.g. r1-toy-lm --fp8-head into DIR/fp8head<suffix>).

Prints, per seed, the mean loss of the last `window` steps of each run and the relative
differences fp8 vs bf16 (the FP8 issue's comparison), fp8 vs f32 and bf16 vs f32, then their
mean and spread over the seeds; plots the signed relative difference per step (25-step moving
average; val_loss: per logged step, unsmoothed) of fp8 vs bf16 and of bf16 vs f32 for every
seed.
"""
import argparse
import os
import statistics

from metrics_io import by_step, fail

PRECISIONS = ("default", "bf16", "fp8")


def load(path, key="loss"):
    return by_step(path, key)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--window", type=int, default=50)
    ap.add_argument("--out")
    ap.add_argument("--early", type=int, default=0,
                    help="also print the mean per-step signed difference over steps 1..N "
                         "(before the runs drift apart)")
    ap.add_argument("--fp8", default="fp8", help="the run name of the fp8 side (default fp8)")
    ap.add_argument("--metric", default="loss",
                    help="the metrics.jsonl field compared (default loss; val_loss: r1-pretrain "
                         "--val-rows, on the steps that have it)")
    a = ap.parse_args()
    names = {"default": "default", "bf16": "bf16", "fp8": a.fp8}  # precision -> run name
    seeds = []
    for s in range(1, 100):
        suffix = "" if s == 1 else f"-s{s}"
        if all(os.path.isdir(os.path.join(a.dir, names[p] + suffix)) for p in PRECISIONS):
            seeds.append((s, {p: load(os.path.join(a.dir, names[p] + suffix), a.metric)
                              for p in PRECISIONS}))
    if not seeds:
        fail(f"{a.dir}: no seed has all of {', '.join(names[p] for p in PRECISIONS)}")
    pairs = (("fp8", "bf16"), ("fp8", "default"), ("bf16", "default"))
    print(f"| seed | f32 | bf16 | fp8 | fp8 vs bf16 | fp8 vs f32 | bf16 vs f32 |  (mean loss of "
          f"the last {a.window} common steps; signed relative differences)")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    diffs = {p: [] for p in pairs}
    curves = []
    for s, runs in seeds:
        steps = sorted(set.intersection(*(set(r) for r in runs.values())))
        tail = steps[-a.window:]
        mean = {p: sum(runs[p][t] for t in tail) / len(tail) for p in PRECISIONS}
        row = [f"{mean[p]:.4f}" for p in PRECISIONS]
        for x, y in pairs:
            d = (mean[x] - mean[y]) / mean[y]
            diffs[(x, y)].append(d)
            row.append(f"{100 * d:+.2f}%")
        print(f"| {s} ({len(steps)} steps) | " + " | ".join(row) + " |")
        curves.append((s, steps, runs))
    if len(seeds) > 1:
        cells = []
        for p in pairs:
            m = statistics.mean(diffs[p])
            sd = statistics.stdev(diffs[p])
            mabs = statistics.mean(abs(d) for d in diffs[p])
            cells.append(f"{100 * m:+.2f}% (sd {100 * sd:.2f}%, mean abs {100 * mabs:.2f}%)")
        print("| mean | | | | " + " | ".join(cells) + " |")

    if a.early:
        print(f"\nmean per-step signed difference, steps 1..{a.early}:")
        print("| seed | fp8 vs bf16 | fp8 vs f32 | bf16 vs f32 |")
        print("|---:|---:|---:|---:|")
        early = {p: [] for p in pairs}
        for s, steps, runs in curves:
            first = steps[:a.early]  # the first N logged steps (every step for loss)
            row = []
            for x, y in pairs:
                d = statistics.mean((runs[x][t] - runs[y][t]) / runs[y][t] for t in first)
                early[(x, y)].append(d)
                row.append(f"{100 * d:+.3f}%")
            print(f"| {s} | " + " | ".join(row) + " |")
        if len(curves) > 1:
            print("| mean | " + " | ".join(f"{100 * statistics.mean(early[p]):+.3f}%"
                                          for p in pairs) + " |")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for ax, (x, y) in zip(axes, (("fp8", "bf16"), ("bf16", "default"))):
        for s, steps, runs in curves:
            rel = [(runs[x][t] - runs[y][t]) / runs[y][t] for t in steps]
            k = 25 if a.metric == "loss" else 1  # val_loss points are averages already
            sm = [sum(rel[max(0, i - k + 1):i + 1]) / len(rel[max(0, i - k + 1):i + 1])
                  for i in range(len(rel))]
            ax.plot(steps, [100 * v for v in sm], label=f"seed {s}")
        ax.axhline(0.25, color="gray", ls="--", lw=0.8)
        ax.axhline(-0.25, color="gray", ls="--", lw=0.8)
        ax.set_ylabel(f"{x} vs {'f32' if y == 'default' else y} (%)")
        ax.legend(fontsize=8)
    smooth = "25-step moving average" if a.metric == "loss" else f"{a.metric} per logged step"
    axes[0].set_title(f"signed relative {a.metric} difference, {smooth} (dashed: +-0.25%)")
    axes[1].set_xlabel("step")
    fig.tight_layout()
    out = a.out or os.path.join(a.dir, "precision_runs.png")
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
