"""Newton-Raphson, BHHH and BFGS maximisation of lnL in one `lax.while_loop`.

Each pass of the loop makes exactly one evaluation of the objective at a trial point
theta + t d and then either accepts it (a new iterate: new direction, t = 1) or halves t (backtracking
line search on lnL, Armijo condition). One evaluation site keeps the compiled program small, and under
`vmap` every lane does the same work per pass, so finished or backtracking lanes cost no more than
the others.

Directions (docs/theory.md):
    newton  d = (-H)^-1 U
    bhhh    d = (sum_i w_i u_i u_i')^-1 U
    bfgs    d = B U, B the BFGS approximation of (-H)^-1, started at the (safeguarded) (-H)^-1 at init
    fisher  d = I^-1 U (expected information; the family supplies it)

Safeguard: the curvature matrix M is equilibrated, S M S with S = diag(M)^-1/2, so ill-scaled
covariates cannot hide its eigenvalues, and eigenvalues that are not positive (H not negative definite)
are replaced by their absolute values, floored at `_EIG_FLOOR` times the largest: a damped step that
still ascends. Each iteration where that happened is counted in `n_damped`.

Convergence: the scaled gradient U' M^-1 U (Stata's criterion, about twice the lnL still to gain)
below `tol`; or, when `tol` is finer than the data let float64 resolve, at the rounding floor: the
scaled gradient is below twice lnL's rounding slack and a step is rejected (a lnL difference at that
level is rounding noise, and the line search would otherwise halve the step to nothing and run to
max_iter at the maximum), or, for Newton, whose g squares each step, a step no longer shrinks it.
The status is decided after the loop.

Box constraints (lower <= theta <= upper, e.g. a standard deviation or the diagonal of a Cholesky
factor that may be exactly 0): the methods with a curvature matrix take them as projected Newton with
an active set (Bertsekas 1982). A coordinate on its bound whose gradient points out of the box is held
there for the step (its row and column of M replaced by the identity, its gradient by 0), the others
take the safeguarded step, and the trial point is projected onto the box, so a boundary maximum is
reached exactly, in finitely many steps, instead of approached by a log-scale parameter running to
-inf. A coordinate on its bound with a zero gradient where lnL is convex along it (a stationary point
that is a minimum in that direction, as sigma = 0 is for lnL(sigma) = lnL(-sigma) when the maximum
is inside) is pushed back inside. Quasi-Newton keeps no matrix to reduce: it refuses bounds.

Warm starts: with `carry0`, `evaluate(theta, carry) -> (Terms, carry)` threads a pytree from one
accepted point to the next trial (the conditional modes of random effects, `_mixed`); a rejected
trial keeps the carry of the accepted point.

A method is one entry of `METHODS`: which pass of the objective supplies its curvature matrix
("hessian" -H, "expected" I, "opg" sum w u u', or "none" for quasi-Newton, which keeps its own B),
what it needs from the model, and whether it takes box constraints. `fit` reads the entry; nothing
else lists the methods.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ._objective import Terms

_ARMIJO = 1e-4
_MAX_HALVINGS = 40
_EIG_FLOOR = 1e-12
# Accept a step that loses at most this many ulps of |lnL|: near the optimum the gain of a step is
# below the rounding of a sum over N terms, and rejecting it would stall the search on noise.
_ROUNDOFF_ULPS = 64.0
# A step that leaves more than this fraction of the scaled gradient has stopped converging (Newton
# squares it, BHHH shrinks it by a fixed rate): at the rounding floor that marks a stall.
_STALL = 0.25


@dataclasses.dataclass(frozen=True)
class Method:
    """One solver: `curvature` names the objective pass whose matrix M gives d = M^-1 U ("none":
    quasi-Newton, d = B U with B updated from the scores); `needs` what the model must supply;
    `bounds` whether it takes box constraints (projected steps with an active set)."""

    name: str
    label: str
    curvature: str
    needs: tuple[str, ...] = ()
    bounds: bool = True

    @property
    def quasi(self) -> bool:
        return self.curvature == "none"


METHODS: Mapping[str, Method] = types.MappingProxyType(
    {
        m.name: m
        for m in (
            Method("newton", "Newton-Raphson, d = (-H)^-1 U", "hessian"),
            Method("fisher", "Fisher scoring, d = I^-1 U", "expected", needs=("expected",)),
            Method("bhhh", "BHHH, d = (sum w u u')^-1 U", "opg"),
            Method("bfgs", "BFGS, d = B U", "none", bounds=False),
        )
    }
)


def check_method(method: str) -> Method:
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {tuple(METHODS)}")
    return METHODS[method]


class SolverState(NamedTuple):
    theta: jax.Array
    loglik: jax.Array
    score: jax.Array
    matrix: jax.Array  # M (newton, bhhh, fisher) or B ~ (-H)^-1 (bfgs)
    direction: jax.Array
    decrement: jax.Array  # U' d, the scaled gradient
    step: jax.Array
    n_iter: jax.Array
    n_halvings: jax.Array
    n_damped: jax.Array
    started: jax.Array
    failed_start: jax.Array
    failed_search: jax.Array
    at_floor: jax.Array  # converged at the rounding floor of lnL (see the module docstring)
    eig: tuple  # equilibrated_eigh(matrix), reused for the covariance at the end (not for bfgs)
    last_step: jax.Array  # the accepted step that led to theta (box: how far to push back inside)
    carry: object = ()  # the evaluator's warm start (see the module docstring)


def equilibrated_eigh(m):
    """Eigen-decomposition of S M S, S = |diag(M)|^-1/2 (1 where the diagonal is 0)."""
    d = jnp.abs(jnp.diagonal(m))
    s = jnp.where(d > 0, 1.0 / jnp.sqrt(jnp.where(d > 0, d, 1.0)), 1.0)
    lam, vec = jnp.linalg.eigh(s[:, None] * m * s[None, :])
    return s, lam, vec


def safeguarded_solve(decomposition, g):
    """(M~^-1 g, damped), M~ the eigenvalue-safeguarded M given as `equilibrated_eigh(M)`."""
    s, lam, vec = decomposition
    top = jnp.max(jnp.abs(lam))
    floor = _EIG_FLOOR * top
    damped = jnp.min(lam) <= floor
    lam_safe = jnp.maximum(jnp.abs(lam), floor)
    x = s * (vec @ ((vec.T @ (s * g)) / lam_safe))
    return x, damped


def safeguarded_inverse(m):
    s, lam, vec = equilibrated_eigh(m)
    top = jnp.max(jnp.abs(lam))
    lam_safe = jnp.maximum(jnp.abs(lam), _EIG_FLOOR * top)
    return s[:, None] * ((vec / lam_safe) @ vec.T) * s[None, :]


def _bfgs_update(b, s, y):
    """BFGS update of B ~ (-H)^-1 with step s and y = U_old - U_new (so s'y > 0 near a maximum)."""
    sy = s @ y
    ok = sy > 1e-10 * jnp.sqrt((s @ s) * (y @ y))
    rho = jnp.where(ok, 1.0 / jnp.where(ok, sy, 1.0), 0.0)
    by = b @ y
    new = b + rho * ((1.0 + rho * (y @ by)) * jnp.outer(s, s) - jnp.outer(by, s) - jnp.outer(s, by))
    return jnp.where(ok, new, b)


def maximize(
    evaluate: Callable[[jax.Array], Terms],
    theta0: jax.Array,
    *,
    method: Method,
    max_iter: int,
    tol: float,
    initial_matrix: Callable[[jax.Array], jax.Array] | None = None,
    compute_dtype=None,
    bounds: tuple[jax.Array, jax.Array] | None = None,
    carry0=None,
) -> SolverState:
    """Run the loop from theta0; `evaluate` returns the method's Terms at a trial point, its l_i
    computed in `compute_dtype` (default theta0's), whose rounding sets the line search's slack.

    `bounds = (lower, upper)`: (k,) vectors (+-inf where unbounded) of a box that theta0 lies in;
    `carry0`: the first carry of `evaluate(theta, carry) -> (Terms, carry)` (module docstring).
    """
    k = theta0.shape[0]
    dtype = theta0.dtype
    quasi = method.quasi
    if bounds is not None and not method.bounds:
        raise ValueError(f"method={method.name!r} does not take bounds")

    def direction(matrix, g, theta, last_step):
        """(d, damped, decomposition of M, the model's gain along d, in U'd units); bfgs has
        B ~ M^-1 already and no decomposition."""
        if quasi:
            d = matrix @ g
            return d, jnp.asarray(False), no_eig, g @ d
        if bounds is None:
            eig = equilibrated_eigh(matrix)
            d, damped = safeguarded_solve(eig, g)
            return d, damped, eig, g @ d
        return _box_direction(matrix, g, theta, last_step, bounds)

    def project(x):
        return x if bounds is None else jnp.clip(x, bounds[0], bounds[1])

    # bfgs: B at theta0; the others: a placeholder until the first evaluation supplies M
    m_init = safeguarded_inverse(initial_matrix(theta0)) if quasi else jnp.zeros((k, k), dtype)
    zero = jnp.zeros((), dtype)
    kk = 0 if quasi else k
    no_eig = (jnp.ones(kk, dtype), jnp.zeros(kk, dtype), jnp.zeros((kk, kk), dtype))
    state = SolverState(
        theta=theta0,
        loglik=jnp.asarray(-jnp.inf, dtype),
        score=jnp.zeros(k, dtype),
        matrix=m_init,
        direction=jnp.zeros(k, dtype),
        decrement=jnp.asarray(jnp.inf, dtype),
        step=zero,
        n_iter=jnp.asarray(0),
        n_halvings=jnp.asarray(0),
        n_damped=jnp.asarray(0),
        started=jnp.asarray(False),
        failed_start=jnp.asarray(False),
        failed_search=jnp.asarray(False),
        at_floor=jnp.asarray(False),
        eig=no_eig,
        last_step=jnp.zeros(k, dtype),
        carry=() if carry0 is None else carry0,
    )

    def cond(st):
        running = (st.decrement > tol) & (st.n_iter < max_iter) & jnp.isfinite(st.decrement)
        return ~st.started | (running & ~st.failed_start & ~st.failed_search & ~st.at_floor)

    def body(st):
        trial = project(st.theta + st.step * st.direction)
        if carry0 is None:
            ev, carry = evaluate(trial), ()
        else:
            ev, carry = evaluate(trial, st.carry)
        finite = jnp.isfinite(ev.loglik) & jnp.all(jnp.isfinite(ev.score))
        slack = _ROUNDOFF_ULPS * jnp.finfo(compute_dtype or dtype).eps * jnp.abs(st.loglik)
        gain_needed = _ARMIJO * st.step * st.decrement - slack
        accept = finite & (~st.started | (ev.loglik - st.loglik >= gain_needed))

        if quasi:
            matrix = jnp.where(
                st.started,
                _bfgs_update(st.matrix, trial - st.theta, st.score - ev.score),
                st.matrix,
            )
        else:
            matrix = ev.matrix
        d, damped, eig, decrement = direction(matrix, ev.score, trial, trial - st.theta)
        # within rounding of the maximum (twice the lnL still to gain below lnL's rounding), a step
        # that no longer shrinks the scaled gradient, or a rejected one, is noise: stop there
        floor = 2.0 * slack
        # only Newton's g must shrink by _STALL a step: BHHH, Fisher scoring (non-canonical links)
        # and BFGS converge linearly, at rates up to ~0.995, and stopping them there would leave
        # them ~sqrt(floor) standard errors short of the maximum
        stalled = decrement > _STALL * st.decrement if method.curvature == "hessian" else False
        at_floor = st.started & (decrement <= floor) & stalled
        accepted = st._replace(
            theta=trial,
            loglik=ev.loglik,
            score=ev.score,
            matrix=matrix,
            direction=d,
            decrement=decrement,
            at_floor=at_floor,
            step=jnp.ones((), dtype),
            n_iter=st.n_iter + st.started.astype(st.n_iter.dtype),
            n_halvings=jnp.asarray(0),
            n_damped=st.n_damped + damped.astype(st.n_damped.dtype),
            started=jnp.asarray(True),
            eig=eig,
            last_step=trial - st.theta,
            carry=carry,
        )
        rejected = st._replace(
            at_floor=st.started & (st.decrement <= floor),
            step=0.5 * st.step,
            n_halvings=st.n_halvings + 1,
            started=jnp.asarray(True),
            failed_start=~st.started,
            failed_search=st.started & (st.n_halvings + 1 >= _MAX_HALVINGS),
        )
        return jax.tree.map(lambda a, r: jnp.where(accept, a, r), accepted, rejected)

    return lax.while_loop(cond, body, state)


def _box_direction(matrix, g, theta, last_step, bounds):
    """Projected-Newton direction on the box (module docstring): (d, damped, eig, model gain).

    Active: on a bound with the gradient pointing out; held (identity row, zero gradient). A free
    coordinate on its bound with lnL convex along it and no gradient to move it is pushed inside
    by half its last step (at least 1e-4 max(1, |theta_j|)); the model gain of that push,
    (1/2) |M_jj| push^2, keeps the loop from stopping there.
    """
    lo, hi = bounds
    at_lo, at_hi = theta <= lo, theta >= hi
    active = (at_lo & (g < 0)) | (at_hi & (g > 0))
    keep = ~active
    eye = jnp.eye(theta.shape[0], dtype=matrix.dtype)
    reduced = jnp.where(keep[:, None] & keep[None, :], matrix, eye)
    g_free = jnp.where(keep, g, 0.0)
    eig = equilibrated_eigh(reduced)
    d, damped = safeguarded_solve(eig, g_free)
    curv = jnp.diagonal(matrix)
    reach = jnp.maximum(0.5 * jnp.abs(last_step), 1e-4 * jnp.maximum(1.0, jnp.abs(theta)))
    push_lo = keep & at_lo & (curv < 0) & (d < reach)
    push_hi = keep & at_hi & (curv < 0) & (d > -reach)
    d = jnp.where(push_lo, reach, jnp.where(push_hi, -reach, d))
    pushed = push_lo | push_hi
    gain = jnp.where(pushed, 0.0, g_free * d).sum() + jnp.sum(
        jnp.where(pushed, 0.5 * jnp.abs(curv) * reach**2, 0.0)
    )
    return d, damped, eig, gain
