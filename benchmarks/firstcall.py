"""The first call of each benchmark model in a fresh Python process, with and without JAX's
persistent compilation cache.

Each model runs in three fresh child processes: no cache; an empty cache directory (the call
compiles and writes the cache); the same directory again (a second process that finds the model
compiled). Each child reports the time to import jax and jaxmle, the first call, the fastest of two
warm calls, and the first call's extra = first - warm, in wall time and in the process's CPU time
(user + system of all its threads: compilation is mostly one thread, so on a shared, loaded
machine its CPU time is the steadier measure of what a quiet machine's wall clock would show).
The cache is JAX's own (`jax_compilation_cache_dir`, with
`jax_persistent_cache_min_compile_time_secs = 0` so that every program is stored).

Models: logit (N = 1e6, p = 20, with the automatic subsample start: two Newton loops in the
program), logit_nosub (the same with subsample_start=0), weibull (censored, N = 2e5), glm_formula
(`jm.glm` from a formula on the logit data).

Run: python benchmarks/firstcall.py [--n-logit N] [--models logit,logit_nosub,weibull,glm_formula]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = r"""
import json, os, sys, time
t0 = time.perf_counter()
import jax
if os.environ.get("CACHE_DIR"):
    jax.config.update("jax_compilation_cache_dir", os.environ["CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
sys.path.insert(0, HERE)
import numpy as np
import _models as M
import jaxmle as jm
t_import = time.perf_counter() - t0
model, n_logit = sys.argv[1], int(sys.argv[2])
if model == "weibull":
    x, t, d = M.simulate_weibull()
    call = lambda: M.jaxmle_weibull(x, t, d)
elif model in ("logit", "logit_nosub"):
    x, y = M.simulate_logit(n=n_logit)
    sub = 0 if model == "logit_nosub" else None
    call = lambda: M.jaxmle_logit(x, y, subsample_start=sub)
else:
    import pandas as pd
    x, y = M.simulate_logit(n=n_logit)
    df = pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])]).assign(y=y)
    formula = "y ~ " + " + ".join(f"x{i}" for i in range(x.shape[1]))
    call = lambda: jax.block_until_ready(jm.glm(formula, df, family="binomial"))
times, cpu = [], []
for _ in range(3):
    s, c = time.perf_counter(), time.process_time()
    call()
    times.append(time.perf_counter() - s); cpu.append(time.process_time() - c)
print(json.dumps({"import": t_import, "first": times[0], "warm": min(times[1:]),
                  "first_cpu": cpu[0], "warm_cpu": min(cpu[1:])}))
""".replace("HERE", repr(HERE))


def run(model, n_logit, cache_dir):
    env = {**os.environ, "CACHE_DIR": cache_dir or ""}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, model, str(n_logit)],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-logit", type=int, default=1_000_000)
    ap.add_argument("--models", default="logit,logit_nosub,weibull,glm_formula")
    args = ap.parse_args()
    print("| model | process | import (s) | first call (s) | warm call (s) | first - warm (s) "
          "| CPU: first - warm (s) |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|")
    for model in args.models.split(","):
        with tempfile.TemporaryDirectory() as cache:
            for label, cache_dir in (("no cache", None), ("cache, 1st process", cache),
                                     ("cache, 2nd process", cache)):  # fmt: skip
                r = run(model, args.n_logit, cache_dir)
                print(f"| {model} | {label} | {r['import']:.2f} | {r['first']:.2f} | "
                      f"{r['warm']:.3f} | {r['first'] - r['warm']:+.2f} | "
                      f"{r['first_cpu'] - r['warm_cpu']:+.2f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
