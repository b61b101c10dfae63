"""The Hessian-free methods on the generic path (no index=): "lbfgs" and "newton-cg" reach the dense
Newton maximum, and their se_for block equals the dense covariance block, whether it comes from the
dense information (few parameters) or from conjugate-gradient solves with information-vector
products (many: k > DENSE_LIMIT); vmap works; the pieces (CG, products) against closed forms.

The model is a logit with one dummy per firm written generically (no index=), so the structured fit
of the same model (`index=`, exact elimination) is an independent reference for the CG path.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmle as jm
from jaxmle._hessian_free import pcg
from jaxmle._many import DENSE_LIMIT

# Hessian-free methods stop on their own estimate of the scaled gradient (< 1e-12, ~1e-6 standard
# errors from the maximum at most); on these data they agree with Newton to ~1e-8.
EST_RTOL = 1e-6
# Block covariances: exact formulas at estimates ~1e-9 apart, CG solved to 1e-12 relative.
COV_RTOL = 1e-6


def logit_fe(theta, obs):
    eta = obs["x"] @ theta["b"] + theta["a"][obs["g"]]
    return obs["y"] * eta - jm.log1pexp(eta)


def _panel(n, g, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    firm = np.arange(n) % g  # every firm has rows
    a = rng.normal(size=g)
    y = (rng.random(n) < 1 / (1 + np.exp(-(x @ np.array([0.5, -0.3, 0.2]) + a[firm])))) * 1.0
    y[:g] = 1 - y[g : 2 * g]  # no firm with a constant outcome
    return {"x": x, "y": y, "g": firm.astype(np.int32)}


def _close(actual, expected, rtol, what):
    actual, expected = np.asarray(actual, float), np.asarray(expected, float)
    assert np.max(np.abs(actual - expected)) <= rtol * np.max(np.abs(expected)), what


@pytest.fixture(scope="module")
def small_reference():
    """k = 23: statsmodels Logit with one dummy per firm (the effects a first, as init ravels),
    and the covariance block of b from the closed forms at its estimate: A = X'diag(p(1-p))X,
    sandwich A^-1 (sum u_i u_i') A^-1, cluster A^-1 (sum s_g s_g') A^-1 G/(G-1)."""
    import statsmodels.api as sm

    data = _panel(400, 20, 3)
    groups = np.arange(400) % 25
    design = np.hstack([np.eye(20)[data["g"]], data["x"]])
    est = sm.Logit(data["y"], design).fit(method="newton", tol=1e-14, maxiter=100, disp=0).params
    p = 1 / (1 + np.exp(-design @ est))
    inv = np.linalg.inv(design.T @ (design * (p * (1 - p))[:, None]))
    u = design * (data["y"] - p)[:, None]
    sg = np.stack([u[groups == c].sum(0) for c in range(25)])
    covs = {
        "hessian": inv,
        "sandwich": inv @ u.T @ u @ inv,
        "cluster": 25 / 24 * inv @ sg.T @ sg @ inv,
    }
    return data, groups, est, {kind: c[20:, 20:] for kind, c in covs.items()}


@pytest.mark.parametrize("method", ["lbfgs", "newton-cg"])
def test_cg_covariances_equal_statsmodels_and_the_closed_forms(
    small_reference, method, monkeypatch
):
    """The dense limit at 10 sends this k = 23 fit down the CG covariance path (k solves with
    information-vector products), small enough for the default run."""
    monkeypatch.setattr(jm._fit, "DENSE_LIMIT", 10)
    data, groups, est, covs = small_reference
    init = {"a": np.zeros(20), "b": np.zeros(3)}
    res = jm.fit(logit_fe, init, data, groups=groups, n_groups=25, method=method, se_for=["b"])
    assert bool(res.converged), res.message
    assert res.method == method and res.cov.shape == (3, 3)
    _close(res.params["a"], est[:20], EST_RTOL, "a")
    _close(res.params["b"], est[20:], EST_RTOL, "b")
    for kind, expected in covs.items():
        _close(res.covariance(kind), expected, COV_RTOL, kind)
    assert np.isnan(np.asarray(res.se["a"])).all()
    assert "3 of 23 parameters" in res.summary()


@pytest.fixture(scope="module")
def many():
    """k = 523 > DENSE_LIMIT: the block's covariance comes from CG solves with A v products; the
    structured fit (index=, exact elimination) of the same model is the reference."""
    g = DENSE_LIMIT + 20
    data = _panel(4 * g, g, 2)
    init = {"a": np.zeros(g), "b": np.zeros(3)}
    groups = np.arange(4 * g) % 50
    exact = jm.fit(logit_fe, init, data, index={"a": "g"}, groups=groups)
    return data, init, groups, exact


def _generic(method, data, init, groups):
    return jm.fit(logit_fe, init, data, groups=groups, n_groups=50, method=method, se_for=["b"])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lbfgs", "newton-cg"])
def test_many_parameters_reach_the_structured_maximum_with_cg_covariances(many, method):
    data, init, groups, exact = many
    res = _generic(method, data, init, groups)
    assert isinstance(res, jm.SubsetResult) and bool(res.converged), res.message
    assert res.method == method and res.cov.shape == (3, 3)
    _close(res.params["b"], exact.params["b"], EST_RTOL, "b")
    _close(res.params["a"], exact.params["a"], EST_RTOL, "a")
    for kind in ("hessian", "sandwich", "cluster"):
        _close(res.covariance(kind), exact.covariance(kind), COV_RTOL, kind)
    assert np.isnan(np.asarray(res.se["a"])).all()


@pytest.mark.slow
def test_lbfgs_under_vmap_equals_a_loop(many):
    data, init, groups, _ = many
    ys = np.stack([data["y"], data["y"][::-1]])

    def one(y):
        return _generic("lbfgs", {**data, "y": y}, init, groups)

    with jax.enable_x64(True):
        batch = jax.jit(jax.vmap(one))(jnp.asarray(ys))
    assert batch.status.tolist() == [0, 0]
    for i in range(2):
        single = one(ys[i])
        # the lanes' sums are reassociated under vmap: the L-BFGS paths differ by rounding and
        # stop at different points within the convergence tolerance (~3e-8 apart here)
        _close(batch.params["b"][i], single.params["b"], EST_RTOL, "params")
        _close(batch.cov[i], single.cov, COV_RTOL, "cov")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lbfgs", "newton-cg"])
def test_few_parameters_take_the_dense_covariance_and_match_newton(method):
    data = _panel(1200, 30, 1)
    init = {"a": np.zeros(30), "b": np.zeros(3)}
    groups = np.arange(1200) % 40
    dense = jm.fit(logit_fe, init, data, groups=groups, se_for=["b"])
    res = jm.fit(logit_fe, init, data, groups=groups, method=method, se_for=["b"])
    assert bool(res.converged), res.message
    _close(res.params["b"], dense.params["b"], EST_RTOL, "b")
    for kind in ("hessian", "sandwich", "cluster"):
        _close(res.covariance(kind), dense.covariance(kind), COV_RTOL, kind)


def test_pcg_solves_columns_and_flags_negative_curvature():
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        m = rng.normal(size=(6, 6))
        a = jnp.asarray(m @ m.T + 6 * np.eye(6))
        b = jnp.asarray(rng.normal(size=(6, 2)))
        out = pcg(lambda v: a @ v, b, 1.0 / jnp.diagonal(a), rtol=1e-13, max_steps=50)
        np.testing.assert_allclose(np.asarray(out.x), np.linalg.solve(np.asarray(a), b), rtol=1e-10)
        assert out.converged.tolist() == [True, True]
        indefinite = jnp.diag(jnp.asarray([1.0, -1.0, 2.0]))
        out = pcg(lambda v: indefinite @ v, jnp.ones((3, 1)), jnp.ones(3), rtol=1e-12, max_steps=9)
        assert out.negative.tolist() == [True] and out.converged.tolist() == [False]
