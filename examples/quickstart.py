"""Quickstart: simulate a logistic regression, fit it by maximum likelihood, print the table.

Run: python examples/quickstart.py
"""

import jax.numpy as jnp
import numpy as np

import jaxmle as jm

rng = np.random.default_rng(0)
n, p = 100_000, 3
x = rng.normal(size=(n, p))
firm = rng.integers(0, 200, size=n)  # cluster ids
eta = 0.5 + x @ np.array([1.0, -0.5, 0.0]) + 0.3 * rng.normal(size=200)[firm]
y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)


def logpdf(theta, obs):
    """Log-density of ONE observation: Bernoulli with a logit link."""
    eta = theta["b0"] + obs["x"] @ theta["b"]
    return obs["y"] * eta - jnp.logaddexp(0.0, eta)


res = jm.fit(logpdf, {"b0": 0.0, "b": jnp.zeros(p)}, {"x": x, "y": y}, cov="cluster", groups=firm)
print(res.summary())

print("\nThe same fit, other covariance kinds (no refit):")
for kind in ("hessian", "opg", "sandwich", "cluster"):
    se = np.sqrt(np.diagonal(np.asarray(res.covariance(kind))))
    print(f"  {kind:<9}", "  ".join(f"{v:.5f}" for v in se))
