"""How many passes over the data a fit makes, and what each kind of pass costs.

`count_passes(fit)` runs `fit()` once with every chunked sum of jaxmle's objective reporting, through
a host callback, the rows it summed; it returns the passes by kind ("newton" = lnL, U and -H;
"scores" = the final per-observation scores pass; ...) in full-data equivalents (a subsample pass
over 2% of the rows counts 0.02). The callbacks cost host round-trips, so this run is never timed:
the caches are cleared before and after it. `pass_costs(...)` times one pass of each kind, compiled
alone, on the same data.

`wall_times(...)` then times whole fits side by side, rounds interleaved (each round runs every
contender once, in a rotated order, so load on a shared machine hits all of them): jaxmle with the
default (automatic) subsample start, jaxmle with `subsample_start=0` (the behaviour before it),
scikit-learn's newton-cholesky (estimates only) and statsmodels Logit (newton, HC0); ratios to the
default.

Run: python benchmarks/passes.py [--n N] [--rounds R] [--no-peers]
(the benchmark logit, N = 1e6, p = 20, fit + HC0 sandwich, tol 1e-10, by default)
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
jax.config.update("jax_enable_x64", True)
import _models as M  # noqa: E402
from scaling import best as fastest  # noqa: E402

import jaxmle as jm  # noqa: E402
import jaxmle._objective as objective_module  # noqa: E402
from jaxmle._accumulate import Layout, auto_chunk_size, chunked_sum  # noqa: E402
from jaxmle._objective import Batch, Objective  # noqa: E402


def _kind(fn) -> str:
    """'newton', 'scores', ... from the chunk function's qualified name (Objective.<kind>.<locals>)."""
    parts = fn.__qualname__.split(".")
    return parts[parts.index("<locals>") - 1] if "<locals>" in parts else parts[-1]


@contextlib.contextmanager
def _counting(counts):
    original = objective_module.chunked_sum

    def chunked_sum(fn, batch, layout, zeros):
        out = original(fn, batch, layout, zeros)
        share = 1.0 / layout.stride
        kind = _kind(fn) + (" (subsample)" if layout.stride > 1 else "")
        # the callback depends on the sum, so it runs once each time this pass is evaluated
        jax.debug.callback(
            lambda _, kind=kind: counts.__setitem__(kind, counts[kind] + share),
            jax.tree.leaves(out)[0],
        )
        return out

    objective_module.chunked_sum = chunked_sum
    jax.clear_caches()
    try:
        yield counts
    finally:
        objective_module.chunked_sum = original
        jax.clear_caches()


def count_passes(fit) -> dict[str, float]:
    """Passes over the data by kind (full-data equivalents) that `fit()` makes."""
    counts = collections.defaultdict(float)
    with _counting(counts):
        jax.block_until_ready(fit())
        jax.effects_barrier()
    return dict(counts)


def best(fn, repeats=5):
    """Fastest of `repeats` warm calls (the first, untimed, call compiles)."""
    jax.block_until_ready(fn())
    return fastest(fn, repeats)


def logit_objective(x, y) -> Objective:
    data = {"x": x, "y": y}
    k = x.shape[1] + 1
    layout = Layout(auto_chunk_size(data, k, jax.default_backend()))

    def unravel(t):
        return {"b0": t[0], "b": t[1:]}

    return Objective(
        M.logit_logpdf, unravel, lambda t: t, Batch(data, None, None), layout, 0, "frequency"
    )


def pass_costs(x, y, repeats=5) -> dict[str, float]:
    """Seconds for one pass of each kind over the logit data (compiled alone, warm)."""
    obj = logit_objective(x, y)
    theta = jnp.full(x.shape[1] + 1, 0.05, x.dtype)
    passes = {
        "newton (lnL, U, -H)": jax.jit(obj.newton),
        "scores (lnL, U, OPG, meat, probe)": jax.jit(lambda t: obj.scores(t, t)),
        "lnL and U": jax.jit(obj.loglik_grad),
    }
    return {name: best(lambda f=f: f(theta), repeats) for name, f in passes.items()}


def fused_pass(x, y):
    """One pass computing what a Newton pass and the scores pass compute, chunk by chunk: the cost
    of accumulating the covariance pieces in the evaluation that finds convergence."""
    obj = logit_objective(x, y)
    theta = jnp.full(x.shape[1] + 1, 0.05, x.dtype)

    @jax.jit
    def fused(t):
        def chunk(b, m):
            ll, s = obj._chunk_scores(t, b)

            def grad_aux(tt):
                value, g = jax.value_and_grad(obj._chunk_loglik)(tt, b, m)
                return g, (value, g)

            h, (value, g) = jax.jacrev(grad_aux, has_aux=True)(t)
            ws = s * m[:, None]
            return value, g, -h, ws.T @ s, jnp.sum(m * ll)

        k = t.shape[0]
        zeros = (jnp.zeros(()), jnp.zeros(k), jnp.zeros((k, k)), jnp.zeros((k, k)), jnp.zeros(()))
        return chunked_sum(
            chunk, obj.batch, obj.layout, jax.tree.map(lambda z: z.astype(t.dtype), zeros)
        )

    return lambda: fused(theta)


def wall_times(contenders: dict, rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each contender, rounds interleaved in a rotated order (after one
    untimed warm-up call each: jaxmle compiles there)."""
    for fn in contenders.values():
        fn()
    names = list(contenders)
    times = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - t)
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=M.LOGIT_N)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-peers", action="store_true", help="jaxmle only (no sklearn/statsmodels)")
    args = ap.parse_args()
    x, y = M.simulate_logit(n=args.n)
    xd, yd = jax.device_put(x), jax.device_put(y)
    print(f"logit N={args.n:,} p={x.shape[1]}, device {jax.devices()[0]}")
    fits = {
        "jaxmle (default: subsample start)": {},
        "jaxmle subsample_start=0": {"subsample_start": 0},
    }
    results = {}
    for label, opts in fits.items():
        counts = count_passes(
            lambda opts=opts: jm.fit(M.logit_logpdf, M.logit_init(x.shape[1]),
                                     {"x": xd, "y": yd}, cov="sandwich", tol=1e-10, **opts)
        )  # fmt: skip
        total = sum(counts.values())
        print(f"{label}: {total:.2f} passes: " + ", ".join(f"{k} {v:g}" for k, v in counts.items()))
    for label, opts in fits.items():
        res = M.jaxmle_logit(x, y, **opts)
        results[label] = res
        print(f"{label}: {int(res.n_iter)} full-data iterations, start_rows "
              f"{int(res.start_rows):,}, status {res.message}")  # fmt: skip
    a, b = (np.asarray(r.coef) for r in results.values())
    se = np.asarray(jnp.sqrt(jnp.diagonal(next(iter(results.values())).cov)))
    print(f"max |difference of the two estimates| / se: {np.max(np.abs(a - b) / se):.1e}")

    costs = pass_costs(xd, yd)
    costs["newton + scores fused in one pass"] = best(fused_pass(xd, yd))
    for name, t in costs.items():
        print(f"one {name} pass: {t * 1e3:.1f} ms")

    contenders = {label: lambda o=opts: M.jaxmle_logit(x, y, **o) for label, o in fits.items()}
    if not args.no_peers:
        xc = M.add_constant(x)
        contenders["sklearn newton-cholesky (no SE)"] = lambda: M.sklearn_logit(x, y)
        contenders["statsmodels Logit newton HC0"] = lambda: M.statsmodels_logit(xc, y)
    times = wall_times(contenders, args.rounds)
    base = statistics.median(next(iter(times.values())))
    print(f"\nwall time, {args.rounds} interleaved rounds (numpy data in, fit + HC0 unless noted)")
    print("| contender | median (s) | min (s) | median / jaxmle default |")
    print("|---|---:|---:|---:|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med:.3f} | {min(ts):.3f} | {med / base:.2f} |")


if __name__ == "__main__":
    main()
