"""jm.bootstrap against R boot (glm, glm.fit) with interleaved rounds: 2,000 pairs replications of a
logit, N = 10,000, p = 10.

    python benchmarks/bootstrap_vs_r.py [--rounds 2] [--reps 2000]

Each round times jaxmle (warm), R boot + glm and R boot + glm.fit one after another, so background
load hits all three alike; R's time is its own `system.time(boot(...))`. Prints a markdown table
with the ratios R / jaxmle per round.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bootstrap_r as B

jax.config.update("jax_enable_x64", True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--reps", type=int, default=B.REPS)
    args = ap.parse_args()
    x, y = B.data()
    res = B.jaxmle_fit(x, y)
    t0 = time.perf_counter()
    B.jaxmle_bootstrap(res, args.reps)
    first = time.perf_counter() - t0
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        csv = B.write_csv(x, y, folder)
        for r in range(args.rounds):
            t0, c0 = time.perf_counter(), time.process_time()
            bs = B.jaxmle_bootstrap(res, args.reps, key=r)
            jm_wall, jm_cpu = time.perf_counter() - t0, time.process_time() - c0
            load = os.getloadavg()[0]
            glm = B.r_boot(csv, args.reps, "glm")
            fit = B.r_boot(csv, args.reps, "glm.fit")
            se = B.flat_se(bs)
            diff = max(np.max(np.abs(o["se"] - se) / se) for o in (glm, fit))
            rows.append((r, jm_wall, jm_cpu, glm["elapsed"], fit["elapsed"], load, diff))
    print(f"jaxmle first call (compile + run): {first:.2f} s; load average now {os.getloadavg()}")
    print(
        "| round | jaxmle (s) | jaxmle CPU (s) | R boot+glm (s) | R boot+glm.fit (s) "
        "| glm / jaxmle | glm.fit / jaxmle | load | max rel. diff SE |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r, w, c, g, f, load, diff in rows:
        print(
            f"| {r} | {w:.2f} | {c:.2f} | {g:.1f} | {f:.1f} | {g / w:.1f} | {f / w:.1f} "
            f"| {load:.1f} | {diff:.3f} |"
        )


if __name__ == "__main__":
    main()
