"""Fits per second of a Monte Carlo study: 2,000 logit data sets, N = 1,000, p = 5 (+ intercept).

Times, on this machine, with warm (compiled) programs:
  1. statsmodels `Logit(...).fit()` in a Python loop (Newton, Hessian standard errors): the yardstick;
  2. `jax.vmap(jm.fit)` over pre-simulated data in batches of 32 (fit + Hessian covariance, start
     at 0), with the logit log-density written with jnp.logaddexp and with `jm.log1pexp`;
  3. `jm.monte_carlo` end to end: simulate + fit + Hessian SE + Wald statistics, start at the truth,
     then with the OPG and sandwich covariances as well. Simulating costs about as much as fitting:
     float64 normals by threefry + erfinv take ~36 ns each on CPU.
Wall-clock fits/s and CPU-seconds per fit are both printed: on a shared machine the CPU time is the
steadier number. To spread batches over every CPU core, run with
  XLA_FLAGS=--xla_force_host_platform_device_count=2 python examples/montecarlo_speed.py

Run: python examples/montecarlo_speed.py [n_reps]
"""

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxmle as jm

R = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
N, P = 1000, 5
THETA = {"b0": 0.3, "b": jnp.linspace(-0.5, 0.5, P)}


def logit(theta, obs):
    eta = theta["b0"] + obs["x"] @ theta["b"]
    return obs["y"] * eta - jnp.logaddexp(0.0, eta)


def logit_log1p(theta, obs):
    eta = theta["b0"] + obs["x"] @ theta["b"]
    return obs["y"] * eta - jm.log1pexp(eta)  # ln(1 + e^eta), cheaper derivatives than logaddexp


def simulate(key, theta):
    kx, ky = jax.random.split(key)
    x = jax.random.normal(kx, (N, P))
    y = jax.random.bernoulli(ky, jax.nn.sigmoid(theta["b0"] + x @ theta["b"]))
    return {"x": x, "y": y.astype(x.dtype)}


def timed(run, repeats=3):
    """(best wall seconds, CPU seconds of that run) over `repeats` warm runs."""
    best = (np.inf, np.inf)
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        jax.block_until_ready(run())
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return best


def report(label, n, wall, cpu):
    print(f"{label:<52} {n / wall:9,.0f} fits/s   {cpu / n * 1e6:7.1f} CPU-us/fit")


print(f"{R} logit data sets, N = {N}, p = {P}; devices: {jax.devices()}")
with jax.enable_x64(True):
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.key(0), jnp.arange(R))
    data = jax.block_until_ready(jax.jit(jax.vmap(simulate, in_axes=(0, None)))(keys, THETA))
    host = jax.tree.map(np.asarray, data)

try:
    import statsmodels.api as sm

    n_sm = min(R, 300)
    designs = [sm.add_constant(host["x"][i]) for i in range(n_sm)]

    def statsmodels_loop():
        for i in range(n_sm):
            sm.Logit(host["y"][i], designs[i]).fit(disp=0).bse  # noqa: B018

    report("statsmodels Logit loop (fit + bse)", n_sm, *timed(statsmodels_loop, 1))
except ImportError:
    print("statsmodels not installed: no yardstick")

init = {"b0": 0.0, "b": jnp.zeros(P)}
batch = 32
with jax.enable_x64(True):
    starts = range(0, R - batch + 1, batch)
    chunks = [jax.tree.map(lambda x, i=i: x[i : i + batch], data) for i in starts]
for name, logpdf in (("logaddexp", logit), ("log1pexp", logit_log1p)):
    fit_batch = jax.jit(
        jax.vmap(lambda d, f=logpdf: (lambda r: (r.params, r.se, r.status))(jm.fit(f, init, d)))
    )
    with jax.enable_x64(True):
        jax.block_until_ready(fit_batch(chunks[0]))
        n_fit = batch * len(chunks)
        report(f"vmap(jm.fit), batches of {batch}, Hessian SE, {name}", n_fit,
               *timed(lambda fb=fit_batch: [fb(c) for c in chunks]))  # fmt: skip

for covs in (("hessian",), ("hessian", "opg", "sandwich")):

    def study(covs=covs):
        mc = jm.monte_carlo(simulate, logit_log1p, THETA, R, 0, covs=covs, progress=False)
        return mc.estimates

    study()  # compile
    report(f"jm.monte_carlo: simulate + fit + {'/'.join(covs)}", R, *timed(study))
