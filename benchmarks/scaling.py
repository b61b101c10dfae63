"""Scaling table: jaxmle logit fit + sandwich time against N and p, beside its floor.

The floor is one BLAS pass over the data per Newton iteration: (iterations + 2) x the time of one
chunked X'WX pass written by hand in JAX (the Hessian pass every iteration needs, plus the start
and the final scores pass). Run: .venv/bin/python benchmarks/scaling.py [--quick]
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)
import jaxmle as jm  # noqa: E402
from jaxmle._accumulate import Layout, auto_chunk_size, chunked_sum  # noqa: E402


def logit(theta, obs):
    eta = theta["b0"] + obs["x"] @ theta["b"]
    return obs["y"] * eta - jnp.logaddexp(0.0, eta)


def best(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return min(times)


def row(n, p, repeats):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((n, p)))
    beta = 0.5 * rng.standard_normal(p) / np.sqrt(p)
    y = jnp.asarray((rng.random(n) < 1 / (1 + np.exp(-(np.asarray(x) @ beta)))).astype(float))
    init = {"b0": 0.0, "b": jnp.zeros(p)}
    data = {"x": x, "y": y}
    res = jax.block_until_ready(jm.fit(logit, init, data, cov="sandwich"))
    fit_s = best(lambda: jm.fit(logit, init, data, cov="sandwich"), repeats)
    layout = Layout(auto_chunk_size(data, p + 1, jax.default_backend()))

    @jax.jit
    def xwx(t):
        def chunk(b, m):
            w = m * jax.nn.sigmoid(b["x"] @ t)
            return (b["x"] * w[:, None]).T @ b["x"]

        return chunked_sum(chunk, data, layout, jnp.zeros((p, p), t.dtype))

    t0 = jnp.zeros(p)
    jax.block_until_ready(xwx(t0))
    pass_s = best(lambda: xwx(t0), repeats)
    floor = (int(res.n_iter) + 2) * pass_s
    return fit_s, int(res.n_iter), pass_s, floor


def main():
    quick = "--quick" in sys.argv
    grid = [(10**4, 20), (10**5, 20), (10**6, 20), (10**5, 5), (10**5, 50), (10**5, 200)]
    if not quick:
        grid += [(10**7, 20), (10**6, 200)]
    print(
        "| N | p | fit + sandwich (s) | iterations | one X'WX pass (s) | floor (s) | fit / floor |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n, p in grid:
        repeats = 3 if n * p <= 2 * 10**7 else 1
        fit_s, it, pass_s, floor = row(n, p, repeats)
        print(f"| {n:,} | {p} | {fit_s:.4f} | {it} | {pass_s:.4f} | {floor:.4f} | "
              f"{fit_s / floor:.2f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
