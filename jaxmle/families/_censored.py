"""Censored and truncated versions of a distribution: Tobit, truncated regression, survival data.

Their parameters are the base distribution's. The Fisher information is the expectation of the score
outer product over what is observed, taken by Gauss-Legendre quadrature over the standardised
variable (`_base.expect_outer`) plus the point masses of the censored outcomes; it is available for the
location-scale bases Normal, LogNormal, Weibull and Exponential.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp

from ._base import Distribution, expect_outer, grad_params, require_location_scale

Array = jax.Array


class _Wrapped(Distribution):
    """A distribution built on `base` whose parameters are the base's (censored, truncated)."""

    base: eqx.AbstractVar[Distribution]

    @property
    def params(self):
        return self.base.params

    def parameters(self):
        return self.base.parameters()

    def with_parameters(self, eta):
        return dataclasses.replace(self, base=self.base.with_parameters(eta))


class Censored(_Wrapped):
    """y = min(max(y*, lower), upper), y* ~ base: Tobit is `Censored(Normal(x'b, s), lower=0.0)`.

    ln f(y) = ln F(lower) if y <= lower, ln S(upper) if y >= upper, else ln f_base(y). Limits are
    scalars or per-observation values (a limit of -inf / +inf censors nothing); None means none.
    Equals R `survival::survreg(Surv(y, y > lower, type = "left") ~ x, dist = "gaussian")` (Tobit).

    F = int_{lower}^{upper} s s' f + F(lower) s_L s_L' + S(upper) s_U s_U', with s_L, s_U the
    gradients of ln F(lower), ln S(upper) (Amemiya 1973 gives the Tobit case in closed form).
    """

    base: Distribution
    lower: Array | None = None
    upper: Array | None = None

    def logpdf(self, y):
        lp = self.base.logpdf(y)
        if self.lower is not None:
            below = y <= self.lower
            # evaluate the unused branch at a finite point, so that its gradient is not NaN
            lp = jnp.where(below, self.base.logcdf(jnp.where(below, self.lower, y)), lp)
        if self.upper is not None:
            above = y >= self.upper
            lp = jnp.where(above, self.base.logsf(jnp.where(above, self.upper, y)), lp)
        return lp

    def fisher(self):
        base = require_location_scale(self.base, "Censored")
        zl, zu = -jnp.inf, jnp.inf
        if self.lower is not None:
            zl = base.to_std(jnp.asarray(self.lower))
        if self.upper is not None:
            zu = base.to_std(jnp.asarray(self.upper))
        zl, zu = jnp.broadcast_arrays(jnp.asarray(zl), jnp.asarray(zu))
        info = expect_outer(base, zl, zu)
        if self.lower is not None:
            info = info + _point_mass(base, self.lower, zl, "logcdf")
        if self.upper is not None:
            info = info + _point_mass(base, self.upper, zu, "logsf")
        return info


def _point_mass(base, limit, z_limit, which):
    """P(censored) s s', s = d ln P / d eta; zero (not NaN) where the limit is infinite."""
    finite = jnp.isfinite(z_limit)
    safe = jnp.where(finite, limit, base.from_std(jnp.zeros_like(z_limit)))
    log_p = getattr(base, which)(safe)
    s = grad_params(base, lambda d: getattr(d, which)(safe))
    return jnp.where(finite, jnp.exp(log_p), 0.0) * jnp.outer(s, s)


class RightCensored(_Wrapped):
    """Survival time with an event indicator: ln f(t) if event, else ln S(t) (censored at t).

    `RightCensored(Weibull(shape=1/sigma, scale=exp(x'b)), event)` is R
    `survreg(Surv(time, event) ~ x, dist = "weibull")` on the time scale (its `loglik[2]`).

    The expected information depends on the censoring mechanism: it is defined here for type-I
    censoring, where every observation has a known potential censoring time `censor_time`
    (e.g. the end of follow-up); it then equals that of `Censored(base, upper=censor_time)`.
    Without `censor_time`, use `method="newton"` and `cov="hessian"`, as survreg does.
    """

    base: Distribution
    event: Array
    censor_time: Array | None = None

    def logpdf(self, t):
        return jnp.where(self.event > 0, self.base.logpdf(t), self.base.logsf(t))

    def fisher(self):
        if self.censor_time is None:
            raise ValueError(
                "RightCensored has no expected information without the censoring mechanism: give "
                "censor_time= (each observation's potential censoring time, type-I censoring), or "
                "fit with method='newton' and cov='hessian' (as survreg does)"
            )
        return Censored(self.base, upper=self.censor_time).fisher()


class Truncated(_Wrapped):
    """y ~ base restricted to lower < y < upper (rows outside are never observed).

    ln f(y) = ln f_base(y) - ln P(lower < Y < upper). Truncated regression (Stata `truncreg`) is
    `Truncated(Normal(x'b, s), lower=a)`.
    F = E_T[(s - g)(s - g)'], s the base score, g = d ln P / d eta, E_T over the truncated density.
    """

    base: Distribution
    lower: Array | None = None
    upper: Array | None = None

    def log_mass(self, base=None):
        """ln P(lower < Y < upper) under `base` (default: this one's)."""
        base = self.base if base is None else base
        if self.lower is None and self.upper is None:
            return jnp.zeros(())
        if self.upper is None:
            return base.logsf(self.lower)
        if self.lower is None:
            return base.logcdf(self.upper)
        # subtract in whichever tail keeps the digits
        lo_cdf, hi_cdf = base.logcdf(self.lower), base.logcdf(self.upper)
        lo_sf, hi_sf = base.logsf(self.lower), base.logsf(self.upper)
        by_cdf = hi_cdf + jnp.log1p(-jnp.exp(lo_cdf - hi_cdf))
        by_sf = lo_sf + jnp.log1p(-jnp.exp(hi_sf - lo_sf))
        return jnp.where(lo_sf < hi_cdf, by_sf, by_cdf)

    def logpdf(self, y):
        return self.base.logpdf(y) - self.log_mass()

    def fisher(self):
        base = require_location_scale(self.base, "Truncated")
        zl = -jnp.inf if self.lower is None else base.to_std(jnp.asarray(self.lower))
        zu = jnp.inf if self.upper is None else base.to_std(jnp.asarray(self.upper))
        zl, zu = jnp.broadcast_arrays(jnp.asarray(zl), jnp.asarray(zu))
        g = grad_params(base, self.log_mass)
        return expect_outer(base, zl, zu, center=g) / jnp.exp(self.log_mass())
