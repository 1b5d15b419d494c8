"""Reading r1's metrics.jsonl files, for the analysis scripts (plot_metrics, compare_runs,
precision_runs, shadow_runs): one JSON object per line. A bad line or an unreadable file ends
the script with one line naming the file (and the line) and the problem, exit code 2 (r1's
rule for bad input)."""
import json
import os
import sys


def fail(message):
    """One line on stderr, exit code 2."""
    print(message, file=sys.stderr)
    sys.exit(2)


def read_records(path):
    """The records of path (a metrics.jsonl, or a run directory holding one), in order."""
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.jsonl")
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    r = json.loads(line)
                except json.JSONDecodeError as e:
                    fail(f"{path}:{n}: bad JSON ({e.msg})")
                if not isinstance(r, dict):
                    fail(f"{path}:{n}: not a JSON object")
                rows.append(r)
    except OSError as e:
        fail(f"{path}: {e.strerror}")
    return rows


def by_step(path, key):
    """{step: float(record[key])} over the records of path that have both."""
    return {int(r["step"]): float(r[key]) for r in read_records(path) if key in r and "step" in r}
