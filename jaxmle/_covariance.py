"""Covariance of theta_hat from the information matrix A = -H and score outer products (theory.md).

All evaluated at theta_hat, in `ravel_pytree(init)` order, with no N/(N-k) factor:

    hessian   A^-1                                 R `vcov(glm)` (canonical link), Stata `ml` default (OIM)
    expected  I^-1, I = sum_i w_i J_i' F(eta_i) J_i  R `vcov(glm)` (any link, dispersion 1), Stata `glm`
    opg       (sum_i w_i u_i u_i')^-1              Stata `vce(opg)`, R `maxLik(method = "BHHH")`
    sandwich  A^-1 B A^-1,  B = sum_i c_i u_i u_i'  HC0: R `sandwich::sandwich(m)`, Stata `vce(robust)`
                                                   without its N/(N-1) factor
    cluster   A^-1 B_c A^-1 G/(G-1),  B_c = sum_g s_g s_g',  s_g = sum_{i in g} w_i u_i
                                                   R `sandwich::vcovCL(m, cluster = g, type = "HC0",
                                                   cadjust = TRUE)`, Stata `vce(cluster g)`

Inverses go through the equilibrated eigen-decomposition, S A S with S = diag(A)^-1/2, so a covariate
measured in thousands next to one in thousandths does not look singular. A matrix whose smallest
equilibrated eigenvalue is below `RCOND` times its largest has no usable inverse: the covariance is
NaN and `inverse_status` says whether A was not positive definite (H not negative definite: not a
maximum) or merely singular (an unidentified direction).
"""

from __future__ import annotations

import jax.numpy as jnp

from ._results import Status
from ._solvers import equilibrated_eigh

KINDS = ("hessian", "expected", "opg", "sandwich", "cluster")
# Equilibrated condition numbers beyond 1/RCOND leave fewer than ~4 correct digits in float64 SEs.
RCOND = 1e-12


def psd_inverse(a, decomposition=None):
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


def covariance(
    kind: str, information, opg, meat, score_groups, expected=None, information_eig=None
):
    """(cov, status) of one kind from the stored matrices; see the module docstring."""
    if kind == "expected":
        if expected is None:
            raise ValueError(
                "cov='expected' needs the model's expected information: pass "
                "expected=(predict, fisher) to fit (or fit a family model)"
            )
        cov, status = psd_inverse(expected)
        return _symmetric(cov), status
    if kind == "opg":
        cov, status = psd_inverse(opg)
        # an outer product cannot be indefinite: a negative eigenvalue here is rounding of a zero one
        status = jnp.where(status == Status.NOT_CONCAVE, Status.SINGULAR_INFORMATION, status)
        return _symmetric(cov), status
    bread, status = psd_inverse(information, information_eig)
    if kind == "hessian":
        cov = bread
    elif kind == "sandwich":
        cov = bread @ meat @ bread
    elif kind == "cluster":
        n_groups = score_groups.shape[0]
        cov = n_groups / (n_groups - 1) * bread @ (score_groups.T @ score_groups) @ bread
    else:
        raise ValueError(f"unknown covariance kind {kind!r}; choose one of {KINDS}")
    return _symmetric(cov), status


def _symmetric(c):
    """The matrix mirrored from its upper triangle: exactly symmetric, whatever XLA's FMA contraction
    does to 0.5 (C + C') element by element."""
    return jnp.triu(c) + jnp.triu(c, 1).T
