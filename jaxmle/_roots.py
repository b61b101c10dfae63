"""Newton's method for a system of estimating equations Psi(theta) = 0, in one `lax.while_loop`.

    step        Delta_k = -J_k^-1 Psi(theta_k),   J = dPsi/dtheta' (autodiff, not symmetric)
    damping     theta_k + t Delta_k is accepted when the simplified Newton correction there,
                Delta_bar = -J_k^-1 Psi(theta_k + t Delta_k), is shorter than (1 - t/4) |Delta_k|:
                Deuflhard's natural monotonicity test (NLEQ-ERR). It is affine invariant: a linear
                recombination of the equations (a ratio written as t1 - t3 t2 = 0 or t3 = t1/t2)
                changes nothing, where a merit |Psi|^2 would be dominated by badly scaled equations.
                Otherwise t is halved.
    norm        |Delta|^2 = sum_j (Delta_j / s_j)^2, s_j the standard error of theta_j from the
                sandwich J^-1 B J^-T at theta_k (floored at 1e-8 max(1, |theta_j|)): steps are
                measured in standard errors, whatever the units of the parameters.
    convergence |Delta_k|^2 < tol (1e-12: within 1e-6 standard errors; Newton's quadratic
                convergence usually puts the estimate far inside).

One evaluation (Psi, J and B in one pass over the data) per pass of the loop, as `_solvers.maximize`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

_MAX_HALVINGS = 40
_SE_FLOOR = 1e-8


class RootState(NamedTuple):
    theta: jax.Array
    value: jax.Array  # Psi at theta
    jac: jax.Array  # J at theta
    outer: jax.Array  # B at theta
    scale: jax.Array  # s_j
    delta: jax.Array  # the Newton step from theta
    decrement: jax.Array  # |delta|^2 in the scaled norm
    t: jax.Array  # the damping factor being tried
    n_iter: jax.Array
    n_halvings: jax.Array
    started: jax.Array
    failed_start: jax.Array
    failed_search: jax.Array


def _scale(theta, jac, outer):
    inv = jnp.linalg.inv(jac)
    var = jnp.diagonal(inv @ outer @ inv.T)
    floor = _SE_FLOOR * jnp.maximum(1.0, jnp.abs(theta))
    return jnp.maximum(jnp.sqrt(jnp.maximum(var, 0.0)), floor)


def solve_roots(
    evaluate: Callable[[jax.Array], tuple[jax.Array, jax.Array, jax.Array]],
    theta0: jax.Array,
    *,
    max_iter: int,
    tol: float,
) -> RootState:
    """Newton from theta0; `evaluate(theta) -> (Psi, J, B)`."""
    k, dt = theta0.shape[0], theta0.dtype

    def norm2(x, scale):
        return jnp.sum((x / scale) ** 2)

    state = RootState(
        theta=theta0, value=jnp.zeros(k, dt), jac=jnp.eye(k, dtype=dt), outer=jnp.eye(k, dtype=dt),
        scale=jnp.ones(k, dt), delta=jnp.zeros(k, dt), decrement=jnp.asarray(jnp.inf, dt),
        t=jnp.zeros((), dt), n_iter=jnp.asarray(0), n_halvings=jnp.asarray(0),
        started=jnp.asarray(False), failed_start=jnp.asarray(False),
        failed_search=jnp.asarray(False),
    )  # fmt: skip

    def cond(st):
        running = (st.decrement > tol) & (st.n_iter < max_iter) & jnp.isfinite(st.decrement)
        return ~st.started | (running & ~st.failed_start & ~st.failed_search)

    def body(st):
        trial = st.theta + st.t * st.delta
        value, jac, outer = evaluate(trial)
        finite = jnp.all(jnp.isfinite(value)) & jnp.all(jnp.isfinite(jac))
        # the simplified Newton correction at the trial point, with the old Jacobian
        bar = -jnp.linalg.solve(st.jac, value)
        monotone = norm2(bar, st.scale) <= (1.0 - 0.25 * st.t) ** 2 * st.decrement
        small = norm2(bar, st.scale) <= tol  # at the root already: nothing left to test
        accept = finite & (~st.started | monotone | small)
        scale = _scale(trial, jac, outer)
        delta = -jnp.linalg.solve(jac, value)
        accepted = st._replace(
            theta=trial, value=value, jac=jac, outer=outer, scale=scale, delta=delta,
            decrement=norm2(delta, scale), t=jnp.ones((), dt),
            n_iter=st.n_iter + st.started.astype(st.n_iter.dtype), n_halvings=jnp.asarray(0),
            started=jnp.asarray(True),
        )  # fmt: skip
        rejected = st._replace(
            t=0.5 * st.t,
            n_halvings=st.n_halvings + 1,
            started=jnp.asarray(True),
            failed_start=~st.started,
            failed_search=st.started & (st.n_halvings + 1 >= _MAX_HALVINGS),
        )
        return jax.tree.map(lambda a, r: jnp.where(accept, a, r), accepted, rejected)

    return lax.while_loop(cond, body, state)
