"""jaxmle.estimate (M-estimation) against R's sandwich package on a logit glm and direct matrix
algebra in R (tests/reference/estimate/), against jaxmle.fit's sandwich for psi = the score, and its
behaviour under vmap, with a non-symmetric A, and on bad input."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import jaxmle as jm

REFERENCE = Path(__file__).parent / "reference"
# estimates ~1e-6 relative, covariances to 1e-5 of their largest entry (the tolerances);
# jaxmle against itself (estimate vs fit: the same root, different code paths) much tighter
PARAM_RTOL, COV_TOL, SELF_TOL = 1e-6, 1e-5, 1e-8


def logpdf(theta, obs):
    eta = obs["x"] @ theta["b"]
    return obs["y"] * eta - jm.log1pexp(eta)


score = jax.grad(logpdf)  # defined once: a new jax.grad(...) per call would recompile


@functools.cache
def birthwt():
    fx = json.loads((REFERENCE / "estimate" / "r_logit_birthwt.json").read_text())
    df = pd.read_csv(REFERENCE / "data" / "birthwt.csv")
    x = np.column_stack([np.ones(len(df)), df[["age", "lwt", "smoke", "ht", "ui"]]])
    return fx, {"x": x, "y": df["low"].to_numpy(float)}, df["age"].to_numpy()


@functools.cache
def estimated(clustered=False):
    _, data, age = birthwt()
    return jm.estimate(score, {"b": np.zeros(6)}, data, groups=age if clustered else None)


def rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


def test_score_equations_reproduce_the_ml_sandwich():
    """jm.estimate(jax.grad(logpdf), ...) = jm.fit(logpdf, ..., cov="sandwich"), and = R."""
    fx, data, _ = birthwt()
    res = estimated()
    ml = jm.fit(logpdf, {"b": np.zeros(6)}, data, cov="sandwich")
    assert int(res.status) == jm.Status.SUCCESSFUL, res.message
    np.testing.assert_allclose(res.coef, ml.coef, rtol=SELF_TOL)
    assert rel(res.cov, ml.cov) < SELF_TOL
    np.testing.assert_allclose(res.information, ml.information, rtol=SELF_TOL)
    np.testing.assert_allclose(res.coef, fx["params"], rtol=PARAM_RTOL)
    assert rel(res.cov, fx["sandwich"]) < COV_TOL
    assert rel(res.covariance("fay"), fx["fay"]) < COV_TOL
    assert res.cov_type == "sandwich" and "M-estimation" in res.summary()


@pytest.mark.slow
def test_clusters():
    """B over clusters (geex's units) = vcovCL(type="HC0", cadjust=FALSE); "cluster" adds G/(G-1)
    = cadjust=TRUE = jm.fit(cov="cluster"); Fay with clusters as units."""
    fx, data, age = birthwt()
    res = estimated(clustered=True)
    assert rel(res.cov, fx["cluster_hc0"]) < COV_TOL
    assert rel(res.covariance("cluster"), fx["cluster_adjusted"]) < COV_TOL
    assert rel(res.covariance("fay"), fx["fay_cluster"]) < COV_TOL
    ml = jm.fit(logpdf, {"b": np.zeros(6)}, data, cov="cluster", groups=age)
    assert rel(res.covariance("cluster"), ml.cov) < SELF_TOL


def ratio_psi(theta, obs):
    t1, t2, t3 = theta["t1"], theta["t2"], theta["t3"]
    return {"t1": obs["mpg"] - t1, "t2": obs["hp"] - t2, "t3": t1 - t3 * t2}


def test_non_symmetric_jacobian():
    """geex's ratio example: A = -sum dpsi/dtheta' is not symmetric; cov = A^-1 B A^-T."""
    fx = json.loads((REFERENCE / "estimate" / "r_ratio_mtcars.json").read_text())
    df = pd.read_csv(REFERENCE / "data" / "mtcars.csv")
    data = {"mpg": df["mpg"].to_numpy(float), "hp": df["hp"].to_numpy(float)}
    res = jm.estimate(ratio_psi, {"t1": 1.0, "t2": 1.0, "t3": 1.0}, data)
    assert int(res.status) == jm.Status.SUCCESSFUL, res.message
    np.testing.assert_allclose(res.coef, fx["params"], rtol=PARAM_RTOL)
    np.testing.assert_allclose(res.information, fx["A"], rtol=1e-10)
    assert not np.allclose(res.information, res.information.T)
    assert rel(res.cov, fx["sandwich"]) < COV_TOL
    assert rel(res.covariance("fay"), fx["fay"]) < COV_TOL
    # the delta method on (t1, t2) gives the same standard error for t1/t2
    np.testing.assert_allclose(float(res.se["t3"]), fx["delta_check"], rtol=COV_TOL)
    ratio = jm.delta_method(res, lambda p: p["t1"] / p["t2"])
    np.testing.assert_allclose(float(ratio.se), fx["delta_check"], rtol=COV_TOL)
    assert float(jm.wald_test(res, "t3 = 0").statistic) > 0


@pytest.mark.slow
def test_vmap_equals_loop():
    rng = np.random.default_rng(3)
    x = np.column_stack([np.ones(200), rng.normal(size=200)])
    ys = (rng.random((4, 200)) < 0.4).astype(float)

    def one(y):
        return jm.estimate(score, {"b": jnp.zeros(2)}, {"x": x, "y": y})

    with jax.enable_x64(True):
        batch = jax.jit(jax.vmap(one))(jnp.asarray(ys))
    assert batch.batch_shape == (4,)
    single = jm.estimate(score, {"b": np.zeros(2)}, {"x": x, "y": ys[2]})
    np.testing.assert_allclose(batch[2].coef, single.coef, rtol=1e-10)
    np.testing.assert_allclose(batch[2].cov, single.cov, rtol=1e-8)


def test_bad_input_and_flags():
    _, data, _ = birthwt()
    with pytest.raises(ValueError, match="pytree shaped like theta"):
        jm.estimate(lambda t, o: {"b": o["x"] @ t["b"]}, {"b": np.zeros(6)}, data)
    with pytest.raises(ValueError, match="unknown cov"):
        jm.estimate(score, {"b": np.zeros(6)}, data, cov="opg")
    with pytest.raises(ValueError, match="needs cluster ids"):
        jm.estimate(score, {"b": np.zeros(6)}, data, cov="cluster")
    with pytest.raises(ValueError, match="fay_b"):
        jm.estimate(score, {"b": np.zeros(6)}, data, fay_b=1.5)

    def redundant(theta, obs):  # two parameters, one equation repeated: A is singular
        r = obs["y"] - theta["a"] - theta["c"]
        return {"a": r, "c": r}

    res = jm.estimate(redundant, {"a": 0.0, "c": 0.0}, data)
    assert int(res.status) == jm.Status.SINGULAR_JACOBIAN
    assert np.isnan(res.cov).all() and "Jacobian" in res.summary()
    with pytest.raises(RuntimeError, match=r"jaxmle\.estimate: .*Jacobian"):
        jm.estimate(redundant, {"a": 0.0, "c": 0.0}, data, throw=True)
