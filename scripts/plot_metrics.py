"""Turns metrics.jsonl into PNG plots: one per numeric key, and overview.png with all."""
import math
import os
import sys

import matplotlib

from metrics_io import fail, read_records

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(path):
    return read_records(path)


def main():
    if len(sys.argv) < 2:
        fail("usage: scripts/plot RUN_DIR|metrics.jsonl [OUT_DIR]")
    src = sys.argv[1]
    path = os.path.join(src, "metrics.jsonl") if os.path.isdir(src) else src
    if not os.path.exists(path):
        fail(f"{path}: no such file")
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(path) or ".", "plots")
    os.makedirs(out, exist_ok=True)
    rows = load(path)
    if not rows:
        fail(f"{path}: no records")
    keys = sorted({k for r in rows for k, v in r.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"})
    steps = [r.get("step", i) for i, r in enumerate(rows)]
    series = {}
    for k in keys:
        xs, ys = [], []
        for s, r in zip(steps, rows):
            v = r.get(k)
            if isinstance(v, (int, float)) and math.isfinite(v):
                xs.append(s)
                ys.append(v)
        if len(xs) >= 1:
            series[k] = (xs, ys)
    for k, (xs, ys) in series.items():
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(xs, ys, lw=1.2)
        ax.set_xlabel("step")
        ax.set_title(k)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(os.path.join(out, f"{k.replace('/', '_')}.png"), dpi=100)
        plt.close(fig)
    n = len(series)
    cols = min(3, n)
    rws = math.ceil(n / cols)
    fig, axes = plt.subplots(rws, cols, figsize=(4.5 * cols, 2.8 * rws), squeeze=False)
    for ax, (k, (xs, ys)) in zip(axes.flat, series.items()):
        ax.plot(xs, ys, lw=1.0)
        ax.set_title(k, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "overview.png"), dpi=90)
    print(f"plot: {n} metrics from {path} -> {out}/")


if __name__ == "__main__":
    main()
