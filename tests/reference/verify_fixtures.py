"""Independent consistency check of the reference fixtures (no R needed).

    .venv/bin/python tests/reference/verify_fixtures.py

For every *.json fixture: checks the schema (k x k symmetric covariances,
param_names length), then re-implements the log-density stated in the
fixture's "description" in JAX (float64), evaluates it on the CSV, and checks
  * loglik matches,
  * the score is ~0 at the stored params (relative Newton step),
  * hessian / opg / sandwich / cluster covariances recomputed by autodiff
    match the stored ones.
"""

import glob
import json
import os

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.scipy.special import gammaln
from jax.scipy.stats import norm

HERE = os.path.dirname(os.path.abspath(__file__))


def design(df, cols):
    return jnp.column_stack(
        [jnp.ones(len(df)) if c is None else jnp.asarray(df[c], float) for c in cols]
    )


def logit(df, y, cols):
    X, y = design(df, cols), jnp.asarray(df[y], float)

    def f(p):
        eta = X @ p
        return y * eta - jnp.logaddexp(0.0, eta)

    return f


def probit(df, y, cols):
    X, y = design(df, cols), jnp.asarray(df[y], float)
    q = 2 * y - 1
    return lambda p: norm.logcdf(q * (X @ p))


def poisson(df, y, cols):
    X, y = design(df, cols), jnp.asarray(df[y], float)

    def f(p):
        eta = X @ p
        return y * eta - jnp.exp(eta) - gammaln(y + 1)

    return f


def negbin2(df, y, cols, log_alpha):
    X, y = design(df, cols), jnp.asarray(df[y], float)
    k = X.shape[1]

    def f(p):
        eta = X @ p[:k]
        alpha = jnp.exp(p[k]) if log_alpha else p[k]
        th = 1 / alpha
        lmt = jnp.log(th + jnp.exp(eta))
        return (
            gammaln(y + th)
            - gammaln(th)
            - gammaln(y + 1)
            + th * (jnp.log(th) - lmt)
            + y * (eta - lmt)
        )

    return f


def weibull(df, y, cols, event):
    X, t, d = design(df, cols), jnp.asarray(df[y], float), jnp.asarray(df[event], float)
    k = X.shape[1]

    def f(p):
        s = jnp.exp(p[k])
        w = (jnp.log(t) - X @ p[:k]) / s
        return d * (w - jnp.log(s) - jnp.log(t)) - jnp.exp(w)

    return f


def normal(df, y, cols):
    X, y = design(df, cols), jnp.asarray(df[y], float)
    k = X.shape[1]
    return lambda p: norm.logpdf(y, X @ p[:k], jnp.exp(p[k]))


SPECS = {
    "r_logit_ohio.json": lambda d: logit(d, "resp", [None, "age", "smoke"]),
    "r_probit_birthwt.json": lambda d: probit(
        d, "low", [None, "age", "lwt", "smoke", "ptl", "ht", "ui"]
    ),
    "r_poisson_warpbreaks.json": lambda d: poisson(
        d, "breaks", [None, "woolB", "tensionM", "tensionH"]
    ),
    "r_negbin2_quine.json": lambda d: negbin2(
        d, "Days", [None, "EthN", "SexM", "AgeF1", "AgeF2", "AgeF3", "LrnSL"], log_alpha=True
    ),
    "r_weibull_lung.json": lambda d: weibull(d, "time", [None, "age", "sex", "ph.ecog"], "event"),
    "r_maxlik_normal_mtcars.json": lambda d: normal(d, "mpg", [None, "wt", "hp"]),
    "r_normal_cluster_petersen.json": lambda d: normal(d, "y", [None, "x"]),
    "sm_logit_spector.json": lambda d: logit(d, "GRADE", [None, "GPA", "TUCE", "PSI"]),
    "sm_probit_spector.json": lambda d: probit(d, "GRADE", [None, "GPA", "TUCE", "PSI"]),
    "sm_poisson_randhie.json": lambda d: poisson(
        d,
        "mdvis",
        [None, "lncoins", "idp", "lpi", "fmde", "physlm", "disea", "hlthg", "hlthf", "hlthp"],
    ),
    "sm_negbin2_randhie.json": lambda d: negbin2(
        d,
        "mdvis",
        [None, "lncoins", "idp", "lpi", "fmde", "physlm", "disea", "hlthg", "hlthf", "hlthp"],
        log_alpha=False,
    ),
}

REQUIRED = [
    "source",
    "dataset",
    "response",
    "n_obs",
    "model",
    "description",
    "param_names",
    "params",
    "loglik",
    "cov",
    "cluster_var",
    "commands",
]


def close(a, b, rtol, label, name):
    a, b = np.asarray(a), np.asarray(b)
    # elementwise relative to the matrix/vector scale (some entries are ~0)
    r = np.max(np.abs(a - b)) / np.max(np.abs(b))
    assert r < rtol, f"{name}: {label} rel diff {r:.3g}"
    return r


def main():
    files = sorted(glob.glob(os.path.join(HERE, "*.json")))
    assert set(os.path.basename(f) for f in files) == set(SPECS), "fixture list changed"
    for path in files:
        name = os.path.basename(path)
        with open(path) as fh:
            fx = json.load(fh)
        for key in REQUIRED:
            assert key in fx, (name, key)
        k = len(fx["param_names"])
        assert len(fx["params"]) == k
        covs = {kk: np.array(v) for kk, v in fx["cov"].items()}
        for kk, m in covs.items():
            assert m.shape == (k, k) and np.array_equal(m, m.T), (name, kk)
        df = pd.read_csv(os.path.join(HERE, fx["dataset"]))
        assert len(df) == fx["n_obs"], name
        f = SPECS[name](df)
        p = jnp.asarray(fx["params"])
        ll = float(jnp.sum(f(p)))
        U = np.asarray(jax.jit(jax.jacfwd(f))(p))
        A = -np.asarray(jax.jit(jax.hessian(lambda q: jnp.sum(f(q))))(p))
        Ainv = np.linalg.inv(A)
        step = np.max(np.abs(Ainv @ U.sum(0)) / np.maximum(np.abs(np.asarray(p)), 1e-3))
        assert abs(ll - fx["loglik"]) <= 1e-12 * abs(fx["loglik"]), (name, ll, fx["loglik"])
        assert step < 1e-10, (name, "not at the MLE", step)
        mine = {
            "hessian": Ainv,
            "opg": np.linalg.inv(U.T @ U),
            "sandwich": Ainv @ U.T @ U @ Ainv,
            "bhhh": np.linalg.inv(U.T @ U),
        }
        if fx["cluster_var"] is not None:
            g = df[fx["cluster_var"]].to_numpy()
            Uc = pd.DataFrame(U).groupby(g).sum().to_numpy()
            G = Uc.shape[0]
            mine["cluster"] = G / (G - 1) * Ainv @ Uc.T @ Uc @ Ainv
        worst = {}
        for kk, m in covs.items():
            if kk in mine:
                worst[kk] = close(mine[kk], m, 1e-9, kk, name)
        if "expected" in covs:  # probit Fisher information X' diag(phi^2 / (Phi (1 - Phi))) X
            X = np.asarray(design(df, [None, "age", "lwt", "smoke", "ptl", "ht", "ui"]))
            eta = X @ np.asarray(p)
            Phi, phi = np.asarray(norm.cdf(eta)), np.asarray(norm.pdf(eta))
            Iinv = np.linalg.inv(X.T @ (X * (phi**2 / (Phi * (1 - Phi)))[:, None]))
            mine["expected"] = Iinv
            mine["sandwich_expected"] = Iinv @ U.T @ U @ Iinv
            worst["expected"] = close(Iinv, covs["expected"], 1e-9, "expected", name)
            worst["sandwich_expected"] = close(
                mine["sandwich_expected"],
                covs["sandwich_expected"],
                1e-9,
                "sandwich_expected",
                name,
            )
        extra = sorted(set(covs) - set(mine))
        print(
            f"OK {name:34s} k={k} n={fx['n_obs']:5d} Newton step {step:.1e}; "
            + ", ".join(f"{kk} {v:.1e}" for kk, v in worst.items())
            + (f"; not recomputed: {extra}" if extra else "")
        )


if __name__ == "__main__":
    main()
