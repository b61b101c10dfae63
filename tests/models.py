"""Log-densities of one observation, written as a user would, shared by the tests."""

import jax.numpy as jnp
import numpy as np


def logit(theta, obs):
    eta = theta["b0"] + obs["x"] @ theta["b"]
    return obs["y"] * eta - jnp.logaddexp(0.0, eta)


def normal(theta, obs):
    """y ~ N(x'b, sigma2), parametrised in sigma2 itself (docs/theory.md's closed form)."""
    resid = obs["y"] - obs["x"] @ theta["b"]
    return -0.5 * (jnp.log(2 * jnp.pi) + jnp.log(theta["sigma2"]) + resid**2 / theta["sigma2"])


def poisson(theta, obs):
    eta = obs["x"] @ theta["b"]
    return obs["y"] * eta - jnp.exp(eta)


def simulate_logit(rng, n, p, beta=None, b0=0.3):
    x = rng.normal(size=(n, p))
    beta = np.linspace(-0.5, 0.5, p) if beta is None else beta
    y = (rng.random(n) < 1 / (1 + np.exp(-(b0 + x @ beta)))).astype(float)
    return {"x": x, "y": y}


def simulate_normal(rng, n, p, sigma=1.5):
    x = np.column_stack([np.ones(n), rng.normal(size=(n, p - 1))])
    y = x @ np.linspace(1.0, -1.0, p) + sigma * rng.normal(size=n)
    return {"x": x, "y": y}
