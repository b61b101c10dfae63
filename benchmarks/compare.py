"""Print pytest-benchmark JSON results as markdown tables, with ratios to the jaxmle baseline.

    python benchmarks/compare.py benchmarks/results/*.json

Per group, the baseline is the benchmark with extra_info["baseline"] = True (jaxmle's warm call);
ratio = peer time / baseline time (> 1: slower than jaxmle).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def load(paths):
    groups = defaultdict(list)
    meta = None
    for path in paths:
        with open(path) as f:
            doc = json.load(f)
        meta = meta or doc
        for b in doc["benchmarks"]:
            groups[b["group"]].append(b)
    return groups, meta


def fmt_t(s):
    return f"{s:.3f}" if s < 100 else f"{s:.1f}"


def fmt_diff(x):
    return "" if x is None else f"{x:.1e}"


def table(group, rows):
    base = [b for b in rows if b.get("extra_info", {}).get("baseline")]
    base = base[0] if base else None  # e.g. a run of the slow peers only: no ratios
    out = [
        f"### {group}",
        "",
        "| benchmark | work | min (s) | mean (s) | rounds | min / jaxmle | mean / jaxmle "
        "| max rel. diff est. | max rel. diff SE |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b in sorted(rows, key=lambda b: b["stats"]["min"]):
        s, e = b["stats"], b.get("extra_info", {})
        name = b["name"] + (" (baseline)" if b is base else "")
        r_min = f"{s['min'] / base['stats']['min']:.2f}" if base else ""
        r_mean = f"{s['mean'] / base['stats']['mean']:.2f}" if base else ""
        out.append(
            f"| {name} | {e.get('work', '')} | {fmt_t(s['min'])} | {fmt_t(s['mean'])} "
            f"| {s['rounds']} | {r_min} | {r_mean} | {fmt_diff(e.get('max_rel_diff_est'))} "
            f"| {fmt_diff(e.get('max_rel_diff_se'))} |"
        )
    return "\n".join(out)


def main(paths):
    groups, _ = load(paths)
    for group in sorted(groups):
        print(table(group, groups[group]))
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
