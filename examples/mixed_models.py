"""A binomial GLMM (lme4's cbpp: herds, random intercept) by jm.fit_mixed (Laplace), with
 the random effects, a boundary-aware LR test and cluster-robust standard errors.

R twin: glmer(cbind(incidence, size - incidence) ~ factor(period) + (1 | herd), cbpp, binomial).
"""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.scipy.special import gammaln
from scipy import stats

import jaxmle as jm

df = pd.read_csv(Path(__file__).parent.parent / "tests" / "reference" / "data" / "cbpp.csv")
X = np.column_stack([np.ones(len(df))] + [(df.period == p).to_numpy(float) for p in (2, 3, 4)])
data = {"X": X, "y": df.incidence.to_numpy(float), "n": df["size"].to_numpy(float)}


def logpdf(theta, u, obs):  # ONE row given its herd's effect u (b = sigma u, u ~ N(0, 1))
    eta = obs["X"] @ theta["beta"] + theta["sigma"] * u
    y, n = obs["y"], obs["n"]
    return y * eta - n * jm.log1pexp(eta) + gammaln(n + 1) - gammaln(y + 1) - gammaln(n - y + 1)


def re_logpdf(theta, u):  # ONE herd's effect
    return -0.5 * u**2 - 0.5 * jnp.log(2 * jnp.pi)


init = {"beta": np.zeros(4), "sigma": 1.0}
laplace = jm.fit_mixed(logpdf, re_logpdf, init, 0.0, data, df.herd, lower={"sigma": 0.0})
print(laplace.summary())

mode, sd = laplace.ranef(condvar=True)["herd"]  # conditional modes of u and their SDs
sigma = float(laplace.params["sigma"])
print("herd effects b = sigma u (R ranef):", np.round(sigma * mode[:5], 4), "...")

# without the random effect: sigma held at 0, on the boundary, so the p-value is half chi2(1)'s
glm = jm.fit_mixed(logpdf, re_logpdf, {**init, "sigma": 0.0}, 0.0, data, df.herd,
                   fixed={"sigma": 0.0})  # fmt: skip
lr = jm.lr_test(glm, laplace)
print(
    f"LR = {float(lr.statistic):.3f}, boundary p = {0.5 * stats.chi2.sf(float(lr.statistic), 1):.2g}"
)
print("cluster-robust SEs:", np.round(np.sqrt(np.diag(laplace.covariance("cluster"))), 4))
