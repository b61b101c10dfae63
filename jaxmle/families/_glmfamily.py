"""GLM families: a distribution of the response given its mean mu = g^-1(eta), with R's conventions.

Each family says how R's prior weights w_i enter (binomial: trials, so y_i is a proportion of w_i;
gaussian: precision, Var y_i = sigma^2 / w_i; poisson, Gamma and negative binomial: frequency, w_i ln f),
its variance function V(mu), unit deviance, start values (R's `family$initialize`) and the name of its
extra parameter (gaussian "scale" = sigma, Gamma "shape", negative binomial "theta").
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp
import numpy as np
from jax.scipy.special import polygamma, xlogy

from ._base import Distribution
from ._distributions import Binomial, Gamma, NegativeBinomial, Normal, Poisson
from ._links import LINKS, Link, get_link


@dataclasses.dataclass(frozen=True)
class GLMFamily:
    """A GLM family with its link; R's `binomial(link = "probit")` is `glm_family("binomial", "probit")`."""

    link: Link
    name: ClassVar[str] = ""
    canonical: ClassVar[str] = ""
    links: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str | None] = None  # name of the extra parameter, if any
    weight_role: ClassVar[str] = "frequency"  # "frequency" | "trials" | "precision"
    has_dispersion: ClassVar[bool] = False  # R's summary estimates a dispersion (Pearson)

    # ---- in JAX, one observation ----
    def distribution(self, eta, extra, w, y) -> Distribution:
        raise NotImplementedError

    def response(self, y, w):
        """The value the distribution's logpdf sees (binomial: successes w*y)."""
        return y

    def mean(self, eta):
        return self.link.linkinv(eta)

    def variance(self, mu, extra):
        raise NotImplementedError

    def unit_deviance(self, y, mu, extra):
        raise NotImplementedError

    def phi_mle(self, extra):
        """The dispersion phi implied by the ML extra parameter (Var y = phi V(mu) / w)."""
        return jnp.ones(())

    # ---- on the host, numpy ----
    def check_response(self, y: np.ndarray, w: np.ndarray, name: str) -> None:
        pass

    def mustart(self, y, w):
        return y

    def extra_start(self, y, mu, w, df_resid):
        return None


def _bad(name, family, what, y, mask):
    rows = np.flatnonzero(mask)
    raise ValueError(
        f"the response {name!r} has {rows.size} value(s) outside the support of the {family} "
        f"family ({what}), first {y[rows[0]]!r} at row {rows[0]}"
    )


class GaussianFamily(GLMFamily):
    name = "gaussian"
    canonical = "identity"
    links = ("identity", "log", "inverse")
    extra = "scale"
    weight_role = "precision"
    has_dispersion = True

    def distribution(self, eta, extra, w, y):
        return Normal(self.mean(eta), extra / jnp.sqrt(w))

    def variance(self, mu, extra):
        return jnp.ones_like(mu)

    def unit_deviance(self, y, mu, extra):
        return jnp.square(y - mu)

    def phi_mle(self, extra):
        return jnp.square(extra)

    def mustart(self, y, w):
        if self.link.name in ("log", "inverse") and not (y > 0).all():
            return np.full_like(y, max(np.average(y, weights=w), 1e-8))
        return y

    def extra_start(self, y, mu, w, df_resid):
        return max(float(np.sqrt(np.sum(w * (y - mu) ** 2) / y.size)), 1e-8 * (np.std(y) + 1.0))


class BinomialFamily(GLMFamily):
    """y = proportion of successes, w = trials (R's prior weights); 0/1 y without weights."""

    name = "binomial"
    canonical = "logit"
    links = ("logit", "probit", "cloglog", "cauchit", "log")
    weight_role = "trials"

    def distribution(self, eta, extra, w, y):
        return Binomial(w, logits=self.link.logits(eta))

    def response(self, y, w):
        return w * y

    def variance(self, mu, extra):
        return mu * (1.0 - mu)

    def unit_deviance(self, y, mu, extra):
        return 2.0 * (
            xlogy(y, y) - xlogy(y, mu) + xlogy(1.0 - y, 1.0 - y) - xlogy(1.0 - y, 1.0 - mu)
        )

    def check_response(self, y, w, name):
        _check_finite_response(y, name)
        bad = (y < 0) | (y > 1)
        if bad.any():
            _bad(
                name,
                "binomial",
                "proportions in [0, 1]; counts go in as y/n with weights=n",
                y,
                bad,
            )

    def mustart(self, y, w):
        return (w * y + 0.5) / (w + 1.0)


class PoissonFamily(GLMFamily):
    name = "poisson"
    canonical = "log"
    links = ("log", "identity", "sqrt")

    def distribution(self, eta, extra, w, y):
        return Poisson(self.mean(eta))

    def variance(self, mu, extra):
        return mu

    def unit_deviance(self, y, mu, extra):
        return 2.0 * (xlogy(y, y) - xlogy(y, mu) - (y - mu))

    def check_response(self, y, w, name):
        _check_finite_response(y, name)
        if (y < 0).any():
            _bad(name, "poisson", "counts >= 0", y, y < 0)

    def mustart(self, y, w):
        return y + 0.1


class GammaFamily(GLMFamily):
    """Gamma(shape w k, rate w k / mu): Var y = mu^2 / (w k), dispersion phi = 1/k.

    Prior weights are precisions, as in the GLM's Var y = phi V(mu) / w and in MASS::gamma.shape
    (R's `logLik(glm)` instead weights ln f by w, and plugs in phi = deviance / n, not the MLE).
    """

    name = "gamma"
    canonical = "inverse"
    links = ("inverse", "log", "identity")
    extra = "shape"
    weight_role = "precision"
    has_dispersion = True

    def distribution(self, eta, extra, w, y):
        shape = w * extra
        return Gamma(shape, shape / self.mean(eta))

    def variance(self, mu, extra):
        return jnp.square(mu)

    def unit_deviance(self, y, mu, extra):
        return -2.0 * (jnp.log(y / mu) - (y - mu) / mu)

    def phi_mle(self, extra):
        return 1.0 / extra

    def check_response(self, y, w, name):
        _check_finite_response(y, name)
        if (y <= 0).any():
            _bad(name, "gamma", "values > 0", y, y <= 0)

    def extra_start(self, y, mu, w, df_resid):
        phi = np.sum(w * ((y - mu) / mu) ** 2) / max(df_resid, 1)
        return 1.0 / max(float(phi), 1e-8)


@dataclasses.dataclass(frozen=True)
class NegativeBinomialFamily(GLMFamily):
    """NB2(mu, theta), Var y = mu + mu^2/theta: MASS::glm.nb. `observed_theta=True` scores theta with
    its observed information at fixed mu, as glm.nb's `theta.ml` does (its `SE.theta`)."""

    name = "negative_binomial"
    canonical = "log"
    links = ("log", "sqrt", "identity")
    extra = "theta"
    observed_theta: bool = False

    def distribution(self, eta, extra, w, y):
        mu = self.mean(eta)
        if self.observed_theta:
            return _NegativeBinomialObservedTheta(mu, extra, y)
        return NegativeBinomial(mu, extra)

    def variance(self, mu, extra):
        return mu + jnp.square(mu) / extra

    def unit_deviance(self, y, mu, extra):
        return 2.0 * (
            xlogy(y, y) - xlogy(y, mu) - (y + extra) * jnp.log((y + extra) / (mu + extra))
        )

    def check_response(self, y, w, name):
        PoissonFamily.check_response(self, y, w, name)

    def mustart(self, y, w):
        return y + 0.1

    def extra_start(self, y, mu, w, df_resid):
        # MASS::theta.ml's start: n / sum(w (y/mu - 1)^2)
        return float(np.sum(w) / max(np.sum(w * (y / mu - 1.0) ** 2), 1e-8))


class _NegativeBinomialObservedTheta(NegativeBinomial):
    """NB2 whose theta information is the observed -d^2 ln f / d theta^2 at y (MASS's `info`)."""

    y: jnp.ndarray = None

    def fisher(self):
        mu, th, y = self.mean, self.theta, self.y
        f_mm = th / (mu * (mu + th))
        f_tt = (
            -polygamma(1, th + y)
            + polygamma(1, th)
            - 1.0 / th
            + 2.0 / (mu + th)
            - (y + th) / jnp.square(mu + th)
        )
        zero = jnp.zeros_like(f_mm)
        return jnp.array([[f_mm, zero], [zero, f_tt]])


def _check_finite_response(y, name):
    bad = ~np.isfinite(y)
    if bad.any():
        _bad(name, "GLM", "finite numbers", y, bad)


FAMILIES = {
    "gaussian": GaussianFamily,
    "binomial": BinomialFamily,
    "poisson": PoissonFamily,
    "gamma": GammaFamily,
    "negative_binomial": NegativeBinomialFamily,
}
_ALIASES = {
    "normal": "gaussian",
    "negative.binomial": "negative_binomial",
    "negbin": "negative_binomial",
}
_BY_DISTRIBUTION = {
    Normal: "gaussian",
    Binomial: "binomial",
    Poisson: "poisson",
    Gamma: "gamma",
    NegativeBinomial: "negative_binomial",
}


def glm_family(family="gaussian", link=None) -> GLMFamily:
    """A GLM family from R's name (or a distribution class, or a GLMFamily) and a link name.

    family: "gaussian" | "binomial" | "poisson" | "gamma" (R's "Gamma") | "negative_binomial";
    link: R's link names, the family's canonical link by default (identity, logit, log, inverse, log).
    """
    if isinstance(family, GLMFamily):
        if link is None:
            return family
        family = family.name
    if isinstance(family, type) and issubclass(family, Distribution):
        from ._distributions import Bernoulli

        if family is Bernoulli:
            family = Binomial
        if family not in _BY_DISTRIBUTION:
            raise ValueError(
                f"{family.__name__} is not a GLM family; choose one of {tuple(FAMILIES)}"
            )
        family = _BY_DISTRIBUTION[family]
    if not isinstance(family, str):
        raise TypeError(f"family must be a string or a GLM family, got {type(family).__name__}")
    key = family.lower().replace(" ", "_")
    key = _ALIASES.get(key, key)
    if key not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {tuple(FAMILIES)}")
    cls = FAMILIES[key]
    link = get_link(cls.canonical if link is None else link)
    if link.name in LINKS and link.name not in cls.links:  # custom Link objects: the user's call
        raise ValueError(
            f"link {link.name!r} is not available for the {cls.name} family; choose one of {cls.links}"
        )
    return cls(link)
