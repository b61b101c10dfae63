"""Data simulators and model definitions shared by the benchmarks and `memory.py`.

Everything here is deterministic (fixed seeds), so every library fits exactly the same data.
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np

LOGIT_N = int(os.environ.get("BENCH_LOGIT_N", 1_000_000))
LOGIT_P = 20
LOGIT_SEED = 20240601

WEIBULL_N = int(os.environ.get("BENCH_WEIBULL_N", 200_000))
WEIBULL_P = 10  # covariates, plus intercept and log_sigma: 12 parameters
WEIBULL_SEED = 20240602


# ------------------------------------------------------------------------------------------ logit


def simulate_logit(n: int = LOGIT_N, p: int = LOGIT_P, seed: int = LOGIT_SEED):
    """X (n, p) standard normal, y ~ Bernoulli(logistic(b0 + X b)); float64, C-contiguous."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, p))
    # every coefficient at least 0.1 away from 0, so relative comparisons of estimates make sense
    b_true = rng.choice([-1.0, 1.0], p) * rng.uniform(0.1, 0.5, p)
    b0_true = -0.3
    eta = b0_true + x @ b_true
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-eta))).astype(np.float64)
    return x, y


def logit_logpdf(theta, obs):
    eta = theta["b0"] + obs["x"] @ theta["b"]
    return obs["y"] * eta - jnp.logaddexp(0.0, eta)


def logit_init(p: int = LOGIT_P):
    return {"b0": 0.0, "b": np.zeros(p)}


def jaxmle_logit(x, y, cov: str = "sandwich", tol: float = 1e-10, subsample_start=None):
    import jax

    import jaxmle as jm

    res = jm.fit(
        logit_logpdf,
        logit_init(x.shape[1]),
        {"x": x, "y": y},
        method="newton",
        cov=cov,
        tol=tol,
        subsample_start=subsample_start,
    )
    return jax.block_until_ready(res)


def jaxmle_logit_vector(res):
    """[b0, b_1..b_p] from a jaxmle logit result (estimates, standard errors)."""
    est = np.concatenate([[float(res.params["b0"])], np.asarray(res.params["b"])])
    se = np.concatenate([[float(res.se["b0"])], np.asarray(res.se["b"])])
    return est, se


def sklearn_logit(x, y):
    from sklearn.linear_model import LogisticRegression

    # C=inf is "no penalty" (penalty=None is deprecated in scikit-learn >= 1.8)
    m = LogisticRegression(solver="newton-cholesky", tol=1e-8, C=np.inf, fit_intercept=True)
    m.fit(x, y)
    return np.concatenate([m.intercept_, m.coef_[0]]), m


def glum_logit(x, y, covariance: bool = False):
    from glum import GeneralizedLinearRegressor

    m = GeneralizedLinearRegressor(
        family="binomial", alpha=0, gradient_tol=1e-8, fit_intercept=True
    )
    m.fit(x, y)
    est = np.concatenate([[m.intercept_], m.coef_])
    se = None
    if covariance:  # HC0 sandwich, no small-sample correction (same as jaxmle cov="sandwich")
        cov = m.covariance_matrix(x, y, robust=True, expected_information=False)
        se = np.sqrt(np.diag(np.asarray(cov))) * np.sqrt((len(y) - len(est)) / len(y))
    return est, se, m


def add_constant(x):
    """[1, x]: the design statsmodels wants (built once per session, outside the timed region)."""
    return np.column_stack([np.ones(x.shape[0]), x])


def statsmodels_logit(xc, y):
    import statsmodels.api as sm

    r = sm.Logit(y, xc).fit(method="newton", disp=0, cov_type="HC0")
    return np.asarray(r.params), np.asarray(r.bse), r


def statsmodels_glm_logit(xc, y):
    import statsmodels.api as sm

    r = sm.GLM(y, xc, family=sm.families.Binomial()).fit(cov_type="HC0", tol=1e-10)
    return np.asarray(r.params), np.asarray(r.bse), r


def statsmodels_generic_logit(xc, y):
    """GenericLikelihoodModel with only loglikeobs (numerical score and Hessian), Newton."""
    from statsmodels.base.model import GenericLikelihoodModel

    class LogitGeneric(GenericLikelihoodModel):
        def loglikeobs(self, params):
            eta = self.exog @ params
            return self.endog * eta - np.logaddexp(0.0, eta)

    r = LogitGeneric(y, xc).fit(
        start_params=np.zeros(xc.shape[1]), method="newton", disp=0, maxiter=100
    )
    return np.asarray(r.params), np.asarray(r.bse), r


# ---------------------------------------------------------------------------------------- weibull


def simulate_weibull(n: int = WEIBULL_N, p: int = WEIBULL_P, seed: int = WEIBULL_SEED):
    """Right-censored Weibull AFT: log T = b0 + x'b + sigma W, W standard minimum extreme value.

    Returns x (n, p), t (n,) observed times min(T, C), d (n,) 1.0 = event, 0.0 = censored.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, p))
    b0_true, sigma_true = 1.0, 0.7
    b_true = rng.choice([-1.0, 1.0], p) * rng.uniform(0.1, 0.5, p)
    w = np.log(rng.exponential(size=n))  # P(W > w) = exp(-e^w): minimum extreme value
    t_event = np.exp(b0_true + x @ b_true + sigma_true * w)
    t_cens = rng.exponential(scale=8.0, size=n)
    t = np.minimum(t_event, t_cens)
    d = (t_event <= t_cens).astype(np.float64)
    return x, t, d


def weibull_logpdf(theta, obs):
    """log f(t) for events, log S(t) for censored rows (on the t scale, like lifelines)."""
    log_sigma = theta["log_sigma"]
    mu = theta["b0"] + obs["x"] @ theta["b"]
    z = (obs["logt"] - mu) * jnp.exp(-log_sigma)
    return obs["d"] * (z - log_sigma - obs["logt"]) - jnp.exp(z)


def weibull_init(p: int = WEIBULL_P):
    return {"b0": 0.0, "b": np.zeros(p), "log_sigma": 0.0}


def jaxmle_weibull(x, t, d, cov: str = "sandwich", tol: float = 1e-10):
    import jax

    import jaxmle as jm

    res = jm.fit(
        weibull_logpdf,
        weibull_init(x.shape[1]),
        {"x": x, "logt": np.log(t), "d": d},
        method="newton",
        cov=cov,
        tol=tol,
    )
    return jax.block_until_ready(res)


def jaxmle_weibull_vector(res):
    """[b0, b_1..b_p, log_sigma] from a jaxmle Weibull result (estimates, standard errors)."""

    def vec(tree):
        return np.concatenate(
            [[float(tree["b0"])], np.asarray(tree["b"]), [float(tree["log_sigma"])]]
        )

    return vec(res.params), vec(res.se)


def lifelines_frame(x, t, d):
    """The DataFrame lifelines wants (built once per session, outside the timed region)."""
    import pandas as pd

    df = pd.DataFrame(x, columns=[f"x{j}" for j in range(x.shape[1])])
    df["T"] = t
    df["E"] = d
    return df


def lifelines_weibull(df, robust: bool = False, ftol: float | None = 1e-12):
    """lifelines WeibullAFTFitter; lambda_ = exp(b0 + x'b), rho_ = 1/sigma.

    lifelines minimises -lnL/N with SLSQP, default ftol=1e-10, which stops ~1e-5 (relative) short of
    the maximum here; ftol=1e-12 reaches it (2 more iterations). robust=False: standard errors from
    the autograd Hessian (robust=True, the sandwich, took 134 s at N=20,000 on the benchmark box).
    """
    from lifelines import WeibullAFTFitter

    cols = [c for c in df.columns if c not in ("T", "E")]
    m = WeibullAFTFitter()
    opts = None if ftol is None else {"ftol": ftol}
    m.fit(df, duration_col="T", event_col="E", robust=robust, fit_options=opts)
    lam = m.params_["lambda_"]
    rho = m.params_["rho_"]
    est = np.concatenate([[lam["Intercept"]], lam[cols].to_numpy(), [-rho["Intercept"]]])
    se_l = m.standard_errors_["lambda_"]
    se_r = m.standard_errors_["rho_"]
    se = np.concatenate([[se_l["Intercept"]], se_l[cols].to_numpy(), [se_r["Intercept"]]])
    return est, se, m


def _weibull_generic_class():
    from statsmodels.base.model import GenericLikelihoodModel

    class WeibullAFT(GenericLikelihoodModel):
        """exog = [1, x]; params = [b (k), log_sigma]; endog = log t; `d` the event indicator.

        loglikeobs and score_obs/score are analytic numpy; the Hessian (used for the covariance)
        is statsmodels' default numerical `approx_hess` of loglike.
        """

        def __init__(self, endog, exog, d, **kwds):
            super().__init__(endog, exog, extra_params_names=["log_sigma"], **kwds)
            self.d = np.asarray(d, dtype=np.float64)

        def _z(self, params):
            b, ls = params[:-1], params[-1]
            return (self.endog - self.exog @ b) * np.exp(-ls), ls

        def loglikeobs(self, params):
            z, ls = self._z(params)
            return self.d * (z - ls - self.endog) - np.exp(z)

        def score_obs(self, params):
            z, ls = self._z(params)
            ez_d = np.exp(z) - self.d  # -(dl/dz)
            db = (ez_d * np.exp(-ls))[:, None] * self.exog
            dls = ez_d * z - self.d
            return np.column_stack([db, dls])

        def score(self, params):
            return self.score_obs(params).sum(axis=0)

    return WeibullAFT


def statsmodels_weibull(xc, t, d, gtol: float = 1e-8):
    """GenericLikelihoodModel, BFGS from zeros; gtol applies to the gradient of -lnL/N."""
    model = _weibull_generic_class()(np.log(t), xc, d)
    r = model.fit(
        start_params=np.zeros(xc.shape[1] + 1),
        method="bfgs",
        maxiter=1000,
        gtol=gtol,
        disp=0,
        cov_type="HC0",
    )
    return np.asarray(r.params), np.asarray(r.bse), r
