"""The Newton-type loop of the drivers that never form a k x k matrix: a line search on lnL around a
pluggable direction (truncated Newton by CG, `_newton_cg`; Newton with the fixed effects eliminated,
`_fixed_effects`).

Each pass evaluates the objective once at a trial point theta + t d and either accepts it (then the
direction is computed there: d solves (-H) d = U, exactly or approximately, and t = 1) or halves t
(Armijo backtracking on lnL), as `_solvers.maximize` does for the dense methods, with the same
convergence rule: the scaled gradient U'd (about twice the lnL still to gain) below `tol`, or the
rounding floor of lnL reached. The direction is computed under `lax.cond`, so a rejected trial
costs one evaluation only (under `vmap` both branches run, as everything does there).

`evaluate(theta) -> (loglik, score, curvature)`; `direction(theta, score, curvature, carry) ->
(d, damped, carry)`, where `carry` is the driver's own state between iterations (a warm start, the
last solve) and `damped` flags a direction that is not a Newton step (negative curvature met).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ._solvers import _ARMIJO, _MAX_HALVINGS, _ROUNDOFF_ULPS, _STALL


class AscentState(NamedTuple):
    theta: jax.Array
    loglik: jax.Array
    score: jax.Array
    direction: jax.Array
    decrement: jax.Array  # U'd, the scaled gradient
    step: jax.Array
    n_iter: jax.Array
    n_halvings: jax.Array
    n_damped: jax.Array
    started: jax.Array
    failed_start: jax.Array
    failed_search: jax.Array
    at_floor: jax.Array
    carry: Any


def ascend(
    evaluate: Callable,
    direction: Callable,
    theta0: jax.Array,
    carry0: Any,
    *,
    max_iter: int,
    tol: float,
    compute_dtype=None,
) -> AscentState:
    """Maximise lnL from theta0 along `direction`, with backtracking; see the module docstring."""
    dtype = theta0.dtype
    k = theta0.shape[0]
    false = jnp.asarray(False)
    state = AscentState(
        theta=theta0,
        loglik=jnp.asarray(-jnp.inf, dtype),
        score=jnp.zeros(k, dtype),
        direction=jnp.zeros(k, dtype),
        decrement=jnp.asarray(jnp.inf, dtype),
        step=jnp.zeros((), dtype),
        n_iter=jnp.asarray(0),
        n_halvings=jnp.asarray(0),
        n_damped=jnp.asarray(0),
        started=false,
        failed_start=false,
        failed_search=false,
        at_floor=false,
        carry=carry0,
    )

    def cond(st):
        running = (st.decrement > tol) & (st.n_iter < max_iter) & jnp.isfinite(st.decrement)
        return ~st.started | (running & ~st.failed_start & ~st.failed_search & ~st.at_floor)

    def body(st):
        trial = st.theta + st.step * st.direction
        loglik, score, curvature = evaluate(trial)
        finite = jnp.isfinite(loglik) & jnp.all(jnp.isfinite(score))
        slack = _ROUNDOFF_ULPS * jnp.finfo(compute_dtype or dtype).eps * jnp.abs(st.loglik)
        gain_needed = _ARMIJO * st.step * st.decrement - slack
        accept = finite & (~st.started | (loglik - st.loglik >= gain_needed))
        floor = 2.0 * slack

        def accepted(_):
            d, damped, carry = direction(trial, score, curvature, st.carry)
            decrement = score @ d
            return st._replace(
                theta=trial,
                loglik=loglik,
                score=score,
                direction=d,
                decrement=decrement,
                at_floor=st.started & (decrement <= floor) & (decrement > _STALL * st.decrement),
                step=jnp.ones((), dtype),
                n_iter=st.n_iter + st.started.astype(st.n_iter.dtype),
                n_halvings=jnp.asarray(0),
                n_damped=st.n_damped + damped.astype(st.n_damped.dtype),
                started=jnp.asarray(True),
                carry=carry,
            )

        def rejected(_):
            return st._replace(
                at_floor=st.started & (st.decrement <= floor),
                step=0.5 * st.step,
                n_halvings=st.n_halvings + 1,
                started=jnp.asarray(True),
                failed_start=~st.started,
                failed_search=st.started & (st.n_halvings + 1 >= _MAX_HALVINGS),
            )

        return lax.cond(accept, accepted, rejected, None)

    return lax.while_loop(cond, body, state)
