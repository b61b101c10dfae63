"""Binomial GEE, exchangeable, 100,000 rows in 20,000 clusters of 5: jaxmle vs geepack vs statsmodels,
interleaved round by round so that load on a shared machine hits every library alike.

    python benchmarks/gee_compare.py [--rounds 5] [--json out.json]

Every library fits the same simulated data (`simulate_gee`) from a formula, at geepack's tight
tolerance (epsilon 1e-10; jaxmle tol 1e-10; statsmodels ctol 1e-10) and returns coefficients with
robust standard errors; statsmodels is timed a second time with cov_type="bias_reduced" (jaxmle's
bias-reduced covariance is computed in every fit). geepack's time is R's own elapsed time for
`geeglm(...)` in a persistent R session (no R start-up). The estimates are checked against jaxmle's
(max relative difference printed) before the times are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings

import jax
import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(__file__))
from _rsession import RSession

FORMULA = "y ~ x1 + x2 + t"


def simulate_gee(n_clusters: int = 20_000, size: int = 5, seed: int = 20261129) -> pd.DataFrame:
    """Random-intercept logistic data: x1 ~ N(0, 1) per row, x2 ~ Bernoulli(1/2) per cluster,
    t = 0..size-1, u ~ N(0, 1) per cluster, y ~ Bernoulli(logistic(-0.5 + 0.5 x1 - 0.4 x2
    + 0.1 t + u)); rows sorted by cluster (geepack needs that)."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_clusters), size)
    t = np.tile(np.arange(size), n_clusters).astype(float)
    x1 = rng.normal(size=g.size)
    x2 = np.repeat(rng.integers(0, 2, n_clusters), size).astype(float)
    u = np.repeat(rng.normal(size=n_clusters), size)
    eta = -0.5 + 0.5 * x1 - 0.4 * x2 + 0.1 * t + u
    y = (rng.random(g.size) < 1.0 / (1.0 + np.exp(-eta))).astype(float)
    return pd.DataFrame({"y": y, "x1": x1, "x2": x2, "t": t, "id": g})


def jaxmle_fit(df):
    import jaxmle as jm

    res = jm.gee(FORMULA, df, family="binomial", groups="id", corstr="exchangeable", tol=1e-10)
    jax.block_until_ready(res)
    return np.asarray(list(res.params.values())), np.asarray(list(res.se.values())), res


def statsmodels_fit(df, cov_type):
    import statsmodels.api as sm
    import statsmodels.formula.api as smf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = smf.gee(FORMULA, "id", df, family=sm.families.Binomial(),
                        cov_struct=sm.cov_struct.Exchangeable())  # fmt: skip
        res = model.fit(ctol=1e-10, cov_type=cov_type)
    return np.asarray(res.params), np.asarray(res.bse)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--clusters", type=int, default=20_000)
    ap.add_argument("--json", default=None)
    ap.add_argument("--skip-statsmodels", action="store_true")
    args = ap.parse_args()
    df = simulate_gee(args.clusters)
    times = {"jaxmle": [], "geepack": [], "statsmodels robust": [], "statsmodels bias_reduced": []}
    with tempfile.TemporaryDirectory() as tmp, RSession() as r:
        csv = os.path.join(tmp, "gee.csv")
        df.to_csv(csv, index=False)
        r.run(f'suppressMessages(library(geepack)); d <- read.csv("{csv}")')
        geeglm = (
            "geeglm(y ~ x1 + x2 + t, family = binomial, data = d, id = id, "
            'corstr = "exchangeable", control = geese.control(epsilon = 1e-10, maxit = 100))'
        )
        # first calls (jaxmle compiles; R loads code) are not timed
        est, se, res = jaxmle_fit(df)
        r.time(geeglm, "fit")
        peer = np.asarray(
            eval(
                r.run('cat(sprintf("%.17g", c(coef(fit), sqrt(diag(fit$geese$vbeta)))), sep = ",")')
            )
        )
        diffs = {"geepack": (np.max(np.abs(peer[:4] - est) / np.abs(est)),
                             np.max(np.abs(peer[4:] - se) / se))}  # fmt: skip
        for rnd in range(args.rounds):
            t0 = time.perf_counter()
            jaxmle_fit(df)
            times["jaxmle"].append(time.perf_counter() - t0)
            times["geepack"].append(r.time(geeglm, "fit"))
            if not args.skip_statsmodels:
                for cov_type in ("robust", "bias_reduced"):
                    t0 = time.perf_counter()
                    p, _ = statsmodels_fit(df, cov_type)
                    times[f"statsmodels {cov_type}"].append(time.perf_counter() - t0)
                    if rnd == 0:
                        diffs[f"statsmodels {cov_type}"] = (
                            np.max(np.abs(p - est) / np.abs(est)),
                            np.nan,
                        )
            print(f"round {rnd}: " + ", ".join(f"{k} {v[-1]:.3f}s" for k, v in times.items() if v),
                  flush=True)  # fmt: skip
    base = min(times["jaxmle"])
    report = {"clusters": args.clusters, "rows": len(df), "n_iter": int(res.n_iter),
              "load_before": os.getloadavg(), "libraries": {}}  # fmt: skip
    print(
        f"\n{'library':<28}{'min (s)':>10}{'median (s)':>12}{'ratio (min)':>13}  max rel diff est / se"
    )
    for name, ts in times.items():
        if not ts:
            continue
        d = diffs.get(name, (0.0, 0.0))
        report["libraries"][name] = {
            "times": ts,
            "min": min(ts),
            "median": statistics.median(ts),
            "ratio_min": min(ts) / base,
            "diff_est": d[0],
            "diff_se": d[1],
        }
        print(f"{name:<28}{min(ts):>10.3f}{statistics.median(ts):>12.3f}{min(ts) / base:>13.1f}  "
              f"{d[0]:.1e} / {d[1]:.1e}")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
