"""jaxmle against independent reference numbers from R and statsmodels (tests/reference/).

For every fixture the same model is fitted with `jaxmle.fit` on the committed CSV, and estimates,
log-likelihood and every supported covariance kind are compared with the stored values. The
log-densities are those of `tests/reference/verify_fixtures.py`, written for ONE observation.

Parameters are a single flat vector in the fixture's `param_names` order, so `res.cov` is in
fixture order too. The log-densities are module-level functions and every fit is cached, so each
(model, method) is compiled and fitted once per session.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from jax.scipy.special import gammaln
from jax.scipy.stats import norm

import jaxmle as jm
from jaxmle import families as jf

REFERENCE = Path(__file__).parent / "reference"

# ---------------------------------------------------------------- tolerances
# Estimates: the standard for agreement with the reference packages is ~1e-6 relative.
PARAM_RTOL = 1e-6
# ...and a near-zero estimate must still agree to 1e-7 of its standard error (abs floor per entry).
PARAM_ATOL_SE = 1e-7
# Log-likelihood: a sum of N terms in float64; both sides evaluate it at (nearly) the same MLE.
LOGLIK_RTOL = 1e-8
# Standard errors: the standard is ~1e-5 relative (the references are exact to ~1e-13).
SE_RTOL = 1e-5
# Whole covariance matrix, entries relative to the matrix's largest |entry| (some entries are 0).
COV_SCALED_TOL = 1e-5
# ...and, stricter, each entry C_ij to this fraction of se_i * se_j (a correlation-scale check).
COV_CORR_TOL = 1e-5
# BHHH converges linearly: from zero starts it needs ~1960 iterations on r_negbin2_quine (local
# rate 0.995: the OPG is a poor stand-in for -H along log_alpha) and ~1120 on r_weibull_lung.
BHHH_MAX_ITER = 5000
# BHHH/BFGS stop tighter than the default tol (1e-12): at the default, BHHH ends up to 9.8e-7
# relative (6e-7 se) from the maximum on sm_probit_spector, on the edge of PARAM_RTOL; 1e-13 gives
# <= 3e-7 everywhere. (1e-14 is below mtcars BHHH's rounding floor: it never gets there.)
OTHER_METHODS_TOL = 1e-13

# Covariance kinds in the fixtures -> jaxmle kind; maxLik's "bhhh" vcov is the OPG. The probit
# fixture's "expected" needs the model's expected information (test_probit_expected_information
# below); its "sandwich_expected" (expected information as the bread) has no jaxmle kind.
KIND_MAP = {"hessian": "hessian", "opg": "opg", "sandwich": "sandwich", "cluster": "cluster"}
KIND_MAP_EXTRA = {"bhhh": "opg"}
UNSUPPORTED = {"expected", "sandwich_expected"}


# ---------------------------------------------------------------- log-densities (one observation)
# obs = {"X": (p,), "y": (), ...}; theta = flat (k,) vector in fixture order.


def logit(theta, obs):
    eta = obs["X"] @ theta
    return obs["y"] * eta - jnp.logaddexp(0.0, eta)


def probit(theta, obs):
    return norm.logcdf((2.0 * obs["y"] - 1.0) * (obs["X"] @ theta))


def poisson(theta, obs):
    eta = obs["X"] @ theta
    y = obs["y"]
    return y * eta - jnp.exp(eta) - gammaln(y + 1.0)


def _negbin2(eta, alpha, y):
    th = 1.0 / alpha
    lmt = jnp.log(th + jnp.exp(eta))
    return (
        gammaln(y + th)
        - gammaln(th)
        - gammaln(y + 1.0)
        + th * (jnp.log(th) - lmt)
        + y * (eta - lmt)
    )


def negbin2_log_alpha(theta, obs):
    p = obs["X"].shape[-1]
    return _negbin2(obs["X"] @ theta[:p], jnp.exp(theta[p]), obs["y"])


def negbin2_alpha(theta, obs):
    p = obs["X"].shape[-1]
    return _negbin2(obs["X"] @ theta[:p], theta[p], obs["y"])


def weibull(theta, obs):
    """survreg Weibull AFT on the time scale: log T = x'b + sigma W, last parameter log(sigma)."""
    p = obs["X"].shape[-1]
    s = jnp.exp(theta[p])
    t = obs["y"]
    w = (jnp.log(t) - obs["X"] @ theta[:p]) / s
    return obs["d"] * (w - jnp.log(s) - jnp.log(t)) - jnp.exp(w)


def normal(theta, obs):
    p = obs["X"].shape[-1]
    return norm.logpdf(obs["y"], obs["X"] @ theta[:p], jnp.exp(theta[p]))


RANDHIE = ["lncoins", "idp", "lpi", "fmde", "physlm", "disea", "hlthg", "hlthf", "hlthp"]

# fixture -> (log-density, covariates after the intercept, event column, start values of the
# parameters after the regression coefficients, which start at 0)
SPECS = {
    "r_logit_ohio": (logit, ["age", "smoke"], None, []),
    "r_probit_birthwt": (probit, ["age", "lwt", "smoke", "ptl", "ht", "ui"], None, []),
    "r_poisson_warpbreaks": (poisson, ["woolB", "tensionM", "tensionH"], None, []),
    "r_negbin2_quine": (
        negbin2_log_alpha,
        ["EthN", "SexM", "AgeF1", "AgeF2", "AgeF3", "LrnSL"],
        None,
        [0.0],
    ),
    "r_weibull_lung": (weibull, ["age", "sex", "ph.ecog"], "event", [0.0]),
    "r_maxlik_normal_mtcars": (normal, ["wt", "hp"], None, [0.0]),
    "r_normal_cluster_petersen": (normal, ["x"], None, [0.0]),
    "sm_logit_spector": (logit, ["GPA", "TUCE", "PSI"], None, []),
    "sm_probit_spector": (probit, ["GPA", "TUCE", "PSI"], None, []),
    "sm_poisson_randhie": (poisson, RANDHIE, None, []),
    "sm_negbin2_randhie": (negbin2_alpha, RANDHIE, None, [1.0]),
}
FIXTURES = sorted(SPECS)


# ---------------------------------------------------------------- loading and fitting (cached)


@functools.cache
def fixture(name):
    return json.loads((REFERENCE / f"{name}.json").read_text())


@functools.cache
def load(name):
    """(fixture dict, data pytree, groups or None, init)."""
    fx = fixture(name)
    _, covariates, event, extra = SPECS[name]
    df = pd.read_csv(REFERENCE / fx["dataset"])
    assert len(df) == fx["n_obs"]
    X = np.column_stack([np.ones(len(df))] + [df[c].to_numpy(float) for c in covariates])
    data = {"X": X, "y": df[fx["response"]].to_numpy(float)}
    if event is not None:
        data["d"] = df[event].to_numpy(float)
    groups = None if fx["cluster_var"] is None else df[fx["cluster_var"]].to_numpy()
    init = jnp.asarray([0.0] * X.shape[1] + extra)
    assert init.shape == (len(fx["param_names"]),)
    return fx, data, groups, init


def direct_kind(name, method):
    """The kind each fit asks for with `cov=` (checked against the fixture as `res.cov`/`res.se`).

    newton: cluster where the fixture has it, else sandwich; bhhh: opg; bfgs: hessian (through the
    exact information at the BFGS estimate, not the solver's matrix). The other kinds of the newton
    fit come from `res.covariance(kind)`.
    """
    if method == "bhhh":
        return "opg"
    if method == "bfgs":
        return "hessian"
    return "cluster" if "cluster" in fixture(name)["cov"] else "sandwich"


@functools.cache
def fitted(name, method="newton"):
    _, data, groups, init = load(name)
    max_iter = BHHH_MAX_ITER if method == "bhhh" else 100
    tol = None if method == "newton" else OTHER_METHODS_TOL
    return jm.fit(
        SPECS[name][0],
        init,
        data,
        method=method,
        cov=direct_kind(name, method),
        groups=groups,
        max_iter=max_iter,
        tol=tol,
    )


def covariance_kinds(name):
    """(fixture key, jaxmle kind) for every covariance jaxmle can reproduce."""
    out = []
    for key in fixture(name)["cov"]:
        if key in UNSUPPORTED:
            continue
        out.append((key, KIND_MAP.get(key) or KIND_MAP_EXTRA[key]))
    return out


# ---------------------------------------------------------------- comparisons


def assert_params(est, ref, fx, label):
    """|est - ref| <= PARAM_RTOL |ref| + PARAM_ATOL_SE se_ref, entrywise (se from the fixture)."""
    est, ref = np.asarray(est), np.asarray(ref)
    se_ref = np.sqrt(np.diagonal(np.asarray(fx["cov"]["hessian"])))
    err = np.abs(est - ref)
    allowed = PARAM_RTOL * np.abs(ref) + PARAM_ATOL_SE * se_ref
    bad = err > allowed
    assert not bad.any(), f"{label} estimates differ: " + "; ".join(
        f"{fx['param_names'][i]}: ours {est[i]!r}, reference {ref[i]!r}, "
        f"rel err {err[i] / abs(ref[i]):.2e}, err/se {err[i] / se_ref[i]:.2e}"
        for i in np.flatnonzero(bad)
    )


def assert_cov(cov, ref, label):
    cov, ref = np.asarray(cov), np.asarray(ref)
    assert cov.shape == ref.shape
    se, se_ref = np.sqrt(np.diagonal(cov)), np.sqrt(np.diagonal(ref))
    np.testing.assert_allclose(se, se_ref, rtol=SE_RTOL, err_msg=f"{label}: standard errors")
    scale = np.max(np.abs(ref))
    np.testing.assert_allclose(
        cov, ref, rtol=0, atol=COV_SCALED_TOL * scale, err_msg=f"{label}: matrix"
    )
    corr_diff = (cov - ref) / np.outer(se_ref, se_ref)
    np.testing.assert_allclose(
        corr_diff, 0.0, rtol=0, atol=COV_CORR_TOL, err_msg=f"{label}: matrix / (se_i se_j)"
    )


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("name", FIXTURES)
def test_estimates_loglik_and_direct_cov(name):
    """Newton fit: estimates, lnL, and the kind asked for with `cov=` as `res.cov` / `res.se`."""
    fx = fixture(name)
    res = fitted(name)
    kind = direct_kind(name, "newton")
    assert bool(res.converged), res.message
    assert len(res.names) == len(fx["param_names"])
    assert_params(res.params, fx["params"], fx, name)
    np.testing.assert_allclose(float(res.loglik), fx["loglik"], rtol=LOGLIK_RTOL, err_msg=name)
    assert res.cov_type == kind
    assert_cov(res.cov, fx["cov"][kind], f"{name} cov={kind}")
    se_ref = np.sqrt(np.diagonal(np.asarray(fx["cov"][kind])))
    np.testing.assert_allclose(np.asarray(res.se), se_ref, rtol=SE_RTOL, err_msg=f"{name} se")


@pytest.mark.parametrize(
    ("name", "key", "kind"),
    [
        pytest.param(name, key, kind, id=f"{name}-{key}")
        for name in FIXTURES
        for key, kind in covariance_kinds(name)
    ],
)
def test_covariance_from_result(name, key, kind):
    """Every supported kind via `res.covariance(kind)` from the one Newton fit (no refit)."""
    fx = fixture(name)
    res = fitted(name)
    cov = res.covariance(kind)
    assert_cov(cov, fx["cov"][key], f"{name} covariance({kind!r}) vs {key}")
    if key == kind:  # with_cov switches the result's kind: its cov and se against the reference
        other = res.with_cov(kind)
        assert other.cov_type == kind
        assert_cov(other.cov, fx["cov"][key], f"{name} with_cov({kind!r}) vs {key}")
        se_ref = np.sqrt(np.diagonal(np.asarray(fx["cov"][key])))
        np.testing.assert_allclose(np.asarray(other.se), se_ref, rtol=SE_RTOL)


# The BHHH and BFGS refits compile one program each per model (~3-4 s of XLA compile apiece on
# CPU), so the full cross product is marked slow; two cheap models stay in the fast set.
FAST_METHOD_FIXTURES = {"sm_logit_spector", "r_normal_cluster_petersen"}


@pytest.mark.parametrize("method", ["bhhh", "bfgs"])
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=() if name in FAST_METHOD_FIXTURES else pytest.mark.slow)
        for name in FIXTURES
    ],
)
def test_other_methods_agree(name, method):
    """BHHH and BFGS reach the Newton / reference estimates; their `cov=` kind matches too."""
    fx = fixture(name)
    kind = direct_kind(name, method)
    res = fitted(name, method)
    assert bool(res.converged), f"{method}: {res.message} after {int(res.n_iter)} iterations"
    assert_params(res.params, fx["params"], fx, f"{name} {method} vs reference")
    assert_params(res.params, fitted(name).params, fx, f"{name} {method} vs newton")
    np.testing.assert_allclose(float(res.loglik), fx["loglik"], rtol=LOGLIK_RTOL, err_msg=name)
    assert res.cov_type == kind
    assert_cov(res.cov, fx["cov"][kind], f"{name} {method} cov={kind}")


def probit_model(theta, obs):
    return jf.Bernoulli(probs=jax.scipy.special.ndtr(obs["X"] @ theta))


def test_probit_expected_information():
    """Fisher scoring with the expected information (a families model) against R's probit glm:
    the estimates and the expected-information covariance (summary.glm's)."""
    fx, data, _, init = load("r_probit_birthwt")
    model = jf.Model(probit_model)
    res = jm.fit(model, init, data, method="fisher", cov="expected", expected=model.expected)
    assert bool(res.converged), res.message
    assert_params(res.coef, fx["params"], fx, "probit fisher scoring vs R")
    assert_cov(res.cov, fx["cov"]["expected"], "probit expected information vs R")
