"""L-BFGS: optax's `lbfgs` (two-loop recursion over the last m steps) with its zoom line search
(strong Wolfe conditions), run as one `lax.while_loop`, so `jit` and `vmap` pass through it.

Memory is O(k m); each iteration costs one pass over the data for lnL and U (the line search
usually accepts its first trial; a second costs another pass). The objective optax minimises is
f(z) = -lnL(s * z) in preconditioned coordinates z = theta / s, s = diag(M)^-1/2 for a cheap
positive diagonal M of the information (the fixed-effects block diagonal under `index=`; 1
otherwise), so that effects whose information spans 100 to 270,000 look alike to the first
iterations. f is a `custom_vjp` whose forward pass is the chunked (lnL, U) pass: reverse-mode
through the chunk loop would store every chunk's intermediates.

Convergence without a Hessian solve: optax's step is u_k = -eta_k B_k g_k, with B_k the L-BFGS
approximation of the inverse Hessian of f, so g_k' B_k g_k = -g_k'u_k / eta_k is L-BFGS's own
estimate of the scaled gradient U'(-H)^-1 U (~2 x the lnL still to gain), the criterion of the
other methods; the loop stops when it is below `tol` (from the second iteration on, once B_k has
seen a step). A line search that finds no better point ends the loop: converged when the estimate
is already at the rounding floor of lnL, a line-search failure otherwise.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax import lax

from ._ascent import AscentState
from ._objective import Objective
from ._solvers import _ROUNDOFF_ULPS

# Trials per zoom line search (optax's default is 20; the first trial is usually accepted).
_LINESEARCH_STEPS = 30


def lbfgs(
    obj: Objective,
    theta0: jax.Array,
    scale: jax.Array,
    *,
    max_iter: int,
    tol: float,
    memory: int = 10,
    compute_dtype=None,
) -> AscentState:
    """Maximise lnL from theta0 (free parameters); `scale` s (k,) maps z to theta = s * z. An
    entry with s = 0 is held at 0 (a reference or dropped level of the fixed effects)."""
    dtype = theta0.dtype
    held = scale == 0

    @jax.custom_vjp
    def f(z):
        return -obj.loglik_grad(scale * z).loglik

    def f_fwd(z):
        terms = obj.loglik_grad(scale * z)
        return -terms.loglik, -terms.score * scale

    def f_bwd(grad, ct):
        return (ct * grad,)

    f.defvjp(f_fwd, f_bwd)
    opt = optax.lbfgs(
        memory_size=memory,
        linesearch=optax.scale_by_zoom_linesearch(
            max_linesearch_steps=_LINESEARCH_STEPS, initial_guess_strategy="one"
        ),
    )
    z0 = jnp.where(held, 0.0, theta0 / jnp.where(held, 1.0, scale))
    value_and_grad = optax.value_and_grad_from_state(f)
    eps = jnp.finfo(compute_dtype or dtype).eps

    def cond(carry):
        *_, decrement, n, failed_start, failed_search, at_floor = carry
        running = (decrement > tol) & (n < max_iter)
        return running & ~failed_start & ~failed_search & ~at_floor

    def body(carry):
        z, state, _, _, n, _, _, _ = carry
        value, grad = value_and_grad(z, state=state)
        updates, new_state = opt.update(grad, state, z, value=value, grad=grad, value_fn=f)
        rate = optax.tree.get(new_state, "learning_rate")
        info = optax.tree.get(new_state, "info")
        new_value = optax.tree.get(new_state, "value")
        decrement = -(grad @ updates) / jnp.where(rate > 0, rate, 1.0)
        decrement = jnp.where((n >= 1) & (rate > 0), decrement, jnp.inf)
        slack = _ROUNDOFF_ULPS * eps * jnp.abs(value)
        finite = jnp.isfinite(value) & jnp.all(jnp.isfinite(grad))
        improved = jnp.isfinite(new_value) & (new_value <= value + slack)
        failed = (info.decrease_error > 0) | ~improved
        at_floor = failed & (n >= 1) & (jnp.abs(grad @ updates) <= 2.0 * slack)
        z_new = jnp.where(failed, z, z + updates)
        # a failed search keeps z: the state's value/grad then belong to a rejected trial
        return (
            z_new,
            new_state,
            jnp.where(failed, value, new_value),
            decrement,
            n + 1,
            (n == 0) & ~finite,
            failed & ~at_floor & finite,
            at_floor,
        )

    no = jnp.asarray(False)
    start = (z0, opt.init(z0), jnp.asarray(jnp.inf, dtype), jnp.asarray(jnp.inf, dtype),
             jnp.asarray(0), no, no, no)  # fmt: skip
    z, _, _, decrement, n, failed_start, failed_search, at_floor = lax.while_loop(cond, body, start)
    theta = scale * z
    final = obj.loglik_grad(theta)  # lnL and U at the estimate, pinned entries' U included
    k = theta0.shape[0]
    return AscentState(
        theta=theta,
        loglik=final.loglik,
        score=final.score,
        direction=jnp.zeros(k, dtype),
        decrement=decrement,
        step=jnp.ones((), dtype),
        n_iter=n,
        n_halvings=jnp.asarray(0),
        n_damped=jnp.asarray(0),
        started=jnp.asarray(True),
        failed_start=failed_start,
        failed_search=failed_search,
        at_floor=at_floor,
        carry=None,
    )
