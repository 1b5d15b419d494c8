"""The R1-Zero before/after table: scripts/r1_zero_report.py RUN_DIR (after scripts/r1-zero.sh).
Reads RUN_DIR/eval-base.json and eval-zero.json (r1-eval) and prints markdown: pass@1 (mean
over the k samples, accuracy only), cons@k, pass@k and the format rate per task family."""
import json
import sys


def main():
    run = sys.argv[1] if len(sys.argv) > 1 else "runs/r1-zero"
    try:
        base = json.load(open(f"{run}/eval-base.json", encoding="utf-8"))
        zero = json.load(open(f"{run}/eval-zero.json", encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"r1_zero_report: {e}")
    k = base.get("_settings", {}).get("samples", "k")
    print(f"| task | questions | pass@1 base | pass@1 R1-Zero | gain (points) | cons@{k} base | "
          f"cons@{k} R1-Zero | pass@{k} base | pass@{k} R1-Zero | format base | format R1-Zero |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    tasks = sorted(t for t in base if not t.startswith("_") and t != "all") + ["all"]
    for t in tasks:
        b, z = base[t], zero[t]
        print(f"| {t} | {b['questions']} | {100 * b['pass@1']:.1f}% | {100 * z['pass@1']:.1f}% | "
              f"{100 * (z['pass@1'] - b['pass@1']):+.1f} | {100 * b['cons@k']:.1f}% | "
              f"{100 * z['cons@k']:.1f}% | {100 * b['pass@k']:.1f}% | {100 * z['pass@k']:.1f}% | "
              f"{100 * b['format_rate']:.1f}% | {100 * z['format_rate']:.1f}% |")


if __name__ == "__main__":
    main()
