"""Curvature without a k x k matrix: information-vector products, conjugate gradients, and the
covariance of a block of parameters (theory.md notation; A = -H, the observed information).

    A v        forward-over-reverse autodiff of the chunked score: one pass over the data per
               product; a batch of products (vmapped over columns) shares the pass
    A^-1 b     preconditioned conjugate gradients (`pcg`), columns solved side by side
    block s    Sigma_ss = E_s' A^-1 E_s from the s solves A x_j = e_j; the sandwich meat of the block
               from the per-observation directional derivatives u_i' x_j (forward mode, s tangents):
               X' B X = sum_i c_i (X' u_i)(X' u_i)', never B itself

A block's pieces are stored in the form `_covariance` reads: `information` is the effective
information of the block, Sigma_ss^-1 (the Schur complement of the other parameters in A), and
`meat`, `score_groups` are mapped through it (X' u_i = Sigma_ss u~_i, so u~_i = Sigma_ss^-1 X' u_i),
so that every kind's formula (A^-1, A^-1 B A^-1, A^-1 B_c A^-1 G/(G-1)) gives the block of the
full-vector covariance. The OPG and expected-information kinds need their own k x k matrices and
are not available from a block.

Why not lineax's CG: the truncated-Newton step must stop at negative curvature (lineax's CG has no
such exit), and lineax stops on element-wise residual tolerances, which suit a right-hand side e_j
(mostly zeros) badly; the one batched PCG here serves the Newton step, the block covariance and the
fixed-effects solves of `_fixed_effects`, with the usual criterion ||r||_M^-1 <= rtol ||b||_M^-1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ._accumulate import chunked_sum
from ._covariance import Pieces, psd_inverse, symmetric
from ._objective import Objective

# Relative residual of the covariance solves: the block's SEs are then exact to ~cond(A) x 1e-12.
COV_RTOL = 1e-12


class CGResult(NamedTuple):
    """Solutions (n, r), steps taken, and per column: converged, negative curvature met."""

    x: jax.Array
    n_steps: jax.Array
    converged: jax.Array
    negative: jax.Array


def pcg(
    matvec: Callable[[jax.Array], jax.Array],
    b: jax.Array,
    inv_diag: jax.Array,
    x0: jax.Array | None = None,
    *,
    rtol: float | jax.Array,
    max_steps: int,
) -> CGResult:
    """Conjugate gradients for A X = B with the Jacobi preconditioner M = diag(1/inv_diag).

    Columns of `b` (n, r) are independent systems sharing each product `matvec` (n, r) -> (n, r).
    A column stops when ||r||_M^-1 <= rtol ||b||_M^-1, or when it meets a direction of
    non-positive curvature p'Ap <= 0 (flagged in `negative`: A is not positive definite there,
    and x holds the last iterate, an ascent direction when x0 = 0).
    """
    x = jnp.zeros_like(b) if x0 is None else x0
    r = b - matvec(x) if x0 is not None else b
    z = inv_diag[:, None] * r
    rz = jnp.sum(r * z, axis=0)
    target = rtol * jnp.sqrt(jnp.sum(b * inv_diag[:, None] * b, axis=0))
    active = jnp.sqrt(rz) > target
    no = jnp.zeros(b.shape[1], bool)

    def cond(st):
        *_, active, _, k = st
        return jnp.any(active) & (k < max_steps)

    def body(st):
        x, r, p, rz, active, negative, k = st
        ap = matvec(p)
        pap = jnp.sum(p * ap, axis=0)
        bend = active & (pap <= 0)
        go = active & ~bend
        alpha = jnp.where(go, rz / jnp.where(go, pap, 1.0), 0.0)
        x = x + alpha * p
        r = r - alpha * ap
        z = inv_diag[:, None] * r
        rz_new = jnp.sum(r * z, axis=0)
        beta = jnp.where(go, rz_new / jnp.where(rz > 0, rz, 1.0), 0.0)
        p = jnp.where(go, z + beta * p, p)
        active = go & (jnp.sqrt(jnp.abs(rz_new)) > target)
        return x, r, p, jnp.where(go, rz_new, rz), active, negative | bend, k + 1

    x, r, _, rz, active, negative, k = lax.while_loop(
        cond, body, (x, r, z, rz, active, no, jnp.asarray(0))
    )
    return CGResult(x, k, ~active & ~negative, negative)


def information_product(obj: Objective, theta: jax.Array) -> Callable[[jax.Array], jax.Array]:
    """V -> A V = -H V at theta (free parameters), V of shape (k,) or (k, r): forward-over-reverse
    autodiff of each chunk's score, r tangents pushed through one pass over the data."""

    def one(v):
        def chunk(b, m):
            def score(t):
                return jax.grad(obj._chunk_loglik)(t, b, m)

            return -jax.jvp(score, (theta,), (v,))[1]

        return chunked_sum(chunk, obj.batch, obj.layout, jnp.zeros_like(v))

    def product(v):
        return one(v) if v.ndim == 1 else jax.vmap(one, in_axes=1, out_axes=1)(v)

    return product


class BlockScores(NamedTuple):
    """Sums of the per-observation directional derivatives t_i = X' u_i (s-vectors)."""

    opg: jax.Array  # sum_i w_i t_i t_i'
    meat: jax.Array  # sum_i c_i t_i t_i'
    score_groups: jax.Array  # G x s, sum_{i in g} w_i t_i


def block_scores(obj: Objective, theta: jax.Array, x: jax.Array) -> BlockScores:
    """One pass: t_i = X' u_i by forward mode (the s columns of X as tangents), and their sums."""
    s = x.shape[1]
    sampling = obj.batch.weights is not None and obj.weight_kind == "sampling"

    def chunk(b, m):
        def loglik_obs(t):
            return obj._loglik_obs(obj.embed(t), b.data)

        t = jax.vmap(lambda v: jax.jvp(loglik_obs, (theta,), (v,))[1], in_axes=1, out_axes=1)(x)
        w = obj._obs_weights(b, m)
        wt = t * w[:, None]
        opg = wt.T @ t
        meat = (wt * b.weights[:, None]).T @ t if sampling else opg
        if b.groups is None:
            sg = jnp.zeros((0, s), t.dtype)
        else:
            sg = jax.ops.segment_sum(wt, b.groups, num_segments=obj.n_groups)
        return opg, meat, sg

    groups = 0 if obj.batch.groups is None else obj.n_groups
    ss = jnp.zeros((s, s), theta.dtype)
    return BlockScores(
        *chunked_sum(chunk, obj.batch, obj.layout, (ss, ss, jnp.zeros((groups, s), theta.dtype)))
    )


def block_pieces(cov_of_block: jax.Array, scores: BlockScores, n_obs) -> tuple[Pieces, jax.Array]:
    """(Pieces over the block, status of Sigma_ss^-1) from Sigma_ss = (A^-1)_ss and the sums of
    t_i = X' u_i; u~_i = Sigma_ss^-1 t_i are the block's scores with the others partialled out."""
    info, status = psd_inverse(symmetric(cov_of_block))
    nan = jnp.full_like(info, jnp.nan)
    pieces = Pieces(
        information=info,
        opg=nan,
        meat=symmetric(info @ scores.meat @ info),
        score_groups=scores.score_groups @ info,
        expected=nan,
        n_obs=n_obs,
    )
    return pieces, status


def solve_block(
    product: Callable[[jax.Array], jax.Array],
    block: jax.Array,
    inv_diag: jax.Array,
    extra: jax.Array | None = None,
    *,
    max_steps: int,
    rtol: float = COV_RTOL,
) -> CGResult:
    """X = A^-1 [E_s, extra] by PCG: the columns of A^-1 for the block's flat indices `block`,
    and optionally A^-1 extra (the score, for the exact decrement U'A^-1 U)."""
    k = inv_diag.shape[0]
    rhs = (
        jnp.zeros((k, block.shape[0]), inv_diag.dtype).at[block, jnp.arange(block.shape[0])].set(1)
    )
    if extra is not None:
        rhs = jnp.concatenate([rhs, extra[:, None]], axis=1)
    return pcg(product, rhs, inv_diag, rtol=rtol, max_steps=max_steps)
