"""One compiled program for a Gaussian linear mixed model: cross products, Newton on the profiled
deviance, then every number the result reports.

The search runs over theta alone (beta and sigma profiled out, `_lmm`), by the safeguarded Newton loop
of `_solvers.maximize` with the exact gradient and Hessian of d(theta) by autodiff through the
factorisation: a handful of iterations, each a few passes over the levels, none over the rows.

Boundary. Zero is an interior point of theta, so a zero variance is reached by Newton like any other
value; at the end a diagonal entry of Lambda below `SNAP` (lme4's `isSingular` tolerance) is set to 0
when that does not raise the deviance by more than its rounding, and columns of Lambda are given
non-negative diagonals (d is even in their signs). A zero diagonal is lme4's "boundary (singular) fit":
status `BOUNDARY`, with the fixed effects, sigma and the other components still at the optimum.

Reported (lme4's definitions):
    beta, u    from the factor (b = Lambda u, the conditional modes: R `ranef(m)`)
    sigma^2    r^2 / n (ML) or r^2 / (n - p) (REML)                   R `sigma(m)^2`
    vcov(beta) sigma^2 (R_X' R_X)^-1                                 R `vcov(m)`
    Var(b|y)   sigma^2 Lambda (Lambda'Z'WZ Lambda + I)^-1 Lambda', its per-level diagonal blocks
               (beta held at beta_hat)                                R `ranef(m, condVar = TRUE)`
    Var(phi)   inverse observed information of the (RE)ML log-likelihood, beta profiled out, in
               phi = (sd, cor, sigma): no lme4 twin (lme4 gives profile intervals); NaN at a boundary
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ._covariance import psd_inverse
from ._lmm import (
    LMMLayout,
    cross_products,
    factor_lambda,
    factorize,
    n_resid,
    profiled_deviance,
    solve_upper_t_small,
    tril_index,
)
from ._objective import Terms
from ._solvers import METHODS, maximize
from ._status import Status
from ._varcomp import all_phi_to_theta, all_theta_to_phi

# lme4's isSingular(tol = 1e-4): a relative standard deviation below this is a candidate zero
SNAP = 1e-4
# ... set to 0 when the deviance rises by at most this many ulps of itself (its rounding)
_SNAP_ULPS = 1e4


def diagonal_positions(layout: LMMLayout) -> np.ndarray:
    """Indices in theta of the diagonal entries of the Lambda_t."""
    out = []
    for sl, q in zip(layout.theta_slices, layout.q, strict=True):
        rows, cols = tril_index(q)
        out += list(sl.start + np.flatnonzero(rows == cols))
    return np.asarray(out, int)


def canonical_signs(layout: LMMLayout, theta):
    """(theta with every column of every Lambda_t flipped to a non-negative diagonal, the signs)."""
    parts = []
    for sl, q in zip(layout.theta_slices, layout.q, strict=True):
        rows, cols = tril_index(q)
        th = theta[sl]
        diag = th[np.flatnonzero(rows == cols)]
        sign = jnp.where(diag < 0, -1.0, 1.0)
        parts.append(sign[cols])
    signs = jnp.concatenate(parts)
    return theta * signs, signs


@functools.partial(jax.jit, static_argnames="layout")
def lmm_cross_products(X, y, w, offset, Zs, codes, *, layout):
    """(cross products, n, log|W|): the one pass over the rows (`_lmm.cross_products`)."""
    with jax.default_matmul_precision("highest"):
        stats = cross_products(layout, X, y - offset, w, Zs, codes)
    return stats, jnp.asarray(y.shape[0], X.dtype), jnp.sum(jnp.log(w))


@functools.partial(jax.jit, static_argnames=("layout", "max_iter", "tol"))
def fit_lmm(stats, n, ldW, theta0, reml, *, layout, max_iter, tol):
    """Everything an lmer result holds, as a dict of arrays (see the module docstring), from the
    cross products: the program depends on the layout (term sizes and the levels, padded to
    `_lmm.padded_levels`) but not on the number of rows, and `reml` is 1.0 (REML) or 0.0 (ML), an
    array, so both fits of a model and similar models on other data share it."""
    with jax.default_matmul_precision("highest"):
        return _fit_lmm(stats, n, ldW, theta0, reml, layout, max_iter, tol)


def value_grad_hess(f, x):
    """(f(x), grad f, Hessian f) from one forward-over-reverse trace (smaller than three)."""

    def grad_aux(x):
        return jax.jacrev(lambda x: (lambda v: (v, v))(f(x)), has_aux=True)(x)

    H, (g, v) = jax.jacfwd(lambda x: (lambda ga: (ga[0], ga))(grad_aux(x)), has_aux=True)(x)
    return v, g, H


def _fit_lmm(stats, n, ldW, theta0, reml, layout, max_iter, tol):
    qs = layout.q

    def dev(theta):
        return profiled_deviance(layout, reml, theta, stats, n, ldW)

    def evaluate(theta):
        d, g, H = value_grad_hess(dev, theta)
        return Terms(-0.5 * d, -0.5 * g, 0.5 * H)

    st = maximize(evaluate, theta0, method=METHODS["newton"], max_iter=max_iter, tol=tol)

    # boundary: zero the diagonals that are zero to rounding
    diag = diagonal_positions(layout)
    small = jnp.zeros(st.theta.shape, bool).at[diag].set(jnp.abs(st.theta[diag]) < SNAP)
    snapped = jnp.where(small, 0.0, st.theta)
    d_fit, d_snap = -2.0 * st.loglik, dev(snapped)
    keep_snap = d_snap <= d_fit + _SNAP_ULPS * jnp.finfo(d_fit.dtype).eps * jnp.abs(d_fit)
    theta, signs = canonical_signs(layout, jnp.where(keep_snap, snapped, st.theta))
    singular = jnp.any(theta[diag] == 0.0)
    deviance = jnp.where(keep_snap, d_snap, d_fit)

    out = _estimates(layout, reml, theta, stats, n)
    sigma = out.pop("sigma")
    phi = jnp.concatenate([all_theta_to_phi(qs, layout.theta_slices, theta, sigma), sigma[None]])
    d2 = 2.0 * signs[:, None] * st.matrix * signs[None, :]  # d'' at the sign-canonical theta
    nu = n_resid(layout, n, reml)
    info_phi, score_phi = _phi_information(qs, phi, d2, signs * st.score, out.pop("r2"),
                                           out.pop("grad_r2"), nu)  # fmt: skip
    cov_phi, _ = psd_inverse(info_phi)
    cov_phi = jnp.where(singular, jnp.nan, cov_phi)

    status = jnp.select(
        [
            st.failed_start,
            ~jnp.isfinite(st.loglik) | ~jnp.isfinite(st.decrement),
            st.failed_search,
            (st.decrement > tol) & ~st.at_floor,
            singular,
        ],
        [
            Status.NONFINITE_START,
            Status.NONFINITE,
            Status.LINE_SEARCH_FAILED,
            Status.MAX_ITER,
            Status.BOUNDARY,
        ],
        Status.SUCCESSFUL,
    ).astype(jnp.int32)
    return {
        **out,
        "theta": theta,
        "phi": phi,
        "info_phi": info_phi,
        "score_phi": score_phi,
        "cov_phi": cov_phi,
        "loglik": -0.5 * deviance,
        "status": status,
        "n_iter": st.n_iter,
        "n_damped": st.n_damped,
        "scaled_gradient": st.decrement,
    }


def _phi_information(qs, phi, d2, score_theta, r2, g, nu):
    """(-Hessian, score) of lnL in phi = (sd, cor, sigma) at the optimum, by the chain rule from the
    search's last Hessian d'' of d(theta). With F(theta, sigma) = -2 lnL at sigma, sigma_hat^2 =
    r^2 / nu and d(theta) = F(theta, sigma_hat(theta)):
        F_tt = d'' + nu g g' / r^4,   F_ts = -2 g / sigma^3,   F_ss = 4 nu / sigma^2   (g = grad r^2)
    and -H_phi = J' (F'' / 2) J, J = d(theta, sigma) / d phi (F's gradient is 0 at the optimum)."""
    sigma = phi[-1]
    F_tt = d2 + nu * jnp.outer(g, g) / r2**2
    F_ts = -2.0 * g / sigma**3
    F_ss = 4.0 * nu / sigma**2
    F = jnp.block([[F_tt, F_ts[:, None]], [F_ts[None, :], F_ss[None, None]]])

    def theta_sigma(ph):
        return jnp.concatenate([all_phi_to_theta(qs, ph[:-1], ph[-1]), ph[-1:]])

    J = jax.jacfwd(theta_sigma)(phi)
    score = J.T @ jnp.concatenate([score_theta, jnp.zeros(1, phi.dtype)])
    return 0.5 * J.T @ F @ J, score


def _estimates(layout: LMMLayout, reml, theta, stats, n):
    """beta, its covariance, sigma, the conditional modes b and their conditional covariances, and
    grad r^2 (by the envelope theorem: d r^2 / d theta_k = -2 e'WZ (dLambda/dtheta_k) u, e the
    penalised least-squares residual; Z'We comes from the cross products)."""
    L1, R1, LD = factorize(layout, theta, stats)
    lambdas = [factor_lambda(layout, theta, f) for f in range(layout.n_factors)]
    R, p, D = layout.R, layout.p, layout.D
    dD = jnp.diagonal(LD)
    r2 = jnp.square(dD[-1])
    sigma2 = r2 / n_resid(layout, n, reml)

    # [u_rest, beta] from L_DD' s = l (l: the y row of LD), then u_1 from L1' u1 = R1_y - R1_a s
    L_aa = LD[: D - 1, : D - 1]
    s = jax.scipy.linalg.solve_triangular(L_aa, LD[D - 1, : D - 1], lower=True, trans="T")
    rhs = R1[:, :, D - 1] - jnp.einsum("gid,d->gi", R1[:, :, : D - 1], s)
    u1 = solve_upper_t_small(L1, rhs[..., None])[..., 0]
    beta = s[R : R + p]
    LX = LD[R : R + p, R : R + p]
    LX_inv = jax.scipy.linalg.solve_triangular(LX, jnp.eye(p, dtype=LX.dtype), lower=True)
    cov_beta = sigma2 * LX_inv.T @ LX_inv

    # conditional covariances: diagonal blocks of (L_Z L_Z')^-1, L_Z = [[L1, 0], [R1_Z', L_ZZ]]
    eye1 = jnp.broadcast_to(jnp.eye(L1.shape[-1]), L1.shape)
    L1_inv = jax.scipy.linalg.solve_triangular(L1, eye1, lower=True)
    V1 = jnp.einsum("gki,gkj->gij", L1_inv, L1_inv)
    b1 = u1 @ lambdas[0].T
    b, u, V = [b1], [u1], [V1]
    # Z'We for the first factor: [Z'Wy - Z'WX beta] - Z'WZ b
    C1D, CDD = stats["C1D"], stats["CDD"]
    v1 = C1D[:, :, D - 1] - C1D[:, :, R : R + p] @ beta - jnp.einsum("gij,gj->gi", stats["C11"], b1)
    v = [v1]
    if R:
        L_ZZ = LD[:R, :R]
        LZ_inv = jax.scipy.linalg.solve_triangular(L_ZZ, jnp.eye(R, dtype=LD.dtype), lower=True)
        # P_g = L1_g^-T R1_g,Z L_ZZ^-T: the first factor's share of the other factors' uncertainty
        P = jnp.einsum("gji,gjr,sr->gis", L1_inv, R1[:, :, :R], LZ_inv)
        V[0] = V1 + jnp.einsum("gis,gjs->gij", P, P)
        b_rest = []
        for f in range(1, layout.n_factors):
            off, G, Q = layout.rest_offset(f), layout.n_levels[f], layout.Q(f)
            u_f = s[off : off + G * Q].reshape(G, Q)
            u.append(u_f)
            b.append(u_f @ lambdas[f].T)
            b_rest.append(b[-1].reshape(-1))
            cols = LZ_inv[:, off : off + G * Q].reshape(R, G, Q)
            V.append(jnp.einsum("rgi,rgj->gij", cols, cols))
        b_rest = jnp.concatenate(b_rest)
        v[0] = v1 - C1D[:, :, :R] @ b_rest
        v_rest = (
            CDD[:R, D - 1]
            - CDD[:R, R : R + p] @ beta
            - jnp.einsum("gir,gi->r", C1D[:, :, :R], b1)
            - CDD[:R, :R] @ b_rest
        )
        for f in range(1, layout.n_factors):
            off, G, Q = layout.rest_offset(f), layout.n_levels[f], layout.Q(f)
            v.append(v_rest[off : off + G * Q].reshape(G, Q))
    grad_r2 = []
    for t, q in enumerate(layout.q):
        f = layout.term_factor[t]
        start = sum(layout.q[k] for k in layout.terms_of(f) if k < t)
        rows, cols = tril_index(q)
        M = jnp.einsum("gi,gj->ij", v[f], u[f])  # sum_g v_g u_g'
        grad_r2.append(-2.0 * M[start + rows, start + cols])
    cond_cov = [
        sigma2 * jnp.einsum("ij,gjk,lk->gil", lam, vv, lam)
        for lam, vv in zip(lambdas, V, strict=True)
    ]
    return {
        "beta": beta,
        "cov_beta": cov_beta,
        "sigma": jnp.sqrt(sigma2),
        "r2": r2,
        "grad_r2": jnp.concatenate(grad_r2),
        "ranef": tuple(b),
        "ranef_cov": tuple(cond_cov),
    }
