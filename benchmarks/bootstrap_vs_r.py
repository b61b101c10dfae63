"""jm.bootstrap against R boot (glm, glm.fit) with interleaved rounds: 2,000 pairs replications of a
logit, N = 10,000, p = 10.

    python benchmarks/bootstrap_vs_r.py [--rounds 2] [--reps 2000]

Each round times jaxmle (warm), R boot + glm and R boot + glm.fit one after another, so background
load hits all three alike; R's time is its own `system.time(boot(...))` (wall and user + sys CPU),
jaxmle's the process's wall and CPU time (all threads). On a loaded machine the CPU-time ratio is the
steadier one. Prints a markdown table with the ratios R / jaxmle per round.
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
    ap.add_argument(
        "--r-reps", type=int, default=None,
        help="R's replications per run (default --reps); R's times are scaled by reps / r_reps "
        "(boot's refits are independent, so its time is linear in R)",
    )  # fmt: skip
    args = ap.parse_args()
    r_reps = args.r_reps or args.reps
    scale = args.reps / r_reps
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
            jm = (time.perf_counter() - t0, time.process_time() - c0)
            load = os.getloadavg()[0]
            glm = B.r_boot(csv, r_reps, "glm")
            fit = B.r_boot(csv, r_reps, "glm.fit")
            se = B.flat_se(bs)
            diff = max(np.max(np.abs(o["se"] - se) / se) for o in (glm, fit))
            times = [(o["elapsed"] * scale, o["cpu"] * scale) for o in (glm, fit)]
            rows.append((r, jm, *times, load, diff, glm["boot"], glm["R"]))
    print(f"jaxmle first call (compile + {args.reps} replications): {first:.2f} s wall")
    print(f"R ran {r_reps} replications per run, its times scaled x{scale:g} to {args.reps}")
    print(f"load average at the end {os.getloadavg()}; R {rows[0][-1]}, boot {rows[0][-2]}")
    print(
        "| round | jaxmle wall / CPU (s) | R boot+glm wall / CPU (s) | R boot+glm.fit wall / CPU (s)"
        " | glm / jaxmle (wall, CPU) | glm.fit / jaxmle (wall, CPU) | load | max rel. diff SE |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r, (jw, jc), (gw, gc), (fw, fc), load, diff, _, _ in rows:
        print(
            f"| {r} | {jw:.2f} / {jc:.2f} | {gw:.1f} / {gc:.1f} | {fw:.1f} / {fc:.1f} "
            f"| {gw / jw:.1f}, {gc / jc:.1f} | {fw / jw:.1f}, {fc / jc:.1f} | {load:.1f} "
            f"| {diff:.3f} |"
        )


if __name__ == "__main__":
    main()
