"""How many passes over the data a fit makes, and what each kind of pass costs.

`count_passes(fit)` runs `fit()` once with every chunked sum of jaxmle's objective reporting, through
a host callback, the rows it summed; it returns the passes by kind ("newton" = lnL, U and -H;
"scores" = the final per-observation scores pass; ...) in full-data equivalents (a subsample pass
over 2% of the rows counts 0.02). The callbacks cost host round-trips, so this run is never timed:
the caches are cleared before and after it. `pass_costs(...)` times one pass of each kind, compiled
alone, on the same data.

Run: python benchmarks/passes.py [--n N]   (the benchmark logit, N = 1e6, p = 20 by default)
"""

from __future__ import annotations

import collections
import contextlib
import os
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(__file__))
jax.config.update("jax_enable_x64", True)
import _models as M  # noqa: E402

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
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return min(times)


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


def main():
    n = int(sys.argv[sys.argv.index("--n") + 1]) if "--n" in sys.argv else M.LOGIT_N
    x, y = M.simulate_logit(n=n)
    xd, yd = jax.device_put(x), jax.device_put(y)
    print(f"logit N={n:,} p={x.shape[1]}, device {jax.devices()[0]}")
    for label, opts in (("default", {}), ("no subsample start", {"subsample_start": 0})):
        counts = count_passes(
            lambda opts=opts: jm.fit(M.logit_logpdf, M.logit_init(x.shape[1]),
                                     {"x": xd, "y": yd}, cov="sandwich", tol=1e-10, **opts)
        )  # fmt: skip
        total = sum(counts.values())
        print(f"{label}: {total:.2f} passes: " + ", ".join(f"{k} {v:g}" for k, v in counts.items()))
    costs = pass_costs(xd, yd)
    costs["newton + scores fused in one pass"] = best(fused_pass(xd, yd))
    for name, t in costs.items():
        print(f"one {name} pass: {t * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
