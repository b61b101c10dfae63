"""Covariance of theta_hat: one registry entry per kind (docs/theory.md, "Covariance kinds").

Every kind is computed from `Pieces`, the sums a fit stores over its free parameters, evaluated at
theta_hat in `ravel_pytree(init)` order; A = -H is the observed information, u_i the score of
observation i, w_i its weight:

    hessian   A^-1                                 R `vcov(glm)` (canonical link), Stata `ml` default (OIM)
    expected  I^-1, I = sum_i w_i J_i' F(eta_i) J_i  R `vcov(glm)` (any link, dispersion 1), Stata `glm`
    opg       (sum_i w_i u_i u_i')^-1              Stata `vce(opg)`, R `maxLik(method = "BHHH")`
    sandwich  A^-1 B A^-1,  B = sum_i c_i u_i u_i'  HC0: R `sandwich::sandwich(m)`, Stata `vce(robust)`
                                                   without its N/(N-1) factor
    cluster   A^-1 B_c A^-1 G/(G-1),  B_c = sum_g s_g s_g',  s_g = sum_{i in g} w_i u_i
                                                   R `sandwich::vcovCL(m, cluster = g, type = "HC0",
                                                   cadjust = TRUE)`, Stata `vce(cluster g)`

A kind is a `CovKind`: its label, what it needs beyond the always-stored pieces ("groups",
"expected"), the keyword options it takes, and its formula. Adding a kind is one entry in a registry
(`KINDS` here; a result class may extend it, as GEE's naive covariance does), read by `fit`, by
`FitResult.covariance`/`with_cov`, by the tests in `_inference` and by `monte_carlo`: `check_kind`
is the one place that says what a kind is missing.

Inverses go through the equilibrated eigen-decomposition, S A S with S = diag(A)^-1/2, so a covariate
measured in thousands next to one in thousandths does not look singular. A matrix whose smallest
equilibrated eigenvalue is below `RCOND` times its largest has no usable inverse: the covariance is
NaN and the status says whether A was not positive definite (H not negative definite: not a maximum)
or merely singular (an unidentified direction).
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._solvers import equilibrated_eigh
from ._status import Status

# Equilibrated condition numbers beyond 1/RCOND leave fewer than ~4 correct digits in float64 SEs.
RCOND = 1e-12


class Pieces(NamedTuple):
    """The sums every covariance kind is computed from (free-parameter blocks, at theta_hat).

    information   A = -H                         k x k
    opg           sum_i w_i u_i u_i'             k x k
    meat          sum_i c_i u_i u_i' (c_i = w_i, or w_i^2 for sampling weights)
    score_groups  s_g = sum_{i in g} w_i u_i     G x k (0 x k without groups)
    expected      I(theta_hat)                   k x k (NaN without expected=)
    n_obs         N (the sum of frequency weights)
    """

    information: jax.Array
    opg: jax.Array
    meat: jax.Array
    score_groups: jax.Array
    expected: jax.Array
    n_obs: jax.Array

    @property
    def n_params(self) -> int:
        return self.information.shape[-1]


Bread = tuple[jax.Array, jax.Array]  # (A^-1, status of the inverse)


@dataclasses.dataclass(frozen=True)
class CovKind:
    """One covariance kind: `formula(pieces, bread, **options) -> (cov, status)`.

    `needs` names what the kind requires beyond the always-stored pieces: "groups" (cluster ids at
    fit time) or "expected" (the model's expected information); `options` the keyword options it
    takes (`res.with_cov(kind, **options)`).
    """

    name: str
    label: str
    formula: Callable[..., tuple[jax.Array, jax.Array]]
    needs: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


NEEDS = {
    "groups": "cluster ids: fit with groups=<(N,) labels>",
    "independent_groups": (
        "independent groups: one grouping factor (with crossed or nested factors the Laplace "
        "approximation couples the groups, so there are no per-group scores)"
    ),
    "expected": (
        "the model's expected information: pass expected=(predict, fisher) to fit, "
        "or fit a families model"
    ),
}


def psd_inverse(a, decomposition=None) -> Bread:
    """(A^-1, status): NaN and a failure status when A is not safely positive definite.

    `decomposition` is `equilibrated_eigh(a)` when the caller has it already (the solver does).
    """
    s, lam, vec = equilibrated_eigh(a) if decomposition is None else decomposition
    top = jnp.max(jnp.abs(lam))
    low = jnp.min(lam)
    ok = (low > RCOND * top) & jnp.all(jnp.isfinite(lam))
    inv = s[:, None] * ((vec / jnp.where(ok, lam, 1.0)) @ vec.T) * s[None, :]
    status = jnp.where(
        ok,
        Status.SUCCESSFUL,
        jnp.where(low < -RCOND * top, Status.NOT_CONCAVE, Status.SINGULAR_INFORMATION),
    )
    return jnp.where(ok, inv, jnp.nan), status


def symmetric(c):
    """The matrix mirrored from its upper triangle: exactly symmetric, whatever XLA's FMA contraction
    does to 0.5 (C + C') element by element."""
    return jnp.triu(c) + jnp.triu(c, 1).T


def sandwich(bread: Bread, meat) -> tuple[jax.Array, jax.Array]:
    """(A^-1 B A^-1, status of A^-1)."""
    inv, status = bread
    return inv @ meat @ inv, status


def _opg(p: Pieces, bread: Bread):
    cov, status = psd_inverse(p.opg)
    # an outer product cannot be indefinite: a negative eigenvalue here is rounding of a zero one
    return cov, jnp.where(status == Status.NOT_CONCAVE, Status.SINGULAR_INFORMATION, status)


def _cluster(p: Pieces, bread: Bread):
    g = p.score_groups.shape[0]
    cov, status = sandwich(bread, p.score_groups.T @ p.score_groups)
    return g / (g - 1) * cov, status


KINDS: Mapping[str, CovKind] = types.MappingProxyType(
    {
        k.name: k
        for k in (
            CovKind("hessian", "observed information (OIM)", lambda p, bread: bread),
            CovKind(
                "expected",
                "expected information (EIM)",
                lambda p, bread: psd_inverse(p.expected),
                needs=("expected",),
            ),
            CovKind("opg", "outer product of gradients (OPG)", _opg),
            CovKind("sandwich", "robust sandwich (HC0)", lambda p, bread: sandwich(bread, p.meat)),
            CovKind("cluster", "cluster-robust sandwich, G/(G-1)", _cluster, needs=("groups",)),
        )
    }
)


def check_kind(
    kinds: Mapping[str, CovKind],
    kind: str,
    *,
    has: Mapping[str, bool],
    options: Mapping | None = None,
) -> CovKind:
    """The registry entry of `kind`, or a plain error saying what is unknown or missing.

    `has` says which needs the fit can meet ({"groups": ..., "expected": ...}); called on the host
    before any work by everything that takes a `cov=`.
    """
    if not isinstance(kind, str) or kind not in kinds:
        raise ValueError(f"unknown cov {kind!r}; choose one of {tuple(kinds)}")
    entry = kinds[kind]
    for need in entry.needs:
        if not has.get(need, False):
            raise ValueError(f"cov={kind!r} needs {NEEDS.get(need, need)}")
    unknown = sorted(set(options or ()) - set(entry.options))
    if unknown:
        takes = f"it takes {entry.options}" if entry.options else "it takes no options"
        raise TypeError(f"cov={kind!r} got unknown option(s) {unknown}; {takes}")
    return entry


def covariance(
    entry: CovKind, pieces: Pieces, information_eig=None, **options
) -> tuple[jax.Array, jax.Array]:
    """(cov, status) of one kind over the free block; `information_eig` is the solver's
    `equilibrated_eigh(information)` when it has one (one decomposition serves every bread)."""
    bread = psd_inverse(pieces.information, information_eig)
    cov, status = entry.formula(pieces, bread, **options)
    return symmetric(cov), status
