#!/usr/bin/env python3
"""A precision's loss cost at the same weights, along a run: r1-pretrain --shadow-fp8-every K
and --shadow-bf16-every K.

  /usr/bin/python3 scripts/shadow_runs.py RUN [RUN ...] [--of fp8|bf16] [--vs loss|fp8|bf16]
      [--out PNG] [--phases 100,400] [--smooth K] [--label DIR]

Each RUN directory holds a metrics.jsonl whose steps carry loss (the run's own precision, bf16
or f32) and, every K steps, shadow_fp8_loss and/or shadow_bf16_loss: the same batch through the
same weights with the projections in fp8 or bf16 (forward only). The signed relative difference
(shadow_<of>_loss - base) / base, base the run's loss (--vs loss, the default) or another
shadow's (--vs bf16: fp8 against bf16 on an f32 run with both shadows), is that precision's
arithmetic cost at that point of training, paired (same batch, same weights), so neither the
batch's noise nor the drift that separates two training runs enters it.

Prints per run: the steps compared, the mean, sd and largest |difference|, and the mean over
the phases (steps up to 100, 101-400, past 400 by default); plots every run's difference per
step with the +-0.25% band of the DeepSeek-V3 report's figure (--smooth K: each curve a centred
mean over K logged steps, the table unchanged; --label DIR: the legend names a run by its path
below DIR's parent, e.g. v3-abl/keep-attn, where the plain directory names repeat).
"""
import argparse
import os
import statistics

from metrics_io import fail, read_records


def load(run, of, vs):
    key, base = f"shadow_{of}_loss", "loss" if vs == "loss" else f"shadow_{vs}_loss"
    out = [(int(r["step"]), float(r[base]), float(r[key])) for r in read_records(run)
           if key in r and base in r and "step" in r]
    if not out:
        fail(f"{os.path.join(run, 'metrics.jsonl')}: no step has both {key} and {base} "
                 f"(r1-pretrain --shadow-{of}-every K)")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--of", default="fp8", choices=("fp8", "bf16"))
    ap.add_argument("--vs", default="loss", choices=("loss", "fp8", "bf16"))
    ap.add_argument("--out")
    ap.add_argument("--smooth", type=int, default=1,
                    help="plot each curve as a centred mean over K logged steps (default 1: raw)")
    ap.add_argument("--label", action="store_true",
                    help="legend: the run's parent folder and name, not the name alone")
    ap.add_argument("--phases", default="100,400",
                    help="step bounds of the phases whose mean is printed (default 100,400)")
    a = ap.parse_args()
    if a.smooth < 1:
        fail(f"--smooth {a.smooth}: expected a positive count of logged steps")
    try:
        bounds = [int(x) for x in a.phases.split(",") if x]
    except ValueError:
        fail(f"--phases {a.phases}: expected comma-separated steps")
    edges = [0] + bounds + [float("inf")]
    names = [f"steps {lo + 1}-{hi}" if hi != float("inf") else f"steps > {lo}"
             for lo, hi in zip(edges, edges[1:])]
    loaded = [(run, load(run, a.of, a.vs)) for run in a.runs]  # every run read before output
    print("| run | steps | mean | sd | max abs | " + " | ".join(names) + " |")
    print("|---|---:|---:|---:|---:|" + "---:|" * len(names))
    curves = []
    for run, rows in loaded:
        rel = [(s, (sh - l) / l) for s, l, sh in rows]
        d = [v for _, v in rel]
        cells = []
        for lo, hi in zip(edges, edges[1:]):
            part = [v for s, v in rel if lo < s <= hi]
            cells.append(f"{100 * statistics.mean(part):+.3f}%" if part else "")
        sd = statistics.stdev(d) if len(d) > 1 else 0.0
        print(f"| {run} | {len(d)} | {100 * statistics.mean(d):+.3f}% | {100 * sd:.3f}% | "
              f"{100 * max(abs(v) for v in d):.3f}% | " + " | ".join(cells) + " |")
        curves.append((run, rel))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4))
    for run, rel in curves:
        vals = [100 * v for _, v in rel]
        if a.smooth > 1:
            h = a.smooth // 2
            vals = [statistics.mean(vals[max(0, i - h):i + h + 1]) for i in range(len(vals))]
        path = os.path.normpath(run)
        name = os.path.basename(path)
        if a.label:
            name = os.path.join(os.path.basename(os.path.dirname(path)), name)
        ax.plot([s for s, _ in rel], vals, marker="." if a.smooth == 1 else None, lw=0.8,
                label=name)
    ax.axhline(0.25, color="gray", ls="--", lw=0.8)
    ax.axhline(-0.25, color="gray", ls="--", lw=0.8)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xlabel("step")
    vs = "the run's loss" if a.vs == "loss" else a.vs
    ax.set_ylabel(f"{a.of} vs {vs}, same weights (%)")
    per = "per logged step" if a.smooth == 1 else f"mean of {a.smooth} logged steps"
    ax.set_title(f"{a.of} forward at the run's weights against {vs}, {per} "
                 "(dashed: +-0.25%)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = a.out or os.path.join(a.runs[0], f"shadow_{a.of}_vs_{a.vs}.png")
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
