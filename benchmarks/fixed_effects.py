"""Fixed effects (issue 13): jaxmle `fit(..., index=...)` beside pyfixest, interleaved rounds, ratios.

    python benchmarks/fixed_effects.py [--rounds 3] [--logit-n 1000000] [--firms 2000]
        [--poisson-n 500000] [--levels 1000] [--memory-firms 20000] [--json out.json]

Cases (simulated, fixed seeds):
  logit    N rows, `--firms` firm effects + 10 covariates: jaxmle `index={"a": "firm"}` (Newton
           with the effects eliminated, iid SEs of the covariates) vs pyfixest
           `feglm("y ~ x0+..+x9 | firm", family="logit")` (iid vcov)
  poisson  N rows, two sets of `--levels` effects (exporter, importer) + 2 covariates: jaxmle
           `index={"a": "exporter", "c": "importer"}` vs pyfixest `fepois("y ~ x0+x1 | exporter +
           importer")`
Each round times one warm jaxmle fit (compiled in an untimed warm-up) and one pyfixest fit, in
alternation, so load from other processes hits both sides. The estimates are checked to agree
(max relative difference printed).
Generic (`--cases generic`): the same logit without `index=`, by "newton-cg" and "lbfgs" on all
parameters (SEs of b by CG solves), beside the `index=` fit: how far the generic path gets.
Memory: peak RSS added by one jaxmle fit of a logit panel with
`--memory-firms` firms (fresh subprocess, first call: tracing and compilation included), against
the data's own size; and the same for pyfixest.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from memory import _malloc_trim, _reset_peak, _status_kib

MiB = 2**20
P_LOGIT = 10


def simulate_logit(n, g, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, P_LOGIT))
    firm = rng.integers(0, g, n)
    a = rng.normal(size=g)
    beta = np.linspace(-0.5, 0.5, P_LOGIT)
    y = (rng.random(n) < 1 / (1 + np.exp(-(x @ beta + a[firm])))).astype(float)
    return x, y, firm.astype(np.int32)


def simulate_poisson(n, levels, seed=2):
    rng = np.random.default_rng(seed)
    x = 0.5 * rng.normal(size=(n, 2))
    exporter = rng.integers(0, levels, n)
    importer = rng.integers(0, levels, n)
    a, c = 0.5 * rng.normal(size=levels), 0.5 * rng.normal(size=levels)
    y = rng.poisson(np.exp(x @ np.array([0.3, -0.2]) + a[exporter] + c[importer])).astype(float)
    return x, y, exporter.astype(np.int32), importer.astype(np.int32)


def logit_fe(theta, obs):
    import jaxmle as jm

    eta = obs["x"] @ theta["b"] + theta["a"][obs["firm"]]
    return obs["y"] * eta - jm.log1pexp(eta)


def poisson_fe(theta, obs):
    import jax.numpy as jnp

    eta = obs["x"] @ theta["b"] + theta["a"][obs["exporter"]] + theta["c"][obs["importer"]]
    return obs["y"] * eta - jnp.exp(eta)


def jaxmle_logit(x, y, firm, g):
    import jaxmle as jm

    init = {"a": np.zeros(g), "b": np.zeros(x.shape[1])}
    res = jm.fit(logit_fe, init, {"x": x, "y": y, "firm": firm}, index={"a": "firm"})
    assert bool(res.converged), res.message
    return np.asarray(res.params["b"])


def jaxmle_poisson(x, y, exporter, importer, levels):
    import jaxmle as jm

    init = {"a": np.zeros(levels), "b": np.zeros(2), "c": np.zeros(levels)}
    data = {"x": x, "y": y, "exporter": exporter, "importer": importer}
    res = jm.fit(poisson_fe, init, data, index={"a": "exporter", "c": "importer"})
    assert bool(res.converged), res.message
    return np.asarray(res.params["b"])


def jaxmle_generic(x, y, firm, g, method):
    """The same logit without index=: the Hessian-free method on all g + 10 parameters, SEs of b
    by CG solves with information-vector products."""
    import jaxmle as jm

    init = {"a": np.zeros(g), "b": np.zeros(x.shape[1])}
    data = {"x": x, "y": y, "firm": firm}
    # L-BFGS without a preconditioner needs hundreds of iterations on these effects
    res = jm.fit(logit_fe, init, data, method=method, se_for=["b"], max_iter=5000)
    assert bool(res.converged), res.message
    return np.asarray(res.params["b"]), int(res.n_iter)


def pyfixest_logit(df):
    import pyfixest as pf

    xs = "+".join(f"x{j}" for j in range(P_LOGIT))
    m = pf.feglm(f"y ~ {xs} | firm", data=df, family="logit", vcov="iid")
    return m.coef().to_numpy(), m.se().to_numpy()


def pyfixest_poisson(df):
    import pyfixest as pf

    m = pf.fepois("y ~ x0 + x1 | exporter + importer", data=df, vcov="iid")
    return m.coef().to_numpy(), m.se().to_numpy()


def interleave(name, ours, peer, rounds):
    est = ours()  # warm-up: tracing and compilation
    ref = peer()[0]
    t_ours, t_peer = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        est = ours()
        t_ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ref = peer()[0]
        t_peer.append(time.perf_counter() - t0)
    diff = float(np.max(np.abs(est - ref) / np.abs(ref)))
    row = {
        "case": name,
        "jaxmle_min": min(t_ours),
        "pyfixest_min": min(t_peer),
        "jaxmle_all": t_ours,
        "pyfixest_all": t_peer,
        "ratio_min": min(t_peer) / min(t_ours),
        "max_rel_diff": diff,
    }
    print(
        f"{name:<60s} jaxmle {min(t_ours):7.3f} s  pyfixest {min(t_peer):7.3f} s  "
        f"pyfixest/jaxmle {row['ratio_min']:5.2f}  max rel. diff {diff:.1e}",
        flush=True,
    )
    return row


# ---------------------------------------------------------------- memory (fresh subprocess)


def memory_child(lib, n, g):
    """Peak RSS added by one fit (first call) over the RSS with the data loaded."""
    x, y, firm = simulate_logit(n, g, seed=3)
    if lib == "jaxmle":
        import jax  # noqa: F401

        import jaxmle  # noqa: F401

        fn = lambda: jaxmle_logit(x, y, firm, g)  # noqa: E731
    else:
        import pyfixest  # noqa: F401

        df = pd.DataFrame({"y": y, "firm": firm, **{f"x{j}": x[:, j] for j in range(P_LOGIT)}})
        fn = lambda: pyfixest_logit(df)  # noqa: E731
    _malloc_trim()
    base = _status_kib("VmRSS")
    if not _reset_peak():
        raise SystemExit("/proc/self/clear_refs is not writable: peak RSS cannot be reset")
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    peak = _status_kib("VmHWM")
    data = (x.nbytes + y.nbytes + firm.nbytes) / MiB
    print(json.dumps({"lib": lib, "added_MiB": (peak - base) / 1024, "data_MiB": data,
                      "first_call_s": seconds, "peak_rss_MiB": peak / 1024}))  # fmt: skip


def memory(n, g):
    rows = []
    for lib in ("jaxmle", "pyfixest"):
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", lib, "--memory-n", str(n),
             "--memory-firms", str(g)],
            capture_output=True, text=True, check=True, env={**os.environ},
        )  # fmt: skip
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"memory, logit N={n:,} with {g:,} firms, {row['lib']:<9s}: +{row['added_MiB']:.0f} MiB"
            f" at the first call (data {row['data_MiB']:.0f} MiB; process peak "
            f"{row['peak_rss_MiB']:.0f} MiB; {row['first_call_s']:.1f} s)",
            flush=True,
        )
        rows.append(row)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--logit-n", type=int, default=1_000_000)
    ap.add_argument("--firms", type=int, default=2000)
    ap.add_argument("--poisson-n", type=int, default=500_000)
    ap.add_argument("--levels", type=int, default=1000)
    ap.add_argument("--memory-n", type=int, default=400_000)
    ap.add_argument("--memory-firms", type=int, default=20_000)
    ap.add_argument("--generic-n", type=int, default=100_000)
    ap.add_argument("--generic-firms", type=int, default=1000)
    ap.add_argument("--memory-child")
    ap.add_argument("--cases", default="logit,poisson,memory")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.memory_child:
        return memory_child(args.memory_child, args.memory_n, args.memory_firms)
    import jax

    jax.config.update("jax_enable_x64", True)  # the peers' float64 arrays pass as they are
    cases = args.cases.split(",")
    out = {"rows": [], "memory": []}
    if "logit" in cases:
        x, y, firm = simulate_logit(args.logit_n, args.firms)
        df = pd.DataFrame({"y": y, "firm": firm, **{f"x{j}": x[:, j] for j in range(P_LOGIT)}})
        name = f"logit N={args.logit_n:,}, {args.firms:,} firm effects + {P_LOGIT} covariates"
        out["rows"].append(
            interleave(
                name,
                lambda: jaxmle_logit(x, y, firm, args.firms),
                lambda: pyfixest_logit(df),
                args.rounds,
            )
        )
    if "poisson" in cases:
        x, y, e, i = simulate_poisson(args.poisson_n, args.levels)
        df = pd.DataFrame({"y": y, "x0": x[:, 0], "x1": x[:, 1], "exporter": e, "importer": i})
        name = f"Poisson N={args.poisson_n:,}, {args.levels:,} + {args.levels:,} effects + 2 cov."
        out["rows"].append(
            interleave(
                name,
                lambda: jaxmle_poisson(x, y, e, i, args.levels),
                lambda: pyfixest_poisson(df),
                args.rounds,
            )
        )
    if "generic" in cases:  # how far the generic path (no index=) gets
        x, y, firm = simulate_logit(args.generic_n, args.generic_firms)
        df = pd.DataFrame({"y": y, "firm": firm, **{f"x{j}": x[:, j] for j in range(P_LOGIT)}})
        ref = pyfixest_logit(df)[0]
        jaxmle_logit(x, y, firm, args.generic_firms)  # compile
        for method in ("newton-cg", "lbfgs"):
            jaxmle_generic(x, y, firm, args.generic_firms, method)  # compile
            t0 = time.perf_counter()
            est, n_iter = jaxmle_generic(x, y, firm, args.generic_firms, method)
            t = time.perf_counter() - t0
            t0 = time.perf_counter()
            jaxmle_logit(x, y, firm, args.generic_firms)
            t_index = time.perf_counter() - t0
            diff = float(np.max(np.abs(est - ref) / np.abs(ref)))
            print(
                f"generic path, logit N={args.generic_n:,}, {args.generic_firms:,} firms: "
                f"{method} (no index=, se_for=['b']) {t:.2f} s, {n_iter} iterations; index= "
                f"{t_index:.2f} s; max rel. diff to pyfixest {diff:.1e}",
                flush=True,
            )
            out["rows"].append({"case": f"generic {method}", "seconds": t, "index_seconds":
                                t_index, "n_iter": n_iter, "max_rel_diff": diff})  # fmt: skip
    if "memory" in cases:
        out["memory"] = memory(args.memory_n, args.memory_firms)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
