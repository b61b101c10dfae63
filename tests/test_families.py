"""jaxmle.families: log-densities against scipy, Fisher information against the variance of the score,
censored / truncated versions, the expected information of `predict -> distribution` models, and
family-built survival and Tobit fits against survival::survreg (tests/reference/glm/).

The references are independent of the implementation: scipy.stats log-densities; E[s s'] of the
autodiff score by adaptive quadrature (scipy `quad_vec`) or exact summation over the support; closed
forms (exponential under type-I censoring, Amemiya's Tobit information); R fixtures.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import scipy.stats as st
from scipy.integrate import quad_vec
from scipy.special import polygamma as sp_polygamma

import jaxmle as jm
from jaxmle import families as jf

REFERENCE = Path(__file__).parent / "reference"

# E[s s'] by adaptive quadrature at epsrel 1e-12 and the closed forms agree to rounding; 1e-9 leaves
# room for the integrand's cancellation in the tails.
FISHER_RTOL = 1e-9
# E[s] = 0 (the log-density integrates to one), relative to sqrt(diag F)
MEAN_SCORE_TOL = 1e-9
# censored / truncated information by 128-point Gauss-Legendre vs adaptive quadrature
QUADRATURE_RTOL = 1e-10
# survreg fixtures: the tolerances of tests/test_reference.py
PARAM_RTOL, LOGLIK_RTOL, SE_RTOL, COV_SCALED_TOL = 1e-6, 1e-8, 1e-5, 1e-5


def score_fn(dist):
    """y -> d logpdf(y) / d eta, jitted (the reference differentiates the logpdf, not fisher())."""

    def s(y):
        return jax.grad(lambda eta: dist.with_parameters(eta).logpdf(y))(dist.parameters())

    return jax.jit(s)


def expectation(dist, fn, lower, upper, logpdf=None):
    """integral over (lower, upper) of fn(y) f(y) dy by adaptive quadrature."""
    logpdf = jax.jit(logpdf or dist.logpdf)
    out, _ = quad_vec(
        lambda y: np.asarray(fn(y)) * math.exp(float(logpdf(y))),
        lower,
        upper,
        epsabs=0.0,
        epsrel=1e-12,
        limit=500,
    )
    return out


def continuous_moments(dist, lower, upper):
    s = score_fn(dist)
    mean = expectation(dist, s, lower, upper)
    outer = expectation(dist, lambda y: np.outer(s(y), s(y)), lower, upper)
    return mean, outer


def discrete_moments(dist, support):
    s = jax.jit(jax.vmap(score_fn(dist)))
    p = np.exp(np.asarray(jax.jit(jax.vmap(dist.logpdf))(support)))
    scores = np.asarray(s(support))
    return p @ scores, (scores * p[:, None]).T @ scores, p.sum()


def check_fisher(dist, mean, outer):
    fisher = np.asarray(dist.fisher())
    scale = np.sqrt(np.diagonal(fisher))
    np.testing.assert_allclose(mean / scale, 0.0, atol=MEAN_SCORE_TOL)
    np.testing.assert_allclose(fisher, outer, rtol=FISHER_RTOL, atol=1e-12 * np.max(np.abs(outer)))


CONTINUOUS = [
    (jf.Normal(1.3, 0.7), st.norm(1.3, 0.7), -np.inf, np.inf, [0.2, 1.9]),
    (jf.LogNormal(0.2, 0.5), st.lognorm(s=0.5, scale=math.exp(0.2)), 0.0, np.inf, [0.4, 2.5]),
    (jf.Weibull(1.7, 2.3), st.weibull_min(c=1.7, scale=2.3), 0.0, np.inf, [0.3, 4.0]),
    (jf.Exponential(0.8), st.expon(scale=1 / 0.8), 0.0, np.inf, [0.1, 3.0]),
    (jf.Gamma(2.5, 1.5), st.gamma(a=2.5, scale=1 / 1.5), 0.0, np.inf, [0.3, 2.2]),
    (jf.StudentT(4.5, 0.3, 1.2), st.t(4.5, 0.3, 1.2), -np.inf, np.inf, [-2.0, 0.7]),
    (jf.Beta(2.2, 3.1), st.beta(2.2, 3.1), 0.0, 1.0, [0.1, 0.6]),
]


@pytest.mark.usefixtures("x64")  # the distributions' own arithmetic, in float64
@pytest.mark.parametrize(
    ("dist", "ref", "lower", "upper", "ys"),
    CONTINUOUS,
    ids=[type(c[0]).__name__ for c in CONTINUOUS],
)
def test_continuous_logpdf_and_fisher(dist, ref, lower, upper, ys):
    for y in ys:
        np.testing.assert_allclose(float(dist.logpdf(y)), ref.logpdf(y), rtol=1e-12)
    check_fisher(dist, *continuous_moments(dist, lower, upper))


DISCRETE = [
    (jf.Poisson(3.7), st.poisson(3.7), np.arange(200.0)),
    (jf.Bernoulli(probs=0.3), st.bernoulli(0.3), np.array([0.0, 1.0])),
    (jf.Bernoulli(logits=-0.4), st.bernoulli(1 / (1 + math.exp(0.4))), np.array([0.0, 1.0])),
    (jf.Binomial(12.0, probs=0.35), st.binom(12, 0.35), np.arange(13.0)),
    (jf.Binomial(12.0, logits=0.2), st.binom(12, 1 / (1 + math.exp(-0.2))), np.arange(13.0)),
    (jf.NegativeBinomial(4.2, 1.7), st.nbinom(1.7, 1.7 / (1.7 + 4.2)), np.arange(400.0)),
]


@pytest.mark.usefixtures("x64")  # the distributions' own arithmetic, in float64
@pytest.mark.parametrize(
    ("dist", "ref", "support"),
    DISCRETE,
    ids=[f"{type(c[0]).__name__}{i}" for i, c in enumerate(DISCRETE)],
)
def test_discrete_logpdf_and_fisher(dist, ref, support):
    logpdf = np.asarray(jax.vmap(dist.logpdf)(support[:20]))
    np.testing.assert_allclose(logpdf, ref.logpmf(support[:20]), rtol=1e-12)
    mean, outer, total = discrete_moments(dist, support)
    assert abs(total - 1.0) < 1e-13
    check_fisher(dist, mean, outer)


@pytest.mark.usefixtures("x64")  # the distributions' own arithmetic, in float64
@pytest.mark.parametrize(("mu", "theta"), [(0.3, 0.2), (50.0, 20.0), (1000.0, 5.0), (2.0, 300.0)])
def test_negative_binomial_theta_information(mu, theta):
    """The integral for F_theta,theta against the exact series E[(d ln f / d theta)^2]."""
    p = theta / (theta + mu)
    y = np.arange(st.nbinom(theta, p).isf(1e-20) + 100)
    pmf = st.nbinom(theta, p).pmf(y)
    dig = sp_polygamma(0, y + theta) - sp_polygamma(0, theta)
    s = dig + math.log(theta) + 1 - math.log(theta + mu) - (y + theta) / (mu + theta)
    exact = pmf @ s**2
    ours = float(jf.NegativeBinomial(mu, theta).fisher()[1, 1])
    np.testing.assert_allclose(ours, exact, rtol=1e-9)


# ---------------------------------------------------------------- censored and truncated


@pytest.mark.usefixtures("x64")  # the distributions' own arithmetic, in float64
def test_tobit_information_quadrature_and_amemiya():
    base = jf.Normal(0.4, 1.3)
    dist = jf.Censored(base, lower=0.0)
    s = score_fn(dist)
    interior = expectation(dist, lambda y: np.outer(s(y), s(y)), 0.0, np.inf)
    s0 = np.asarray(s(0.0))  # the censored branch: d ln F(0) / d eta
    outer = interior + np.exp(float(dist.logpdf(0.0))) * np.outer(s0, s0)
    fisher = np.asarray(dist.fisher())
    np.testing.assert_allclose(fisher, outer, rtol=QUADRATURE_RTOL)
    # Amemiya (1973) in (mu, sigma^2), mapped to (mu, sigma)
    np.testing.assert_allclose(fisher, amemiya_mu_sigma(0.4, 1.3), rtol=1e-12)


def amemiya(X, beta, sigma):
    """Amemiya (1973, Econometrica 41, p. 1000) Tobit information for (beta, sigma^2), censoring at 0."""
    z = X @ np.atleast_1d(beta) / sigma
    phi, Phi = st.norm.pdf(z), st.norm.cdf(z)
    r = phi**2 / (1 - Phi)
    a = -(z * phi - r - Phi) / sigma**2
    b = (z**2 * phi + phi - z * r) / (2 * sigma**3)
    c = -(z**3 * phi + z * phi - z**2 * r - 2 * Phi) / (4 * sigma**4)
    k = X.shape[1]
    info = np.zeros((k + 1, k + 1))
    info[:k, :k] = (X * a[:, None]).T @ X
    info[:k, k] = info[k, :k] = X.T @ b
    info[k, k] = c.sum()
    return info


def amemiya_mu_sigma(mu, sigma):
    """One observation with x = 1: d sigma^2 / d sigma = 2 sigma."""
    j = np.diag([1.0, 2.0 * sigma])
    return j @ amemiya(np.ones((1, 1)), mu, sigma) @ j


@pytest.mark.usefixtures("x64")  # the distributions' own arithmetic, in float64
@pytest.mark.slow  # the default run keeps a cheaper check of this feature
def test_truncated_information_quadrature():
    for dist, lo, hi in [
        (jf.Truncated(jf.Normal(0.4, 1.3), lower=-0.5, upper=2.0), -0.5, 2.0),
        (jf.Truncated(jf.Normal(0.0, 1.0), lower=12.0), 12.0, np.inf),  # deep in the tail
        (jf.Truncated(jf.Weibull(1.7, 2.3), upper=1.5), 0.0, 1.5),
    ]:
        mean, outer = continuous_moments(dist, lo, hi)
        fisher = np.asarray(dist.fisher())
        np.testing.assert_allclose(mean / np.sqrt(np.diagonal(fisher)), 0.0, atol=MEAN_SCORE_TOL)
        np.testing.assert_allclose(fisher, outer, rtol=QUADRATURE_RTOL)


@pytest.mark.usefixtures("x64")  # the distributions' own arithmetic, in float64
@pytest.mark.parametrize(
    "base",
    [jf.Weibull(1.7, 2.3), jf.Exponential(0.8), jf.LogNormal(0.2, 0.5)],
    ids=lambda v: type(v).__name__,
)
def test_right_censored_information_type_one(base):
    """Observed (min(T, c), event): int_0^c s_1 s_1' f + S(c) s_0(c) s_0(c)'."""
    c = 1.9
    event, censored = jf.RightCensored(base, 1.0, c), jf.RightCensored(base, 0.0, c)
    s1, s0 = score_fn(event), np.asarray(score_fn(censored)(c))
    outer = expectation(base, lambda t: np.outer(s1(t), s1(t)), 0.0, c)
    outer += np.exp(float(base.logsf(c))) * np.outer(s0, s0)
    np.testing.assert_allclose(np.asarray(event.fisher()), outer, rtol=QUADRATURE_RTOL)
    if isinstance(base, jf.Exponential):  # closed form: P(T < c) / rate^2
        closed = -math.expm1(-0.8 * c) / 0.8**2
        np.testing.assert_allclose(float(event.fisher()[0, 0]), closed, rtol=1e-12)


@pytest.mark.usefixtures("x64")  # the distributions' own arithmetic, in float64
def test_censoring_at_infinity_is_no_censoring():
    base = jf.Normal(0.4, 1.3)
    dist = jf.Censored(base, lower=-jnp.inf, upper=jnp.inf)
    np.testing.assert_allclose(
        np.asarray(dist.fisher()), np.asarray(base.fisher()), rtol=1e-12, atol=1e-15
    )
    assert float(dist.logpdf(0.3)) == pytest.approx(float(base.logpdf(0.3)), rel=1e-15)
    assert np.isfinite(np.asarray(score_fn(dist)(0.3))).all()


def test_wrapper_errors():
    with pytest.raises(ValueError, match="censor_time"):
        jf.RightCensored(jf.Weibull(1.0, 1.0), 1.0).fisher()
    with pytest.raises(NotImplementedError, match="Censored\\(Gamma\\)"):
        jf.Censored(jf.Gamma(2.0, 1.0), lower=0.5).fisher()
    with pytest.raises(ValueError, match="exactly one of probs= or logits="):
        jf.Bernoulli(probs=0.2, logits=0.1)
    with pytest.raises(ValueError, match="exactly one"):
        jf.Binomial(3.0)


# ---------------------------------------------------------------- models predict -> distribution


def poisson_binomial_data(rng, n=300):
    X = np.column_stack([np.ones(n), rng.normal(size=(n, 2))])
    trials = rng.integers(1, 6, size=n).astype(float)
    w = rng.integers(1, 4, size=n).astype(float)
    p = 1 / (1 + np.exp(-(X @ np.array([0.2, 0.5, -0.3]))))
    return {"X": X, "n": trials, "y": rng.binomial(trials.astype(int), p).astype(float)}, w


def binomial_probit(theta, obs):
    return jf.Binomial(obs["n"], probs=jax.scipy.special.ndtr(obs["X"] @ theta))


def test_expected_information_of_a_model(rng):
    """I = sum_i w_i n_i phi(eta_i)^2 / (Phi (1 - Phi)) x_i x_i' (probit, trials as a constant leaf)."""
    data, w = poisson_binomial_data(rng)
    model = jf.Model(binomial_probit)
    theta = np.array([0.1, 0.4, -0.2])
    res = jm.fit(model, theta, data, weights=w, method="fisher", cov="expected",
                 expected=model.expected, max_iter=0)  # fmt: skip
    eta = data["X"] @ theta
    weight = w * data["n"] * st.norm.pdf(eta) ** 2 / (st.norm.cdf(eta) * st.norm.sf(eta))
    closed = (data["X"] * weight[:, None]).T @ data["X"]
    np.testing.assert_allclose(np.asarray(res.expected_information), closed, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(res.coef), theta)

    # a hand-written logpdf can declare the same information
    def logpdf(t, obs):
        return binomial_probit(t, obs).logpdf(obs["y"])

    res2 = jm.fit(logpdf, theta, data, weights=w, method="fisher", cov="expected",
                  expected=jf.expected(binomial_probit), max_iter=0)  # fmt: skip
    np.testing.assert_allclose(np.asarray(res2.expected_information), closed, rtol=1e-12)


def test_model_errors():
    def not_a_distribution(theta, obs):
        return obs["X"] @ theta

    with pytest.raises(TypeError, match=r"must return a jaxmle\.families distribution"):
        jm.fit(jf.Model(not_a_distribution), np.zeros(2), {"X": np.ones((5, 2)), "y": np.ones(5)})
    with pytest.raises(TypeError, match="predict must be callable"):
        jf.Model(3)


# ---------------------------------------------------------------- survreg fixtures


def tobit(theta, obs):
    return jf.Censored(jf.Normal(obs["X"] @ theta[:-1], jnp.exp(theta[-1])), lower=0.0)


def weibull(theta, obs):
    base = jf.Weibull(jnp.exp(-theta[-1]), jnp.exp(obs["X"] @ theta[:-1]))
    return jf.RightCensored(base, obs["event"])


def exponential(theta, obs):
    return jf.RightCensored(jf.Exponential(jnp.exp(-obs["X"] @ theta)), obs["event"])


def lognormal(theta, obs):
    return jf.RightCensored(jf.LogNormal(obs["X"] @ theta[:-1], jnp.exp(theta[-1])), obs["event"])


SURVREG = {
    # fixture: (predict, dataset override, response, covariates, has log scale)
    "r_survreg_tobit_tobin": (tobit, None, "durable", ["age", "quant"], True),
    "r_weibull_lung": (weibull, "lung.csv", "y", ["age", "sex", "ph.ecog"], True),
    "r_survreg_exponential_lung": (exponential, None, "time", ["age", "sex", "ph.ecog"], False),
    "r_survreg_lognormal_lung": (lognormal, None, "time", ["age", "sex", "ph.ecog"], False),
}


@functools.cache
def survreg_fit(name, method="newton"):
    predict, _, response, covariates, _ = SURVREG[name]
    if name == "r_weibull_lung":  # the fixture of tests/test_reference.py
        fx = json.loads((REFERENCE / f"{name}.json").read_text())
        df = pd.read_csv(REFERENCE / fx["dataset"])
        response = fx["response"]
    else:
        fx = json.loads((REFERENCE / "glm" / f"{name}.json").read_text())
        df = pd.read_csv(REFERENCE / fx["dataset"])
    X = np.column_stack([np.ones(len(df))] + [df[c].to_numpy(float) for c in covariates])
    data = {"X": X, "y": df[response].to_numpy(float)}
    if "event" in df:
        data["event"] = df["event"].to_numpy(float)
    k = len(fx["param_names"])
    model = jf.Model(predict)
    init = np.zeros(k)
    if predict is exponential or predict is weibull or predict is lognormal:
        init[0] = np.log(df[response].mean())
    cov = "expected" if method == "fisher" else "hessian"
    expected = model.expected if method == "fisher" else None
    res = jm.fit(model, init, data, method=method, cov=cov, expected=expected)
    return fx, res, X


@pytest.mark.parametrize("name", sorted(SURVREG))
def test_survreg_fits(name):
    fx, res, _ = survreg_fit(name)
    assert bool(res.converged), res.message
    ref = np.asarray(fx["params"])
    cov_ref = np.asarray(fx["cov"]["hessian"] if isinstance(fx["cov"], dict) else fx["cov"])
    se_ref = np.sqrt(np.diagonal(cov_ref))
    err = np.abs(np.asarray(res.coef) - ref)
    assert (err <= PARAM_RTOL * np.abs(ref) + 1e-7 * se_ref).all(), (res.coef, ref)
    np.testing.assert_allclose(float(res.loglik), fx["loglik"], rtol=LOGLIK_RTOL)
    np.testing.assert_allclose(np.sqrt(np.diagonal(np.asarray(res.cov))), se_ref, rtol=SE_RTOL)
    np.testing.assert_allclose(
        np.asarray(res.cov), cov_ref, atol=COV_SCALED_TOL * np.max(np.abs(cov_ref))
    )


def test_tobit_fisher_scoring_and_expected_information():
    """Fisher scoring reaches survreg's estimate; I(theta_hat) is Amemiya's closed form."""
    fx, res, X = survreg_fit("r_survreg_tobit_tobin", "fisher")
    assert bool(res.converged), res.message
    np.testing.assert_allclose(np.asarray(res.coef), fx["params"], rtol=PARAM_RTOL)
    beta, sigma = np.asarray(res.coef[:-1]), math.exp(float(res.coef[-1]))
    j = np.diag([1.0] * len(beta) + [2.0 * sigma**2])  # d sigma^2 / d log sigma
    closed = j @ amemiya(X, beta, sigma) @ j
    np.testing.assert_allclose(np.asarray(res.expected_information), closed, rtol=1e-10)


def poisson_log(theta, obs):
    return jf.Poisson(jnp.exp(obs["X"] @ theta))


@pytest.mark.usefixtures("x64")  # a vmapped fit computes in float64 only with 64-bit on
def test_vmap_of_a_family_fit_equals_the_loop(rng):
    """Fisher scoring on a family model under jax.vmap: one batched result, fit by fit as the loop."""
    n, batch = 200, 3
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    ys = rng.poisson(np.exp(X @ np.array([0.5, 0.3])), size=(batch, n)).astype(float)
    model = jf.Model(poisson_log)

    def one(y):
        return jm.fit(model, jnp.zeros(2), {"X": X, "y": y}, method="fisher", cov="expected",
                      expected=model.expected)  # fmt: skip

    batched = jax.vmap(one)(jnp.asarray(ys))
    assert batched.params.shape == (batch, 2) and bool(batched.converged.all())
    for i in range(batch):
        single = one(ys[i])
        np.testing.assert_allclose(
            np.asarray(batched.params[i]), np.asarray(single.params), rtol=1e-12
        )
        np.testing.assert_allclose(np.asarray(batched.cov[i]), np.asarray(single.cov), rtol=1e-10)
        # the canonical link: I = X' diag(mu) X = -H
        mu = np.exp(X @ np.asarray(single.params))
        np.testing.assert_allclose(np.asarray(single.expected_information), (X * mu[:, None]).T @ X,
                                   rtol=1e-12)  # fmt: skip


@pytest.mark.usefixtures("x64")  # the distributions' own arithmetic, in float64
def test_log1pexp_is_softplus_with_its_derivatives():
    """ln(1 + e^x) against numpy's logaddexp over both branches and the tails; its first and second
    derivatives (autodiff of the stated jvp) against scipy's logistic, p and p (1 - p)."""
    from scipy.special import expit

    x = np.concatenate([-np.logspace(3, -8, 60), [0.0], np.logspace(-8, 3, 60)])
    np.testing.assert_allclose(jm.log1pexp(x), np.logaddexp(0.0, x), rtol=1e-15, atol=0)
    d1 = jax.vmap(jax.grad(jm.log1pexp))(x)
    d2 = jax.vmap(jax.grad(jax.grad(jm.log1pexp)))(x)
    np.testing.assert_allclose(d1, expit(x), rtol=1e-15, atol=0)
    # relative accuracy in both tails (jnp.logaddexp's second derivative loses it as p -> 1)
    np.testing.assert_allclose(d2, expit(x) * expit(-x), rtol=1e-13, atol=0)
    assert float(jm.log1pexp(jnp.inf)) == np.inf and float(jm.log1pexp(-jnp.inf)) == 0.0
