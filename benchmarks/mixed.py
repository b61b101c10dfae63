"""Binomial GLMM (random intercept, Laplace): jm.fit_mixed against lme4 `glmer` and glmmTMB.

    .venv/bin/python benchmarks/mixed.py [--n 100000] [--groups 10000] [--rounds 2] [--json out.json]

The issue's setting: 100,000 rows in 10,000 groups, 2 covariates, y ~ Bernoulli(logit^-1(x'beta +
b_g)), b_g ~ N(0, 0.8^2) (numpy seed 20261129). One CSV is written and read by R (`Rscript`, one
process per round: the time is taken inside R around the fit plus `vcov`, R's start-up and the CSV
read excluded). jaxmle's time is a warm call (the program compiled by an untimed first call) of
fit + standard errors, with the group labels factorised inside the timing. Rounds are interleaved
(jaxmle, glmer, glmmTMB, jaxmle, ...) so machine load hits every side. Each side's lnL is printed:
the comparison is at equal or better optimum (glmer's includes no constant here: Bernoulli).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd

import jaxmle as jm

R_SCRIPT = r"""
suppressPackageStartupMessages({library(lme4); library(glmmTMB)})
args <- commandArgs(TRUE); d <- read.csv(args[1]); d$g <- factor(d$g); which <- args[2]
t0 <- proc.time()[["elapsed"]]
if (which == "glmer") {
  m <- glmer(y ~ x1 + x2 + (1 | g), data = d, family = binomial)
  v <- vcov(m); ll <- as.numeric(logLik(m))
} else {
  m <- glmmTMB(y ~ x1 + x2 + (1 | g), data = d, family = binomial)
  v <- vcov(m)$cond; ll <- as.numeric(logLik(m))
}
el <- proc.time()[["elapsed"]] - t0
cat(sprintf("%.6f %.10f %s\n", el, ll, paste(sprintf("%.10g", sqrt(diag(v))), collapse = " ")))
"""


def simulate(n, g, seed=20261129):
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, g, n)
    x = rng.normal(size=(n, 2))
    b = rng.normal(0.0, 0.8, g)
    eta = -0.5 + x @ np.array([0.7, -0.4]) + b[groups]
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-eta))).astype(float)
    return pd.DataFrame({"y": y, "x1": x[:, 0], "x2": x[:, 1], "g": groups})


def logpdf(theta, u, obs):
    eta = theta["beta"][0] + obs["x"] @ theta["beta"][1:] + theta["sigma"] * u
    return obs["y"] * eta - jm.log1pexp(eta)


def re_logpdf(theta, u):
    return -0.5 * u**2 - 0.5 * jnp.log(2 * jnp.pi)


def jaxmle_fit(df):
    t0 = time.perf_counter()
    data = {"y": df.y.to_numpy(), "x": df[["x1", "x2"]].to_numpy()}
    res = jm.fit_mixed(logpdf, re_logpdf, {"beta": np.zeros(3), "sigma": 1.0}, 0.0, data,
                       df.g.to_numpy(), lower={"sigma": 0.0})  # fmt: skip
    se = np.asarray(res.se["beta"])  # forces the result to the host
    return time.perf_counter() - t0, float(res.loglik), se, res


def r_fit(csv, which):
    out = subprocess.run(["Rscript", "-e", R_SCRIPT, csv, which], capture_output=True, text=True,
                         check=True)  # fmt: skip
    parts = out.stdout.split()
    return float(parts[0]), float(parts[1]), np.array([float(p) for p in parts[2:]])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--groups", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--peers", default="glmer,glmmTMB")
    ap.add_argument("--json")
    a = ap.parse_args()
    df = simulate(a.n, a.groups)
    peers = [p for p in a.peers.split(",") if p]
    with tempfile.TemporaryDirectory() as tmp:
        csv = str(Path(tmp) / "glmm.csv")
        df.to_csv(csv, index=False)
        t0 = time.perf_counter()
        _, ll0, _, res = jaxmle_fit(df)
        first = time.perf_counter() - t0
        print(f"jaxmle first call (compile + fit): {first:.2f} s, {res.message}, n_iter "
              f"{int(res.n_iter)}, lnL {ll0:.6f}")  # fmt: skip
        times = {"jaxmle": [], **{p: [] for p in peers}}
        info = {}
        for _ in range(a.rounds):
            t, ll, se, _ = jaxmle_fit(df)
            times["jaxmle"].append(t)
            info["jaxmle"] = (ll, se)
            for p in peers:
                t, ll, se = r_fit(csv, p)
                times[p].append(t)
                info[p] = (ll, se)
    base = min(times["jaxmle"])
    print(f"\nbinomial GLMM, N={a.n}, G={a.groups}, fit + SEs (min of {a.rounds} rounds)")
    print(
        "| side | min (s) | all rounds (s) | min / jaxmle | lnL | lnL - jaxmle's "
        "| max rel. diff SE(beta) |"
    )
    print("|---|---:|---|---:|---:|---:|---:|")
    rows = []
    for side, ts in times.items():
        ll, se = info[side]
        dse = np.max(np.abs(se / info["jaxmle"][1] - 1))
        row = dict(side=side, min=min(ts), rounds=ts, ratio=min(ts) / base, loglik=ll,
                   dloglik=ll - info["jaxmle"][0], max_rel_diff_se=float(dse))  # fmt: skip
        rows.append(row)
        print(f"| {side} | {row['min']:.3f} | {', '.join(f'{t:.2f}' for t in ts)} | "
              f"{row['ratio']:.1f} | {ll:.4f} | {row['dloglik']:.2e} | {dse:.1e} |")  # fmt: skip
    if a.json:
        Path(a.json).write_text(json.dumps(dict(n=a.n, groups=a.groups, first_call=first,
                                                rows=rows), indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
