"""The distribution protocol, and the quadrature that censored and truncated versions share.

A `Distribution` is an immutable pytree (an `equinox.Module`) holding the parameters of the
distribution of ONE observation. It gives

    logpdf(y)     ln f(y | eta)                                  (a scalar)
    parameters()  eta, its own parameters as a flat (m,) vector (constants such as binomial trials
                  or censoring limits are fields too, but not parameters)
    fisher()      F(eta) = E[s s'] = -E[d^2 ln f / d eta d eta'],  s = d ln f(y | eta) / d eta   (m x m)

so that a model `predict(theta, obs) -> Distribution` has the expected information
I(theta) = sum_i w_i J_i' F(eta_i) J_i with J_i = d eta_i / d theta' by autodiff (docs/theory.md).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

# Gauss-Legendre rule for the expectations over an interval of the standardised variable z.
# The integrands (score outer products times a normal or extreme-value density) are entire
# functions on intervals of width <= 44: 128 nodes integrate them to ~1e-13 relative
# (tests/test_families.py checks against adaptive quadrature).
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(128)


class Distribution(eqx.Module):
    """Distribution of one observation, in its own parameters (see the module docstring).

    Subclasses list their parameter fields in `params` (a class attribute, in the order of
    `parameters()` and `fisher()`), and implement `logpdf` and `fisher`.
    """

    params: ClassVar[tuple[str, ...]] = ()

    def logpdf(self, y) -> jax.Array:
        raise NotImplementedError

    def fisher(self) -> jax.Array:
        raise NotImplementedError(
            f"{type(self).__name__} does not provide its Fisher information; fit with "
            "method='newton' and cov='hessian'"
        )

    def parameters(self) -> jax.Array:
        """eta = the parameter fields stacked into a (m,) vector, in `params` order."""
        return jnp.stack([jnp.asarray(getattr(self, name)) for name in self.params])

    def with_parameters(self, eta) -> Distribution:
        """The same distribution (constants kept) with parameters `eta` (m,)."""
        return dataclasses.replace(self, **{name: eta[i] for i, name in enumerate(self.params)})

    def score(self, y) -> jax.Array:
        """s = d ln f(y | eta) / d eta, (m,)."""
        return jax.grad(lambda eta: self.with_parameters(eta).logpdf(y))(self.parameters())


class LocationScale(Distribution):
    """A distribution of y with z = to_std(y) standardised, z ~ f0 (normal, min extreme value).

    Censored and truncated versions take their expectations over z with a Gauss-Legendre rule on
    an interval of width `z_range[1] - z_range[0]` where f0 holds all but ~1e-18 of its mass.
    """

    z_range: ClassVar[tuple[float, float]] = (-10.0, 10.0)

    def to_std(self, y):
        raise NotImplementedError

    def from_std(self, z):
        raise NotImplementedError

    def std_logpdf(self, z):
        raise NotImplementedError

    def logcdf(self, y):
        raise NotImplementedError

    def logsf(self, y):
        raise NotImplementedError


def interval_rule(zl, zu, z_range):
    """Nodes z_j and weights v_j with sum_j v_j g(z_j) ~ integral_{zl}^{zu} g(z) dz over the part of
    [zl, zu] where the standard density lives: [z_lo, z_hi] clipped to [zl, zu], or, when the interval
    lies beyond one end of it (a deep truncation), the first `z_hi - z_lo` of it from that end.
    """
    z_lo, z_hi = z_range
    span = z_hi - z_lo
    a = jnp.where(zl > z_lo, zl, jnp.where(zu < z_hi, jnp.maximum(zl, zu - span), z_lo))
    b = jnp.where(zl > z_lo, jnp.minimum(zu, zl + span), jnp.where(zu < z_hi, zu, z_hi))
    half = 0.5 * jnp.maximum(b - a, 0.0)
    nodes = jnp.asarray(_GL_NODES, half.dtype)
    weights = jnp.asarray(_GL_WEIGHTS, half.dtype)
    return 0.5 * (a + b) + half * nodes, half * weights


def expect_outer(base: LocationScale, zl, zu, center=None):
    """integral over zl < z < zu of (s - c)(s - c)' f0(z) dz, s the score of `base` at y(z)."""
    z, v = interval_rule(zl, zu, base.z_range)
    y = base.from_std(z)
    v = v * jnp.exp(base.std_logpdf(z))
    s = jax.vmap(base.score)(y)
    if center is not None:
        s = s - center
    out = (s * v[:, None]).T @ s
    return 0.5 * (out + out.T)


def grad_params(dist: Distribution, fn):
    """d fn(dist') / d eta at eta = dist.parameters(), dist' = dist.with_parameters(eta)."""
    return jax.grad(lambda eta: fn(dist.with_parameters(eta)))(dist.parameters())


def require_location_scale(base, wrapper: str) -> LocationScale:
    if not isinstance(base, LocationScale):
        raise NotImplementedError(
            f"the Fisher information of {wrapper}({type(base).__name__}) is not implemented "
            "(only for Normal, LogNormal, Weibull and Exponential bases); fit with "
            "method='newton' and cov='hessian'"
        )
    return base
