#!/usr/bin/env python3
"""Compares one metric of two runs step by step, and plots both and their difference.

  /usr/bin/python3 scripts/compare_runs.py BASE_RUN OTHER_RUN [--metric loss] [--window 20]
                                           [--out DIR]

Prints, for the steps both runs have: the largest per-step relative difference, the relative
difference of the last `window` steps' means (noise averaged out: the FP8 issue's "relative
difference of the loss after the same steps"), and writes DIR/compare_<metric>.png (default
DIR: OTHER_RUN/plots). Used for fp8 vs f32 training and CUDA vs CPU runs.
"""
import argparse
import os

from metrics_io import by_step, fail


def load(run, metric):
    steps = by_step(run, metric)
    if not steps:
        fail(f"{os.path.join(run, 'metrics.jsonl')}: no '{metric}' records")
    return steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("other")
    ap.add_argument("--metric", default="loss")
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--out")
    a = ap.parse_args()
    base, other = load(a.base, a.metric), load(a.other, a.metric)
    steps = sorted(set(base) & set(other))
    if not steps:
        fail("the runs share no steps")
    rel = [abs(other[s] - base[s]) / abs(base[s]) for s in steps]
    tail = steps[-a.window:]
    mb = sum(base[s] for s in tail) / len(tail)
    mo = sum(other[s] for s in tail) / len(tail)
    print(f"{a.metric}: {len(steps)} common steps; base {base[steps[0]]:.4f} -> {base[steps[-1]]:.4f}, "
          f"other {other[steps[0]]:.4f} -> {other[steps[-1]]:.4f}")
    print(f"largest per-step relative difference {max(rel):.3e} (step {steps[rel.index(max(rel))]})")
    print(f"last {len(tail)} steps' mean: base {mb:.5f}, other {mo:.5f}, relative difference "
          f"{abs(mo - mb) / abs(mb):.3e}")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out = a.out or os.path.join(a.other, "plots")
    os.makedirs(out, exist_ok=True)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    ax1.plot(steps, [base[s] for s in steps], label=os.path.basename(os.path.normpath(a.base)))
    ax1.plot(steps, [other[s] for s in steps], label=os.path.basename(os.path.normpath(a.other)),
             alpha=0.8)
    ax1.set_ylabel(a.metric)
    ax1.legend()
    ax2.semilogy(steps, [max(r, 1e-12) for r in rel])
    ax2.set_ylabel("relative difference")
    ax2.set_xlabel("step")
    fig.tight_layout()
    png = os.path.join(out, f"compare_{a.metric}.png")
    fig.savefig(png, dpi=100)
    print(f"wrote {png}")


if __name__ == "__main__":
    main()
