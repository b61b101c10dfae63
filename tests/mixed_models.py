"""Hand-written mixed models for the fit_mixed tests and benchmarks, on the data of the R fixtures
(tests/reference/mixed/make_mixed_fixtures.R). Random effects are spherical, b = sigma u or b = L u
with u ~ N(0, I), so a variance of zero is an ordinary point (`lower=` keeps sigma, diag L >= 0)."""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.scipy.special import gammaln

import jaxmle as jm

DATA = Path(__file__).parent / "reference" / "data"
HALF_LOG_2PI = 0.5 * np.log(2.0 * np.pi)


def std_normal(theta, u):
    """ln N(u; 0, I) for one group's spherical effects."""
    u = jnp.atleast_1d(u)
    return -0.5 * jnp.sum(u**2) - u.shape[0] * HALF_LOG_2PI


def binomial_logit(theta, u, obs):
    """y | u ~ Binomial(n, logit^-1(x'beta + sigma u)), with ln C(n, y) (as R's logLik)."""
    eta = obs["X"] @ theta["beta"] + theta["sigma"] * u
    y, n = obs["y"], obs["n"]
    const = gammaln(n + 1) - gammaln(y + 1) - gammaln(n - y + 1)
    return y * eta - n * jm.log1pexp(eta) + const


def poisson_log(theta, u, obs):
    """y | u ~ Poisson(exp(x'beta + sigma u))."""
    eta = obs["X"] @ theta["beta"] + theta["sigma"] * u
    return obs["y"] * eta - jnp.exp(eta) - gammaln(obs["y"] + 1)


def poisson_crossed(theta, b, obs):
    """Three factors (brood, index, location), one SD each in theta["sd"] (that order)."""
    eta = obs["X"] @ theta["beta"]
    eta = eta + theta["sd"] @ jnp.stack([b["brood"], b["index"], b["location"]])
    return obs["y"] * eta - jnp.exp(eta) - gammaln(obs["y"] + 1)


def normal_slope(theta, u, obs):
    """y | u ~ N(b0' + b1' x, sigma^2), (b0', b1') = beta + L u, L lower-triangular (l11, l21, l22)."""
    l11, l21, l22 = theta["L"]
    b0 = theta["beta"][0] + l11 * u[0]
    b1 = theta["beta"][1] + l21 * u[0] + l22 * u[1]
    z = (obs["y"] - b0 - b1 * obs["x"]) / theta["sigma"]
    return -0.5 * z**2 - jnp.log(theta["sigma"]) - HALF_LOG_2PI


def normal_crossed(theta, b, obs):
    """Penicillin: y ~ N(beta + sd_plate u_plate + sd_sample u_sample, sigma^2)."""
    mu = theta["beta"][0] + theta["sd"][0] * b["plate"] + theta["sd"][1] * b["sample"]
    z = (obs["y"] - mu) / theta["sigma"]
    return -0.5 * z**2 - jnp.log(theta["sigma"]) - HALF_LOG_2PI


def dummies(values, levels):
    return np.column_stack([(values == v).astype(float) for v in levels])


def cbpp():
    df = pd.read_csv(DATA / "cbpp.csv")
    X = np.column_stack([np.ones(len(df)), dummies(df.period.to_numpy(), (2, 3, 4))])
    data = {"X": X, "y": df.incidence.to_numpy(float), "n": df["size"].to_numpy(float)}
    return data, df.herd.to_numpy(), {"beta": np.zeros(4), "sigma": 1.0}


def grouseticks():
    df = pd.read_csv(DATA / "grouseticks.csv")
    X = np.column_stack(
        [np.ones(len(df)), dummies(df.year.to_numpy(), (96, 97)), df.cheight.to_numpy()]
    )
    data = {"X": X, "y": df.ticks.to_numpy(float)}
    groups = {f: df[f].to_numpy() for f in ("brood", "index", "location")}
    return data, groups


def sleepstudy():
    df = pd.read_csv(DATA / "sleepstudy.csv")
    data = {"y": df.Reaction.to_numpy(float), "x": df.Days.to_numpy(float)}
    init = {"beta": np.array([250.0, 10.0]), "sigma": 30.0, "L": np.array([20.0, 0.0, 5.0])}
    return data, df.Subject.to_numpy(), init


SLOPE_LOWER = {"sigma": 0.0, "L": np.array([0.0, -np.inf, 0.0])}


def penicillin():
    df = pd.read_csv(DATA / "penicillin.csv")
    data = {"y": df.diameter.to_numpy(float)}
    groups = {"plate": df.plate.to_numpy(), "sample": df["sample"].to_numpy()}
    return data, groups, {"beta": np.array([20.0]), "sigma": 1.0, "sd": np.ones(2)}


def infert():
    df = pd.read_csv(DATA / "infert.csv")
    X = np.column_stack([np.ones(len(df)), df[["spontaneous", "induced"]].to_numpy(float)])
    data = {"X": X, "y": df.case.to_numpy(float), "n": np.ones(len(df))}
    return data, df.stratum.to_numpy(), {"beta": np.zeros(3), "sigma": 1.0}


def corr_boundary():
    df = pd.read_csv(DATA / "corr_boundary.csv")
    data = {"y": df.y.to_numpy(float), "x": df.x.to_numpy(float)}
    init = {"beta": np.array([1.0, 0.3]), "sigma": 1.0, "L": np.array([0.5, 0.0, 0.3])}
    return data, df.g.to_numpy(), init
