"""Fewer passes over the data: the subsample start finds the same maximum, and falls back to the
user's start values when its estimate is no good for the full data."""

import jax.numpy as jnp
import numpy as np
import pytest
from models import logit, simulate_logit

import jaxmle as jm
from jaxmle._fit import subsample_stride

# Both fits stop when the scaled gradient U'(-H)^-1 U < tol = 1e-12, i.e. within ~1e-6 standard
# errors of the maximum: two such points differ by at most ~2e-6 standard errors.
SE_DISTANCE = 1e-5
# lnL at two points within 1e-6 SE of the maximum differs by ~1e-12 (quadratic), plus rounding.
LOGLIK_RTOL = 1e-12
# The covariance is a smooth function of theta: it moves by ~1e-6 SE x (d cov / d theta).
COV_RTOL = 1e-7


@pytest.fixture(scope="module")
def logit_data():
    return simulate_logit(np.random.default_rng(7), 40_000, 4)


def _fits(logpdf, init, data, **kw):
    plain = jm.fit(logpdf, init, data, subsample_start=0, **kw)
    sub = jm.fit(logpdf, init, data, subsample_start=0.05, **kw)
    return plain, sub


def test_subsample_start_reaches_the_same_maximum_in_fewer_iterations(logit_data):
    init = {"b0": 0.0, "b": jnp.zeros(4)}
    plain, sub = _fits(logit, init, logit_data, cov="sandwich")
    assert bool(plain.converged) and bool(sub.converged), (plain.message, sub.message)
    se = np.sqrt(np.diagonal(plain.cov))
    assert np.max(np.abs(sub.coef - plain.coef) / se) < SE_DISTANCE
    np.testing.assert_allclose(sub.loglik, plain.loglik, rtol=LOGLIK_RTOL)
    np.testing.assert_allclose(sub.cov, plain.cov, rtol=COV_RTOL)
    np.testing.assert_allclose(sub.information, plain.information, rtol=COV_RTOL)
    assert int(sub.n_iter) < int(plain.n_iter)


def _barrier(theta, obs):
    """y ~ N(mu, 1), and rows flagged f = 1 add ln(mu - 5): lnL is finite only for mu > 5."""
    return -0.5 * (obs["y"] - theta["mu"]) ** 2 + obs["f"] * jnp.log(theta["mu"] - 5.0)


def test_start_falls_back_to_init_where_the_full_lnL_is_not_finite():
    rng = np.random.default_rng(1)
    n = 2_000
    f = np.zeros(n)
    f[7] = 1.0  # not in the subsample (rows 0, 20, 40, ...): there the maximum is mu = mean(y) ~ 0
    data = {"y": rng.normal(size=n), "f": f}
    plain, sub = _fits(_barrier, {"mu": 6.0}, data)
    assert bool(plain.converged), plain.message
    assert int(sub.status) == int(plain.status)
    np.testing.assert_allclose(sub.coef, plain.coef, rtol=1e-12)
    assert int(sub.n_iter) == int(plain.n_iter)


def test_a_separated_subsample_does_not_choose_the_start():
    rng = np.random.default_rng(2)
    data = simulate_logit(rng, 4_000, 2)
    sub_rows = np.arange(0, 4_000, 20)
    data["y"][sub_rows] = (data["x"][sub_rows, 0] > 0).astype(float)  # separated in the subsample
    init = {"b0": 0.0, "b": jnp.zeros(2)}
    plain, sub = _fits(logit, init, data)
    assert bool(plain.converged), plain.message
    np.testing.assert_allclose(sub.coef, plain.coef, rtol=1e-12)
    assert int(sub.n_iter) == int(plain.n_iter)


def test_automatic_subsample_only_for_many_rows():
    assert subsample_stride(1_000_000, 21, None) == 50
    assert subsample_stride(100_000, 21, None) == 1
    assert subsample_stride(10_000_000, 200, None) == 50
    assert subsample_stride(1_000_000, 21, 0) == 1
    assert subsample_stride(1_000, 3, 0.1) == 10
    with pytest.raises(ValueError, match="subsample_start"):
        jm.fit(logit, {"b0": 0.0, "b": jnp.zeros(4)}, simulate_logit(np.random.default_rng(0), 50, 4),
               subsample_start=0.9)  # fmt: skip
