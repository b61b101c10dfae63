"""Newton's method with the fixed effects eliminated (the structured path of `fit(index=...)`), and
the covariance of the other parameters b with the effects a partialled out.

With A = -H partitioned into b (p parameters) and the effects a (sum_m G_m levels), the Newton step
A d = U is solved by block elimination (Schur complement), never forming A_aa densely:

    Y   = A_aa^-1 [A_ab, U_a]          G x (p + 1)
    S   = A_bb - A_ba Y_b              p x p, the information of b with a concentrated out
    d_b = S^-1 (U_b - A_ba Y_U)        (S equilibrated and eigenvalue-safeguarded, as Newton's M)
    d_a = Y_U - Y_b d_b

One set of effects: A_aa is diagonal and Y is exact (O(N p) per iteration, as fixest's demeaning
of one factor). Several sets: the largest is eliminated exactly and the others solved by Jacobi-
preconditioned conjugate gradients on the reduced system S_rr = A_rr - A_re A_ee^-1 A_er, whose
products are gathers and segment sums over the rows (never a G x G matrix), warm-started from the
previous iteration's solution; this plays the role of fixest's alternating projections.

At the estimate, Var(b_hat) = S^-1 (the b-block of A^-1; pyfixest's iid covariance with
`ssc(k_adj=False)`), and the sandwich and cluster meats use the partialled-out scores
u~_i = u_bi - sum_m u_{z_m,i} Y_b,m[g_m(i)] (Frisch-Waugh-Lovell: the scores of the demeaned
problem), so that pieces.information = S and pieces.meat = sum_i c_i u~_i u~_i' give exactly the
b-block of A^-1 B A^-1.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._ascent import AscentState, ascend
from ._covariance import Pieces
from ._fixed_effects import IndexSpec, row_effects
from ._hessian_free import pcg
from ._objective import Batch
from ._solvers import equilibrated_eigh, safeguarded_solve

# Relative residual of the reduced fixed-effects solves (several sets of effects) at the estimate:
# the Schur complement S, hence the covariance of b, is then exact to ~cond x 1e-11. The Newton
# steps before it solve only to the forcing term eta = sqrt(U'M^-1 U) (M = diag(A), the Jacobi
# estimate of the scaled gradient), between FE_RTOL and _MAX_FORCING: inexact Newton, loose far
# from the maximum, tight near it; the estimate's own solve is then redone to FE_RTOL.
FE_RTOL = 1e-11
_MAX_FORCING = 1e-2


class Terms(NamedTuple):
    """One pass at theta: lnL, the score of every non-indexed entry b, and A's structured blocks
    over the free b and the effects (per key m); `cross` the per-row cross terms of A_aa between
    keys, -w_i d2 l_i / dz_k dz_l for the pairs k < l (`pairs`; none for one set of effects)."""

    loglik: jax.Array
    score_b: jax.Array  # (P,) all non-indexed entries, fixed ones included
    info_bb: jax.Array  # (p, p) free b
    score_a: tuple  # (G_m,)
    info_aa: tuple  # (G_m,) diagonal
    info_ab: tuple  # (G_m, p)
    cross: jax.Array  # (N, m (m - 1) / 2), or (0, 0) for one set of effects


def _walk(fn, batch: Batch, chunk_size: int, sums0, rows0):
    """sum over chunks of fn's mask-weighted sums, and fn's per-row outputs written in place.

    As `_accumulate._local_sum`: chunks are dynamic slices, the last one ends at N and its rows
    already summed by the previous chunk have mask 0 (they keep the values written before)."""
    n = jax.tree.leaves(batch.data)[0].shape[0]
    size = min(chunk_size, n)
    n_chunks = -(-n // size)
    offsets = jnp.arange(size)

    def step(i, acc):
        sums, rows = acc
        start = jnp.minimum(i * size, n - size)
        chunk = jax.tree.map(lambda x: lax.dynamic_slice_in_dim(x, start, size), batch)
        mask = (start + offsets >= i * size).astype(jax.tree.leaves(sums0)[0].dtype)
        s, r = fn(chunk, mask)
        sums = jax.tree.map(jnp.add, sums, s)
        if rows.shape[0]:
            old = lax.dynamic_slice_in_dim(rows, start, size)
            r = jnp.where(mask[:, None] > 0, r, old)
            rows = lax.dynamic_update_slice_in_dim(rows, r, start, 0)
        return sums, rows

    return lax.fori_loop(0, n_chunks, step, (sums0, rows0))


def terms(f, fe: IndexSpec, theta, batch: Batch, chunk_size: int, *, rows: bool) -> Terms:
    """lnL, scores and A's blocks in one pass: p + m tangents pushed through each chunk's score
    (forward over reverse), per-row quantities summed into levels by segment sums."""
    b_index = np.asarray(fe.b_index, int)
    b_free = np.asarray(fe.b_free, int)
    p, m = len(b_free), fe.m
    b_all = theta[b_index]
    dtype = theta.dtype

    def chunk(b, mask):
        c = mask * b.weights
        z = row_effects(fe, theta, b.data)

        def total(ball, zz):
            return jnp.sum(c * jax.vmap(f, (None, 0, 0))(ball, zz, b.data))

        grads = jax.value_and_grad(total, argnums=(0, 1))

        def push(tb, tz):
            return jax.jvp(lambda ball, zz: grads(ball, zz)[1], (b_all, z), (tb, tz))[1]

        ll, (g_b, g_z) = grads(b_all, z)
        basis = jnp.zeros((p, len(b_index)), dtype).at[jnp.arange(p), b_free].set(1.0)
        hb_b, hb_z = jax.vmap(lambda t: push(t, jnp.zeros_like(z)))(basis)  # (p,P), (p,C,m)
        unit = jnp.eye(m, dtype=dtype)
        hz_b, hz_z = jax.vmap(lambda u: push(jnp.zeros_like(b_all), jnp.broadcast_to(u, z.shape)))(
            unit
        )  # (m,P), (m,C,m): hz_z[l, i, k] = d2 l_i / dz_k dz_l
        del hz_b
        info_zz = -jnp.transpose(hz_z, (1, 2, 0))  # (C, m, m)
        score_a, info_aa, info_ab = [], [], []
        for k in range(m):
            codes = b.data[fe.columns[k]]
            score_a.append(jax.ops.segment_sum(g_z[:, k], codes, fe.sizes[k]))
            info_aa.append(jax.ops.segment_sum(info_zz[:, k, k], codes, fe.sizes[k]))
            info_ab.append(jax.ops.segment_sum(-hb_z[:, :, k].T, codes, fe.sizes[k]))
        sums = (ll, g_b, -hb_b[:, b_free], tuple(score_a), tuple(info_aa), tuple(info_ab))
        if not rows:
            return sums, jnp.zeros((0, 0), dtype)
        return sums, jnp.stack([info_zz[:, k, l] for k, l in pairs(m)], axis=1)

    zeros = (
        jnp.zeros((), dtype),
        jnp.zeros(len(b_index), dtype),
        jnp.zeros((p, p), dtype),
        tuple(jnp.zeros(g, dtype) for g in fe.sizes),
        tuple(jnp.zeros(g, dtype) for g in fe.sizes),
        tuple(jnp.zeros((g, p), dtype) for g in fe.sizes),
    )
    n = jax.tree.leaves(batch.data)[0].shape[0]
    rows0 = jnp.zeros((n, len(pairs(m))) if rows else (0, 0), dtype)
    (ll, g_b, a_bb, u_a, a_aa, a_ab), per_row = _walk(chunk, batch, chunk_size, zeros, rows0)
    return Terms(ll, g_b, 0.5 * (a_bb + a_bb.T), u_a, a_aa, a_ab, per_row)


class Solved(NamedTuple):
    """The elimination at one point: Y_b per key, S and its decomposition, the warm start."""

    y_b: tuple
    info: jax.Array  # S
    eig: tuple
    warm: jax.Array  # reduced-system solution (F_r, p + 1), for the next iteration
    cg_ok: jax.Array


def _inverse_diagonal(t: Terms, keep):
    return tuple(
        jnp.where(k & (d > 0), 1.0 / jnp.where(d > 0, d, 1.0), 0.0)
        for k, d in zip(keep, t.info_aa, strict=True)
    )


def pairs(m: int) -> list[tuple[int, int]]:
    """The pairs of keys k < l whose cross terms `Terms.cross` holds, in its column order."""
    return [(k, l) for k in range(m) for l in range(k + 1, m)]


def _segment_sum(x, codes, size):
    # the barrier keeps XLA from fusing the gather that makes x into the scatter, which on a CPU
    # runs the scatter at half speed
    return jax.ops.segment_sum(lax.optimization_barrier(x), codes, size)


def solve_effects(t: Terms, fe: IndexSpec, codes, keep, rhs, warm, *, max_cg: int, rtol):
    """Y = A_aa^-1 rhs (rhs: per key (G_m, r)), held levels (keep False) at 0; (Y, warm, ok).

    A_aa = D + C: D the per-level diagonals, C the cross terms between keys, one per row and pair.
    Key e (the largest) is eliminated exactly; CG runs on the others' reduced system
    (D_r + C_rr - C_re D_e^-1 C_er) y = rhs_r - C_re D_e^-1 rhs_e, whose product is, per row,
    gathers of y and segment sums (never a G x G matrix)."""
    inv = _inverse_diagonal(t, keep)
    if fe.m == 1:
        return (rhs[0] * inv[0][:, None],), warm, jnp.asarray(True)
    e = fe.eliminated
    others = [k for k in range(fe.m) if k != e]
    column = {}
    for j, (k, l) in enumerate(pairs(fe.m)):
        column[k, l] = column[l, k] = t.cross[:, j, None]
    cuts = np.cumsum([fe.sizes[k] for k in others])[:-1]

    def split(y):
        return dict(zip(others, jnp.split(y, cuts), strict=True))

    def off_diagonal(parts):
        """Per row and key k: sum over the unknown keys l != k of C_kl,i y_l[g_l(i)]."""
        gathered = {l: parts[l][codes[l]] for l in parts}
        return {k: sum(column[k, l] * gathered[l] for l in gathered if l != k) for k in range(fe.m)}

    def matvec(y):
        parts = split(y)
        rows = off_diagonal(parts)
        u = _segment_sum(rows[e], codes[e], fe.sizes[e]) * inv[e][:, None]
        ue = u[codes[e]]
        return jnp.concatenate(
            [
                t.info_aa[k][:, None] * parts[k]
                + _segment_sum(rows[k] - column[k, e] * ue, codes[k], fe.sizes[k])
                for k in others
            ]
        )

    re = (rhs[e] * inv[e][:, None])[codes[e]]
    rhs_r = jnp.concatenate(
        [rhs[k] - _segment_sum(column[k, e] * re, codes[k], fe.sizes[k]) for k in others]
    )
    inv_r = jnp.concatenate([inv[k] for k in others])
    cg = pcg(matvec, rhs_r, inv_r, warm, rtol=rtol, max_steps=max_cg)
    parts = split(cg.x)
    back = _segment_sum(off_diagonal(parts)[e], codes[e], fe.sizes[e])
    y = {e: (rhs[e] - back) * inv[e][:, None], **parts}
    return tuple(y[k] for k in range(fe.m)), cg.x, jnp.all(cg.converged)


def eliminate(t: Terms, fe: IndexSpec, codes, keep, warm, *, max_cg: int, rtol=FE_RTOL):
    """(d_b, d_a per key, damped, Solved): the Newton step by block elimination."""
    p = t.info_bb.shape[0]
    b_free = np.asarray(fe.b_free, int)
    score_a = [u * k for u, k in zip(t.score_a, keep, strict=True)]
    rhs = [
        jnp.concatenate([ab, u[:, None]], axis=1) for ab, u in zip(t.info_ab, score_a, strict=True)
    ]
    y, warm, ok = solve_effects(t, fe, codes, keep, rhs, warm, max_cg=max_cg, rtol=rtol)
    y_b = tuple(yy[:, :p] for yy in y)
    cross = sum(ab.T @ yy for ab, yy in zip(t.info_ab, y, strict=True))  # (p, p + 1)
    info = t.info_bb - cross[:, :p]
    info = 0.5 * (info + info.T)
    eig = equilibrated_eigh(info)
    d_b, damped = safeguarded_solve(eig, t.score_b[b_free] - cross[:, p])
    d_a = tuple(yy[:, p] - yb @ d_b for yy, yb in zip(y, y_b, strict=True))
    return d_b, d_a, damped, Solved(y_b, info, eig, warm, ok)


def warm_start(fe: IndexSpec, dtype) -> jax.Array:
    """The zero warm start of the reduced system (F_r, p + 1) (0 rows for one set of effects)."""
    rows = 0 if fe.m == 1 else sum(g for k, g in enumerate(fe.sizes) if k != fe.eliminated)
    return jnp.zeros((rows, len(fe.b_free) + 1), dtype)


def full_score(fe: IndexSpec, t: Terms, k: int):
    u = jnp.zeros(k, t.score_b.dtype).at[np.asarray(fe.b_index, int)].set(t.score_b)
    for s, g, ua in zip(fe.starts, fe.sizes, t.score_a, strict=True):
        u = u.at[s : s + g].set(ua)
    return u


def fe_newton(
    f, fe: IndexSpec, theta0, batch: Batch, chunk_size, keep, *, max_iter, tol, max_cg,
    compute_dtype=None,
) -> AscentState:  # fmt: skip
    """Newton on the full flat vector (k), the step by elimination; `carry` ends as `Solved` at
    the estimate (S and Y_b for the covariance)."""
    k = theta0.shape[0]
    p = len(fe.b_free)
    codes = [batch.data[c] for c in fe.columns]
    b_free = np.asarray(fe.b_free, int)
    b_free_flat = np.asarray(fe.b_index, int)[b_free]

    def evaluate(theta):
        t = terms(f, fe, theta, batch, chunk_size, rows=fe.m > 1)
        return t.loglik, full_score(fe, t, k), t

    def direction(theta, score, t, carry):
        inv = _inverse_diagonal(t, keep)
        diag_b = jnp.abs(jnp.diagonal(t.info_bb))
        jacobi = jnp.sum(t.score_b[b_free] ** 2 / jnp.where(diag_b > 0, diag_b, 1.0))
        jacobi += sum(jnp.sum(u**2 * i) for u, i in zip(t.score_a, inv, strict=True))
        rtol = jnp.clip(jnp.sqrt(jacobi), FE_RTOL, _MAX_FORCING)
        d_b, d_a, damped, solved = eliminate(
            t, fe, codes, keep, carry[0].warm, max_cg=max_cg, rtol=rtol
        )
        d = jnp.zeros(k, theta.dtype).at[b_free_flat].set(d_b)
        for s, g, da in zip(fe.starts, fe.sizes, d_a, strict=True):
            d = d.at[s : s + g].set(da)
        return d, damped, (solved, t)

    dtype = theta0.dtype
    solved0 = Solved(
        y_b=tuple(jnp.zeros((g, p), dtype) for g in fe.sizes),
        info=jnp.zeros((p, p), dtype),
        eig=(jnp.ones(p, dtype), jnp.zeros(p, dtype), jnp.zeros((p, p), dtype)),
        warm=warm_start(fe, dtype),
        cg_ok=jnp.asarray(True),
    )
    terms0 = jax.eval_shape(lambda th: terms(f, fe, th, batch, chunk_size, rows=fe.m > 1), theta0)
    terms0 = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), terms0)
    st = ascend(evaluate, direction, theta0, (solved0, terms0), max_iter=max_iter, tol=tol,
                compute_dtype=compute_dtype)  # fmt: skip
    solved, t = st.carry
    if fe.m > 1:  # the estimate's solve to full accuracy, from the last one
        solved = eliminate(t, fe, codes, keep, solved.warm, max_cg=max_cg)[3]
    return st._replace(carry=solved)


def pieces(f, fe: IndexSpec, theta, batch: Batch, chunk_size, solved: Solved, *, n_groups,
           weight_kind, n_obs, n_clusters=None) -> Pieces:  # fmt: skip
    """Pieces over the free b at the estimate: information S, meat and cluster sums of the
    partialled-out scores u~_i = u_bi - sum_m u_{z_m,i} Y_b,m[g_m(i)]."""
    b_index = np.asarray(fe.b_index, int)
    b_free = np.asarray(fe.b_free, int)
    p = len(b_free)
    b_all = theta[b_index]
    dtype = theta.dtype
    sampling = weight_kind == "sampling"

    def chunk(b, mask):
        z = row_effects(fe, theta, b.data)
        u_b, u_z = jax.vmap(jax.grad(f, argnums=(0, 1)), (None, 0, 0))(b_all, z, b.data)
        u = u_b[:, b_free]
        for k in range(fe.m):
            u = u - u_z[:, k, None] * solved.y_b[k][b.data[fe.columns[k]]]
        w = mask * b.weights
        wu = u * w[:, None]
        opg = wu.T @ u
        # prepared weights are w_i x (row kept): their square is w_i^2 x (row kept)
        meat = (wu * b.weights[:, None]).T @ u if sampling else opg
        sg = (
            jnp.zeros((0, p), dtype)
            if b.groups is None
            else jax.ops.segment_sum(wu, b.groups, num_segments=n_groups)
        )
        return (meat, sg), jnp.zeros((0, 0), dtype)

    groups = 0 if batch.groups is None else n_groups
    zeros = (jnp.zeros((p, p), dtype), jnp.zeros((groups, p), dtype))
    (meat, sg), _ = _walk(chunk, batch, chunk_size, zeros, jnp.zeros((0, 0), dtype))
    nan = jnp.full((p, p), jnp.nan, dtype)
    return Pieces(solved.info, nan, 0.5 * (meat + meat.T), sg, nan, n_obs, n_clusters=n_clusters)
