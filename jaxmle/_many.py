"""The compiled program of the fits that never store a k x k matrix: the Hessian-free methods
("lbfgs", "newton-cg") and every fit with `index=` (fixed effects), returning a `SubsetResult`.

    prepare    with index=: drop constant-outcome levels, mark empty and reference levels
               (`_fixed_effects.prepare`); their effects are held at 0 during the fit, NaN after
               (dropped, empty) or 0 (references)
    maximise   the method's driver (`_solvers.Method.driver`, or `.indexed` under index=):
               "fe-newton" (`_fe_newton`), "lbfgs" (`_lbfgs`), "newton-cg" (`_newton_cg`); the
               Hessian-free ones preconditioned by the diagonal of the structured information
               under index= (1 otherwise)
    covariance over the block (se_for; by default the non-indexed parameters under index=, every
               free parameter otherwise): by elimination of the effects under index=; from the
               dense information when the free parameters are few (`DENSE_LIMIT`); else by CG
               solves with information-vector products (`_hessian_free`)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from . import _fe_newton as fen
from ._covariance import KINDS, Pieces, covariance, psd_inverse
from ._fixed_effects import prepare, row_logpdf
from ._hessian_free import block_pieces, block_scores, information_product, solve_block
from ._lbfgs import lbfgs
from ._newton_cg import newton_cg
from ._objective import Batch, Objective
from ._solvers import equilibrated_eigh
from ._status import Status
from ._subset import EffectsInfo, SubsetResult, reduce_pieces

# Up to this many free parameters, the covariance block of a Hessian-free fit comes from the dense
# information (one pass, k tangents: cheaper than k CG solves); beyond it only from CG solves.
DENSE_LIMIT = 500
# Default caps on conjugate-gradient steps (each one pass over the data, or over the index rows).
MAX_CG = 1000


def default_block(index, free) -> tuple[int, ...]:
    """The covariance block when se_for is not given: the free non-indexed entries under index=,
    every free parameter otherwise."""
    if index is not None:
        b = np.asarray(index.b_index, int)[np.asarray(index.b_free, int)]
        return tuple(int(i) for i in b)
    return tuple(int(i) for i in np.flatnonzero(free))


@functools.partial(
    jax.jit,
    static_argnames=(
        "logpdf", "spec", "names", "free", "method", "driver", "cov", "max_iter", "tol", "layout",
        "n_rows", "n_groups", "weight_kind", "compute_dtype", "block", "index", "dense_cov",
    ),
)  # fmt: skip
def fit_program(
    theta0, data, weights, groups, *, logpdf, spec, names, free, method, driver, cov, max_iter,
    tol, layout, n_rows, n_groups, weight_kind, compute_dtype, block, index, dense_cov,
) -> SubsetResult:  # fmt: skip
    with jax.default_matmul_precision("highest"):
        return _program(
            theta0, data, weights, groups, logpdf, spec, names, free, method, driver, cov,
            max_iter, tol, layout, n_rows, n_groups, weight_kind, compute_dtype, block, index,
            dense_cov,
        )  # fmt: skip


def _program(
    theta0, data, weights, groups, logpdf, spec, names, free, method, driver, cov, max_iter, tol,
    layout, n_rows, n_groups, weight_kind, compute_dtype, block, index, dense_cov,
):  # fmt: skip
    k = theta0.shape[0]
    dtype = theta0.dtype
    free_idx = np.flatnonzero(free)
    position = np.cumsum(free) - 1  # flat index -> index among the free parameters
    batch = Batch(data, weights, groups)
    chunk = layout.chunk_size

    if index is not None:
        f = row_logpdf(logpdf, index, spec.treedef, compute_dtype)
        prep = prepare(f, index, theta0, batch, layout)
        batch = batch._replace(weights=prep.weights)
        pinned = jnp.zeros(k, bool)
        for s, g, keep in zip(index.starts, index.sizes, prep.keep, strict=True):
            pinned = pinned.at[s : s + g].set(~keep)
        theta0 = jnp.where(pinned, 0.0, theta0)
        if weight_kind == "sampling":
            n_obs = jnp.sum(prep.weights > 0).astype(dtype)
        else:
            n_obs = jnp.sum(prep.weights).astype(dtype)
    elif weights is not None and weight_kind == "frequency":
        n_obs = jnp.sum(weights).astype(dtype)
    else:
        n_obs = jnp.asarray(n_rows, dtype)

    unravel = spec.unravel
    if compute_dtype is not None:

        def unravel(flat):
            return jax.tree.map(lambda x: x.astype(compute_dtype), spec.unravel(flat))

    def embed(theta_free):
        return theta0.at[free_idx].set(theta_free)

    obj = Objective(logpdf, unravel, embed, batch, layout, n_groups, weight_kind, None)
    full = obj._replace(embed=lambda t: t)
    cg_ok = jnp.asarray(True)

    if driver == "fe-newton":
        st = fen.fe_newton(f, index, theta0, batch, chunk, prep.keep, max_iter=max_iter, tol=tol,
                           max_cg=MAX_CG, compute_dtype=compute_dtype)  # fmt: skip
        theta_hat, loglik, score = st.theta, st.loglik, st.score
        solved = st.carry
    else:
        if index is not None:
            t0 = fen.terms(f, index, theta0, batch, chunk, rows=False)
            inv_diag = _structured_inverse_diagonal(t0, index, prep.keep, k)[free_idx]
        else:
            inv_diag = jnp.ones(len(free_idx), dtype)
        if driver == "lbfgs":
            st = lbfgs(obj, theta0[free_idx], jnp.sqrt(inv_diag), max_iter=max_iter, tol=tol,
                       compute_dtype=compute_dtype)  # fmt: skip
        else:
            st = newton_cg(obj, theta0[free_idx], inv_diag, max_iter=max_iter, tol=tol,
                           max_cg=min(2 * len(free_idx), MAX_CG), compute_dtype=compute_dtype)  # fmt: skip
        theta_hat = embed(st.theta)
        final = full.loglik_grad(theta_hat)
        loglik, score = final.loglik, final.score
        if index is not None:
            t = fen.terms(f, index, theta_hat, batch, chunk, rows=index.m > 1)
            solved = fen.eliminate(
                t, index, [batch.data[c] for c in index.columns], prep.keep,
                fen.warm_start(index, dtype), max_cg=MAX_CG,
            )[3]  # fmt: skip

    block_arr = np.asarray(block, int)
    n_clusters = None
    if index is not None and groups is not None:  # clusters that kept a row
        rows = jax.ops.segment_sum((prep.weights > 0).astype(jnp.int32), groups, n_groups)
        n_clusters = jnp.sum(rows > 0).astype(dtype)
    if index is not None:
        pieces = fen.pieces(f, index, theta_hat, batch, chunk, solved, n_groups=n_groups,
                            weight_kind=weight_kind, n_obs=n_obs, n_clusters=n_clusters)  # fmt: skip
        b_flat = np.asarray(index.b_index, int)[np.asarray(index.b_free, int)]
        within = np.searchsorted(b_flat, block_arr)
        pieces = reduce_pieces(pieces, within)
        cg_ok = solved.cg_ok
    elif dense_cov:
        info = full.newton(theta_hat).matrix[free_idx][:, free_idx]
        sc = full.scores(theta_hat, theta_hat)
        nan = jnp.full_like(info, jnp.nan)
        pieces = Pieces(info, sc.opg[free_idx][:, free_idx], sc.meat[free_idx][:, free_idx],
                        sc.score_groups[:, free_idx], nan, n_obs)  # fmt: skip
        pieces = reduce_pieces(pieces, position[block_arr])
    else:
        within = position[block_arr]
        product = information_product(obj, st.theta)
        cg = solve_block(product, jnp.asarray(within), inv_diag, max_steps=MAX_CG)
        scores = block_scores(obj, st.theta, cg.x)
        pieces, _ = block_pieces(cg.x[within], scores, n_obs)
        cg_ok = jnp.all(cg.converged)

    if len(block):
        # one eigen-decomposition of the block's information serves the status and the bread
        eig = equilibrated_eigh(pieces.information)
        cov_b, cov_status = covariance(KINDS[cov], pieces, information_eig=eig)
        _, info_status = psd_inverse(pieces.information, eig)
    else:  # every non-indexed parameter held (a profile refit): nothing to cover
        cov_b, cov_status = pieces.information, jnp.asarray(Status.SUCCESSFUL)
        info_status = cov_status
    bad_groups = (
        jnp.asarray(False) if groups is None else jnp.any((groups < 0) | (groups >= n_groups))
    )
    status = jnp.select(
        [
            st.failed_start,
            ~jnp.isfinite(loglik) | ~jnp.isfinite(st.decrement),
            bad_groups,
            st.failed_search,
            (st.decrement > tol) & ~st.at_floor,
            ~cg_ok,
            info_status != Status.SUCCESSFUL,
            cov_status != Status.SUCCESSFUL,
        ],
        [
            Status.NONFINITE_START,
            Status.NONFINITE,
            Status.BAD_GROUPS,
            Status.LINE_SEARCH_FAILED,
            Status.MAX_ITER,
            Status.CG_NOT_CONVERGED,
            info_status,
            cov_status,
        ],
        Status.SUCCESSFUL,
    ).astype(jnp.int32)
    cov_b = jnp.where(~cg_ok | (bad_groups & (cov == "cluster")), jnp.nan, cov_b)
    se = jnp.full(k, jnp.nan, dtype).at[block_arr].set(jnp.sqrt(jnp.diagonal(cov_b)))

    effects = None
    estimate = theta_hat
    if index is not None:
        for s, g, gone, empty in zip(
            index.starts, index.sizes, prep.dropped, prep.empty, strict=True
        ):
            estimate = estimate.at[s : s + g].set(
                jnp.where(gone | empty, jnp.nan, estimate[s : s + g])
            )
        effects = EffectsInfo(
            n_levels=jnp.asarray(index.sizes, jnp.int32),
            n_dropped=jnp.stack([jnp.sum(x) for x in prep.dropped]).astype(jnp.int32),
            n_empty=jnp.stack([jnp.sum(x) for x in prep.empty]).astype(jnp.int32),
            n_references=jnp.stack([jnp.sum(x) for x in prep.reference]).astype(jnp.int32),
            n_dropped_rows=prep.n_dropped_rows.astype(jnp.int32),
        )
    return SubsetResult(
        params=spec.unravel(estimate),
        se=spec.unravel(se),
        cov=cov_b,
        loglik=loglik,
        score=score,
        information=pieces.information,
        expected_information=pieces.expected,
        opg=pieces.opg,
        meat=pieces.meat,
        score_groups=pieces.score_groups,
        n_obs=n_obs,
        n_iter=st.n_iter,
        n_damped=st.n_damped,
        start_rows=jnp.asarray(0, jnp.int32),
        scaled_gradient=st.decrement,
        status=status,
        names=names,
        free=free,
        method=method,
        cov_type=cov,
        effects=effects,
        n_clusters=n_clusters,
        block=block,
        index=() if index is None else tuple(zip(index.keys, index.columns, strict=True)),
    )


def _structured_inverse_diagonal(t, index, keep, k):
    """1 / diag(A) over the full flat vector from one structured pass: |A_bb|'s diagonal for the
    free non-indexed entries, A_aa's for the effects; 0 (held) for the pinned levels."""
    dtype = t.info_bb.dtype
    inv = jnp.ones(k, dtype)
    b_flat = np.asarray(index.b_index, int)[np.asarray(index.b_free, int)]
    diag = jnp.abs(jnp.diagonal(t.info_bb))
    inv = inv.at[b_flat].set(jnp.where(diag > 0, 1.0 / jnp.where(diag > 0, diag, 1.0), 1.0))
    for s, g, d, kk in zip(index.starts, index.sizes, t.info_aa, keep, strict=True):
        inv = inv.at[s : s + g].set(jnp.where(kk & (d > 0), 1.0 / jnp.where(d > 0, d, 1.0), 0.0))
    return inv
