"""jm.fit_multistart on a two-component normal mixture where one start stops at a local maximum
(lnL -172.912 against the global -172.278, as a user's -189.645 against -188.924): the best start
wins, is an ordinary fit that profiles, and agrees with EM (an independent algorithm) from many
starts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import norm

import jaxmle as jm

GLOBAL, LOCAL = -172.2782768, -172.9117259
# lnL of the two maxima to the printed digits; estimates against EM to EM's convergence
LL_ATOL, EM_RTOL = 1e-6, 1e-5
# a start in the basin of the local maximum (found among random starts)
LOCAL_START = {
    "logit_p": 0.9555,
    "mu": np.array([0.0985, 0.864]),
    "log_s": np.array([-0.178, 0.751]),
}


def mixture(theta, obs):
    p = jax.nn.sigmoid(theta["logit_p"])
    l1 = jnp.log(p) + norm.logpdf(obs["y"], theta["mu"][0], jnp.exp(theta["log_s"][0]))
    l2 = jnp.log1p(-p) + norm.logpdf(obs["y"], theta["mu"][1], jnp.exp(theta["log_s"][1]))
    return jnp.logaddexp(l1, l2)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(2)
    z = rng.random(100) < 0.4
    return {"y": np.where(z, rng.normal(0, 1, 100), rng.normal(2.5, 0.8, 100))}


@pytest.fixture(scope="module")
def starts(data):
    rng = np.random.default_rng(102)
    y = data["y"]
    random = [
        {"logit_p": rng.normal(), "mu": rng.uniform(y.min(), y.max(), 2),
         "log_s": rng.normal(0, 0.5, 2)}
        for _ in range(15)
    ]  # fmt: skip
    return [LOCAL_START, *random]


@pytest.fixture(scope="module")
def best(starts, data):
    return jm.fit_multistart(mixture, starts, data)


def em(y, p, mu, s, iters=5000):
    """EM for a two-component normal mixture (numpy): responsibilities, then weighted moments."""
    for _ in range(iters):
        d1 = p * np.exp(-0.5 * ((y - mu[0]) / s[0]) ** 2) / s[0]
        d2 = (1 - p) * np.exp(-0.5 * ((y - mu[1]) / s[1]) ** 2) / s[1]
        r = d1 / (d1 + d2)
        p = r.mean()
        mu = np.array([np.average(y, weights=r), np.average(y, weights=1 - r)])
        s = np.sqrt([np.average((y - mu[0]) ** 2, weights=r),
                     np.average((y - mu[1]) ** 2, weights=1 - r)])  # fmt: skip
    ll = np.sum(np.log((p * np.exp(-0.5 * ((y - mu[0]) / s[0]) ** 2) / s[0]
                        + (1 - p) * np.exp(-0.5 * ((y - mu[1]) / s[1]) ** 2) / s[1])
                       / np.sqrt(2 * np.pi)))  # fmt: skip
    return ll, p, mu, s


def test_one_start_stops_at_a_local_maximum(data):
    single = jm.fit(mixture, LOCAL_START, data)
    assert bool(single.converged)  # a genuine maximum: converged, negative definite Hessian
    assert np.isfinite(np.asarray(single.cov)).all()
    np.testing.assert_allclose(float(single.loglik), LOCAL, atol=LL_ATOL)


def test_the_best_start_is_the_global_maximum(best, starts):
    assert isinstance(best, jm.FitResult) and bool(best.converged)
    np.testing.assert_allclose(float(best.loglik), GLOBAL, atol=LL_ATOL)
    maxima = best.local_maxima()
    assert maxima[0][0] == pytest.approx(GLOBAL, abs=LL_ATOL)
    assert any(abs(v - LOCAL) < LL_ATOL for v, _ in maxima[1:])
    assert best.n_starts == len(starts)
    assert best.n_reached == maxima[0][1] >= 1
    assert not best.reached()[0]  # the local start did not get there
    assert "reached this maximum" in best.summary()


def test_agrees_with_em(best, data):
    y = data["y"]
    runs = [em(y, 0.5, np.quantile(y, [a, b]), np.ones(2)) for a, b in [(0.1, 0.6), (0.3, 0.9)]]
    ll, p, mu, s = max(runs, key=lambda r: r[0])
    np.testing.assert_allclose(float(best.loglik), ll, atol=LL_ATOL)
    order = np.argsort(np.asarray(best.params["mu"]))
    np.testing.assert_allclose(np.asarray(best.params["mu"])[order], np.sort(mu), rtol=EM_RTOL)
    sig = np.exp(np.asarray(best.params["log_s"]))[order]
    np.testing.assert_allclose(sig, s[np.argsort(mu)], rtol=EM_RTOL)
    weight = float(jax.nn.sigmoid(best.params["logit_p"]))  # of component 0
    lower_weight = weight if order[0] == 0 else 1 - weight
    np.testing.assert_allclose(lower_weight, p if mu[0] < mu[1] else 1 - p, rtol=EM_RTOL)


@pytest.mark.slow
def test_the_best_fit_profiles(best):
    lo, hi = jm.profile_ci(best, "mu[1]")
    assert lo < float(best.params["mu"][1]) < hi


def test_stacked_starts_equal_a_list(starts, data, best):
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *starts)
    again = jm.fit_multistart(mixture, stacked, data)
    np.testing.assert_array_equal(np.asarray(again.start_status), np.asarray(best.start_status))
    np.testing.assert_allclose(float(again.loglik), float(best.loglik), rtol=1e-12)


def test_bad_input(data, starts):
    with pytest.raises(ValueError, match="starts is empty"):
        jm.fit_multistart(mixture, [], data)
    with pytest.raises(ValueError, match="same structure"):
        jm.fit_multistart(mixture, [LOCAL_START, {"mu": np.zeros(2)}], data)
    with pytest.raises(ValueError, match="leading axis"):
        jm.fit_multistart(mixture, {"logit_p": 0.0, "mu": np.zeros(2), "log_s": np.zeros(2)}, data)
    spike = {"logit_p": 0.0, "mu": np.array([data["y"][0], 1.0]), "log_s": np.array([-30.0, 0.0])}
    with pytest.raises(RuntimeError, match="none of the 16 starts converged"):
        jm.fit_multistart(mixture, [spike] * len(starts), data)  # each runs up a spike at y_0
    outside = {"logit_p": 0.0, "mu": np.zeros(2), "log_s": np.array([np.nan, 0.0])}
    with pytest.raises(ValueError, match="NaN"):
        jm.fit_multistart(mixture, [outside] * 2, data)
