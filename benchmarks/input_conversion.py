"""jaxmle warm logit fit (N=1e6, p=20) with numpy vs jax-array inputs, interleaved round by round.

    python benchmarks/input_conversion.py [--rounds 5]

Interleaving the two variants (and a bare `jnp.asarray(X)`) in the same rounds cancels most of the
drift in background load that separate pytest-benchmark groups cannot.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _models as M

jax.config.update("jax_enable_x64", True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    x, y = M.simulate_logit()
    xj, yj = jax.block_until_ready((jnp.asarray(x), jnp.asarray(y)))
    M.jaxmle_logit(x, y)  # compile (same program for both inputs)
    M.jaxmle_logit(xj, yj)
    times = {"fit, numpy in": [], "fit, jax arrays in": [], "jnp.asarray(X) alone": []}
    for _ in range(args.rounds):
        for name, fn in (
            ("fit, numpy in", lambda: M.jaxmle_logit(x, y)),
            ("fit, jax arrays in", lambda: M.jaxmle_logit(xj, yj)),
            ("jnp.asarray(X) alone", lambda: jax.block_until_ready(jnp.asarray(x))),
        ):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    print(f"load average: {os.getloadavg()}")
    print("| what | min (s) | median (s) | rounds (s) |")
    print("|---|---:|---:|---|")
    for name, ts in times.items():
        rounds = ", ".join(f"{t:.3f}" for t in ts)
        print(f"| {name} | {min(ts):.3f} | {np.median(ts):.3f} | {rounds} |")


if __name__ == "__main__":
    main()
