"""Truncated Newton ("newton-cg"): the Newton step (-H) d = U solved by preconditioned conjugate
gradients on information-vector products (forward-over-reverse autodiff), never forming H.

Each iteration is one (lnL, U) pass at the trial point (`_ascent` line search) and, once accepted,
CG steps of one product pass each. CG stops at the relative residual eta = min(0.1, sqrt(U'M^-1 U))
in the M^-1 norm (an Eisenstat-Walker forcing term: loose far from the maximum, tight near it, so
the final steps are Newton steps and convergence is superlinear), at `max_cg` steps, or where it
meets non-positive curvature p'(-H)p <= 0 (lnL not concave there): it then returns its last
iterate, or the preconditioned gradient M^-1 U if that is the first, an ascent direction either
way; such iterations are counted as damped. M is the positive diagonal preconditioner (the
fixed-effects block diagonal under `index=`, else 1); entries with M^-1 = 0 are held (reference
or dropped levels). The convergence test is Newton's, U'd < tol, with d the CG solution.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._ascent import AscentState, ascend
from ._hessian_free import information_product, pcg
from ._objective import Objective

_MAX_FORCING = 0.1
_MIN_FORCING = 1e-12


def newton_cg(
    obj: Objective,
    theta0: jax.Array,
    inv_diag: jax.Array,
    *,
    max_iter: int,
    tol: float,
    max_cg: int,
    compute_dtype=None,
) -> AscentState:
    """Maximise lnL from theta0 (free parameters) by truncated Newton; see the module docstring."""

    def evaluate(theta):
        terms = obj.loglik_grad(theta)
        return terms.loglik, terms.score, None

    def direction(theta, score, _, carry):
        product = information_product(obj, theta)
        gradient = inv_diag * score
        forcing = jnp.clip(jnp.sqrt(jnp.abs(score @ gradient)), _MIN_FORCING, _MAX_FORCING)
        cg = pcg(product, score[:, None], inv_diag, rtol=forcing, max_steps=max_cg)
        d = cg.x[:, 0]
        d = jnp.where(jnp.all(d == 0), gradient, d)
        return d, cg.negative[0], carry

    return ascend(
        evaluate, direction, theta0, None, max_iter=max_iter, tol=tol, compute_dtype=compute_dtype
    )
