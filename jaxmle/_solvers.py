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

A method is one entry of `METHODS`: which pass of the objective supplies its curvature matrix
("hessian" -H, "expected" I, "opg" sum w u u', or "none" for quasi-Newton, which keeps its own B),
and what it needs from the model. `fit` reads the entry; nothing else lists the methods.
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
    quasi-Newton, d = B U with B updated from the scores); `needs` what the model must supply.

    `driver` names the loop that runs it: "dense" is `maximize` here, which forms a k x k matrix
    at every iteration; the Hessian-free drivers ("lbfgs", "newton-cg") keep O(k) vectors and
    leave the covariance to conjugate-gradient solves for the `se_for` block (`_many`).
    `indexed` names the driver that runs it when `fit(index=...)` declares parameter blocks
    indexed by a data column (`_fixed_effects`), or None where the method does not take them.
    """

    name: str
    label: str
    curvature: str
    needs: tuple[str, ...] = ()
    driver: str = "dense"
    indexed: str | None = None

    @property
    def quasi(self) -> bool:
        return self.curvature == "none"


METHODS: Mapping[str, Method] = types.MappingProxyType(
    {
        m.name: m
        for m in (
            Method("newton", "Newton-Raphson, d = (-H)^-1 U", "hessian", indexed="fe-newton"),
            Method("fisher", "Fisher scoring, d = I^-1 U", "expected", needs=("expected",)),
            Method("bhhh", "BHHH, d = (sum w u u')^-1 U", "opg"),
            Method("bfgs", "BFGS, d = B U", "none"),
            Method(
                "lbfgs",
                "L-BFGS (optax, zoom line search), d = B_m U",
                "none",
                driver="lbfgs",
                indexed="lbfgs",
            ),
            Method(
                "newton-cg",
                "truncated Newton, (-H) d = U by conjugate gradients on Hv",
                "hessian",
                driver="newton-cg",
                indexed="newton-cg",
            ),
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
    restarted: jax.Array  # lnL or U was not finite at theta0: started again from the fallback
    eig: tuple  # equilibrated_eigh(matrix), reused for the covariance at the end (not for bfgs)


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
    fallback: jax.Array | None = None,
    min_iter: int = 0,
) -> SolverState:
    """Run the loop from theta0; `evaluate` returns the method's Terms at a trial point, its l_i
    computed in `compute_dtype` (default theta0's), whose rounding sets the line search's slack.
    `fallback`: where to start again if lnL or U is not finite at theta0 (which then is a
    computed start, e.g. a subsample's estimate, and the fallback the user's start values).
    `min_iter` steps are taken even from a start that already meets tol (a GMM step restarted
    from the previous step's estimate: one Newton step there is exact for linear moments)."""
    k = theta0.shape[0]
    dtype = theta0.dtype
    quasi = method.quasi

    def direction(matrix, g):
        """(d, damped, decomposition of M); bfgs has B ~ M^-1 already and no decomposition."""
        if quasi:
            return matrix @ g, jnp.asarray(False), no_eig
        eig = equilibrated_eigh(matrix)
        return (*safeguarded_solve(eig, g), eig)

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
        restarted=jnp.asarray(fallback is None),
        eig=no_eig,
    )

    def cond(st):
        running = (st.decrement > tol) | (st.n_iter < min_iter)
        running &= (st.n_iter < max_iter) & jnp.isfinite(st.decrement)
        return ~st.started | (running & ~st.failed_start & ~st.failed_search & ~st.at_floor)

    def body(st):
        trial = st.theta + st.step * st.direction
        ev = evaluate(trial)
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
        d, damped, eig = direction(matrix, ev.score)
        decrement = ev.score @ d
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
        )
        restart = ~st.started & ~st.restarted
        rejected = st._replace(
            theta=st.theta if fallback is None else jnp.where(restart, fallback, st.theta),
            at_floor=st.started & (st.decrement <= floor),
            step=0.5 * st.step,
            n_halvings=st.n_halvings + 1,
            started=~restart,
            failed_start=~st.started & ~restart,
            failed_search=st.started & (st.n_halvings + 1 >= _MAX_HALVINGS),
            restarted=st.restarted | restart,
        )
        return jax.tree.map(lambda a, r: jnp.where(accept, a, r), accepted, rejected)

    return lax.while_loop(cond, body, state)
