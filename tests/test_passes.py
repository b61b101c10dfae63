"""Fewer passes over the data: the subsample start finds the same maximum (the reference fixtures'
answers at their tolerances), falls back to the user's start values when its estimate is no good
for the full data, says so in the result, and can be turned off."""

import jax.numpy as jnp
import numpy as np
import pytest
from models import logit, simulate_logit
from test_reference import (
    FIXTURES,
    LOGLIK_RTOL,
    SPECS,
    assert_cov,
    assert_params,
    direct_kind,
    load,
)

import jaxmle as jm
from jaxmle._fit import refit, subsample_stride

# Both fits stop when the scaled gradient U'(-H)^-1 U < tol = 1e-12, i.e. within ~1e-6 standard
# errors of the maximum: two such points differ by at most ~2e-6 standard errors.
SE_DISTANCE = 1e-5
# lnL at two points within 1e-6 SE of the maximum differs by ~1e-12 (quadratic), plus rounding.
SAME_LOGLIK_RTOL = 1e-12
# The covariance is a smooth function of theta: it moves by ~1e-6 SE x (d cov / d theta).
COV_RTOL = 1e-7
# A subsample of every 4th row: on the small reference datasets (N = 32 to 20,190) the automatic
# start (N >= 250,000) never runs, so the reference tests below force it on.
REFERENCE_FRACTION = 0.25


N_LOGIT, P_LOGIT = 40_000, 4
LOGIT_INIT = {"b0": 0.0, "b": jnp.zeros(P_LOGIT)}


def _fits(logpdf, init, data, **kw):
    """The fit without and with a subsample start (every 20th row)."""
    plain = jm.fit(logpdf, init, data, subsample_start=0, **kw)
    sub = jm.fit(logpdf, init, data, subsample_start=0.05, **kw)
    return plain, sub


@pytest.fixture(scope="module")
def logit_fits():
    data = simulate_logit(np.random.default_rng(7), N_LOGIT, P_LOGIT)
    return _fits(logit, LOGIT_INIT, data, cov="sandwich")


def test_subsample_start_reaches_the_same_maximum_in_fewer_iterations(logit_fits):
    plain, sub = logit_fits
    assert bool(plain.converged) and bool(sub.converged), (plain.message, sub.message)
    se = np.sqrt(np.diagonal(plain.cov))
    assert np.max(np.abs(sub.coef - plain.coef) / se) < SE_DISTANCE
    np.testing.assert_allclose(sub.loglik, plain.loglik, rtol=SAME_LOGLIK_RTOL)
    np.testing.assert_allclose(sub.cov, plain.cov, rtol=COV_RTOL)
    np.testing.assert_allclose(sub.information, plain.information, rtol=COV_RTOL)
    assert int(sub.n_iter) < int(plain.n_iter)


def test_the_start_is_visible_and_a_refit_starts_where_it_is_told(logit_fits):
    plain, sub = logit_fits
    assert int(plain.start_rows) == 0 and "Start" not in plain.summary()
    assert int(sub.start_rows) == 40_000 // 20  # every 20th row
    assert "a fit to 2,000 rows (subsample_start=0 turns it off)" in sub.summary()
    again = refit(sub)  # from its own estimate: no subsample fit, at most one Newton step
    assert int(again.start_rows) == 0 and int(again.n_iter) <= 1
    np.testing.assert_allclose(again.coef, sub.coef, rtol=1e-9)


def test_forced_subsample_start_gives_the_reference_answer():
    check_reference("r_normal_cluster_petersen", must_use_start=True)  # N = 5,000, cluster cov


@pytest.mark.slow
@pytest.mark.parametrize("name", FIXTURES)
def test_forced_subsample_start_gives_every_reference_answer(name):
    check_reference(name, must_use_start=False)


def check_reference(name, must_use_start):
    """The reference test's newton fit, with a subsample start forced on: same fixture, same
    tolerances (tests/test_reference.py)."""
    fx, data, groups, init = load(name)
    kind = direct_kind(name, "newton")
    res = jm.fit(
        SPECS[name][0], init, data, cov=kind, groups=groups, subsample_start=REFERENCE_FRACTION
    )
    assert bool(res.converged), res.message
    if must_use_start:  # else a tiny subsample may fail and fall back, which is fine too
        assert int(res.start_rows) == -(-fx["n_obs"] // 4)
    assert_params(res.params, fx["params"], fx, name)
    np.testing.assert_allclose(float(res.loglik), fx["loglik"], rtol=LOGLIK_RTOL, err_msg=name)
    assert_cov(res.cov, fx["cov"][kind], f"{name} cov={kind} (subsample start)")


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
    assert int(sub.start_rows) == 0


def test_a_separated_subsample_does_not_choose_the_start():
    # the shapes and options of `logit_fits`: the same two compiled programs
    data = simulate_logit(np.random.default_rng(2), N_LOGIT, P_LOGIT)
    sub_rows = np.arange(0, N_LOGIT, 20)
    data["y"][sub_rows] = (data["x"][sub_rows, 0] > 0).astype(float)  # separated in the subsample
    plain, sub = _fits(logit, LOGIT_INIT, data, cov="sandwich")
    assert bool(plain.converged), plain.message
    np.testing.assert_allclose(sub.coef, plain.coef, rtol=1e-12)
    assert int(sub.n_iter) == int(plain.n_iter)
    assert int(sub.start_rows) == 0


def test_automatic_subsample_only_for_many_rows():
    assert subsample_stride(1_000_000, 21, None) == 50
    assert subsample_stride(100_000, 21, None) == 1
    assert subsample_stride(10_000_000, 200, None) == 50
    assert subsample_stride(1_000_000, 21, 0) == 1
    assert subsample_stride(1_000, 3, 0.1) == 10


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"subsample_start": 0.9}, r"subsample_start must be None or a fraction in \[0, 0.5\]"),
        ({"subsample_start": True}, "subsample_start must be None or a fraction"),
        ({"subsample_start": 0.1, "stream": True}, "not with stream=True"),
        ({"subsample_start": 0.1, "method": "bfgs"}, "method='bfgs'"),
    ],
)
def test_bad_subsample_options_are_refused_before_any_work(options, match):
    data = simulate_logit(np.random.default_rng(0), 50, P_LOGIT)
    with pytest.raises(ValueError, match=match):
        jm.fit(logit, LOGIT_INIT, data, **options)
