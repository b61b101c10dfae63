"""Link functions eta = g(mu) of generalised linear models, with R's names.

Each link gives g (`linkfun`), g^-1 (`linkinv`) and, for the binomial family, the log-odds of
mu = g^-1(eta) computed without forming mu (`logits`), so that fitted probabilities near 0 or 1 keep
their digits. d mu / d eta comes from autodiff wherever it is needed.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax.scipy.special import log_ndtr, ndtr, ndtri


@jax.custom_jvp
def log1pexp(x):
    """ln(1 + e^x) (softplus) = max(x, 0) + ln(1 + e^-|x|), exact for every x; its derivative, the
    logistic p = 1/(1 + e^-x), comes from the same e^-|x|, and autodiff of that gives p (1 - p) without
    cancellation in either tail. `jnp.logaddexp(0, x)` is the same function, but its NaN/inf branches
    and their derivatives cost more: a logit log-density written `y * eta - log1pexp(eta)` fits ~6%
    faster at N = 1e6 and gives ~40% more fits per second in vmapped small fits on a CPU."""
    return _log1pexp_and_exp(x)[0]


def _log1pexp_and_exp(x):
    e = jnp.exp(-jnp.abs(x))
    return jnp.maximum(x, 0.0) + jnp.log1p(e), e


@log1pexp.defjvp
def _log1pexp_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    value, e = _log1pexp_and_exp(x)
    return value, jnp.where(x >= 0, 1.0, e) / (1.0 + e) * t


@dataclasses.dataclass(frozen=True)
class Link:
    """A link by name; R's `make.link(name)`. Custom links: subclass and override the methods."""

    name: str

    def linkfun(self, mu):
        raise NotImplementedError

    def linkinv(self, eta):
        raise NotImplementedError

    def logits(self, eta):
        """ln(mu / (1 - mu)) at mu = linkinv(eta) (binomial family)."""
        mu = self.linkinv(eta)
        return jnp.log(mu) - jnp.log1p(-mu)

    def valid_mean(self, mu):
        """Host-side: can linkfun take these means (used for start values)?"""
        return True


class Identity(Link):
    def linkfun(self, mu):
        return mu

    def linkinv(self, eta):
        return eta


class Log(Link):
    def linkfun(self, mu):
        return jnp.log(mu)

    def linkinv(self, eta):
        return jnp.exp(eta)

    def logits(self, eta):
        return eta - jnp.log(-jnp.expm1(eta))

    def valid_mean(self, mu):
        return bool((mu > 0).all())


class Logit(Link):
    def linkfun(self, mu):
        return jnp.log(mu) - jnp.log1p(-mu)

    def linkinv(self, eta):
        return jax.nn.sigmoid(eta)

    def logits(self, eta):
        return eta


class Probit(Link):
    def linkfun(self, mu):
        return ndtri(mu)

    def linkinv(self, eta):
        return ndtr(eta)

    def logits(self, eta):
        return log_ndtr(eta) - log_ndtr(-eta)


class CLogLog(Link):
    """eta = ln(-ln(1 - mu)), mu = 1 - exp(-exp(eta))."""

    def linkfun(self, mu):
        return jnp.log(-jnp.log1p(-mu))

    def linkinv(self, eta):
        return -jnp.expm1(-jnp.exp(eta))

    def logits(self, eta):
        return jnp.log(-jnp.expm1(-jnp.exp(eta))) + jnp.exp(eta)


class Cauchit(Link):
    def linkfun(self, mu):
        return jnp.tan(math.pi * (mu - 0.5))

    def linkinv(self, eta):
        return 0.5 + jnp.arctan(eta) / math.pi


class Inverse(Link):
    def linkfun(self, mu):
        return 1.0 / mu

    def linkinv(self, eta):
        return 1.0 / eta

    def valid_mean(self, mu):
        return bool((mu != 0).all())


class Sqrt(Link):
    def linkfun(self, mu):
        return jnp.sqrt(mu)

    def linkinv(self, eta):
        return jnp.square(eta)


LINKS = {
    "identity": Identity("identity"),
    "log": Log("log"),
    "logit": Logit("logit"),
    "probit": Probit("probit"),
    "cloglog": CLogLog("cloglog"),
    "cauchit": Cauchit("cauchit"),
    "inverse": Inverse("inverse"),
    "sqrt": Sqrt("sqrt"),
}


def get_link(link) -> Link:
    """A `Link` from R's name ("logit", "probit", "cloglog", "log", "identity", "inverse", ...)."""
    if isinstance(link, Link):
        return link
    if isinstance(link, str) and link in LINKS:
        return LINKS[link]
    raise ValueError(f"unknown link {link!r}; choose one of {tuple(LINKS)} or pass a Link object")
