"""The compiled GEE program: geepack's iteration to its fixed point, then the three covariances.

Notation (Liang and Zeger 1986; geepack's gee2.cc): cluster g has rows j with design x_j, mean
mu_j = g^-1(x_j'b + offset_j), variance function V(mu_j), prior weight w_j;
    D_j = sqrt(w_j) mu'(eta_j) / sqrt(V_j) x_j        r_j = (y_j - mu_j) / sqrt(V_j)  (Pearson)
and the working covariance phi A^1/2 R(alpha) A^1/2 enters as (with weights) phi^-1 W^1/2 R^-1 W^1/2:
    A = phi^-1 sum_g D_g' R_g^-1 D_g        U = phi^-1 sum_g D_g' R_g^-1 sqrt(w) r_g
Each iteration (geepack `gee_est`): one Fisher-scoring step b += A^-1 U (halved while the new means are
invalid), then at the new b the scale phi = sum_j w_j r_j^2 / sum_j w_j (divided by N, not N - p;
estimated for every family, binomial and Poisson included) and one step of geepack's alpha update
(`_corstr`); until the largest change of (b, phi, alpha), relative to max(1, |value|), is below tol.
The start is one weighted least-squares step from the family's starting means (R's glm start), with
alpha from its residuals.

At the fixed point, with U_g = phi^-1 D_g' R_g^-1 sqrt(w) r_g and A_g = phi^-1 D_g' R_g^-1 D_g:
    naive         A^-1                                              geepack `vbeta.naiv`
    robust        A^-1 (sum_g U_g U_g') A^-1                        geepack `vbeta` (san.se)
    bias_reduced  A^-1 (sum_g U~_g U~_g') A^-1, U~_g = (I - A_g A^-1)^-1 U_g
                  (Mancl and DeRouen 2001: D_g' V_g^-1 (I - H_gg)^-1 (y_g - mu_g), H_gg =
                  D_g A^-1 D_g' V_g^-1, rewritten by push-through so that only p x p systems are
                  solved)                                           statsmodels cov_type="bias_reduced"
Every sum over clusters is a `chunked_sum` over chunks of clusters of each bucket (clusters padded
to a common size; padded slots have zero weight and a valid mean, so they add exactly zero).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ._accumulate import Layout, chunked_sum
from ._covariance import psd_inverse
from ._status import Status

# step halvings allowed when a scoring step leaves the family's means invalid (geepack halves too)
_MAX_HALVINGS = 30


class GEEFit(NamedTuple):
    beta: jax.Array
    alpha: jax.Array
    scale: jax.Array
    information: jax.Array  # A (with 1/phi)
    score: jax.Array  # U at the estimate
    meat: jax.Array  # sum_g U_g U_g'
    bias_reduced_meat: jax.Array
    n_iter: jax.Array
    change: jax.Array
    status: jax.Array


def _linear(fam, beta, g):
    """(D (G, m, p) with sqrt(w), sqrt(w) r (G, m), r (G, m)) on one chunk of a bucket."""
    eta = g["X"] @ beta + g["offset"]
    mu, dmu = jax.jvp(fam.mean, (eta,), (jnp.ones_like(eta),))
    sd = jnp.sqrt(fam.variance(mu, None))
    r = (g["y"] - mu) / sd
    root_w = jnp.sqrt(g["w"])
    return (root_w * dmu / sd)[..., None] * g["X"], root_w * r, r


def _gram(fam, corstr, op, beta, g, mask):
    """(sum_g D_g' R^-1 D_g, sum_g D_g' R^-1 sqrt(w) r_g) without 1/phi, one GEMM."""
    d, rw, _ = _linear(fam, beta, g)
    v = jnp.concatenate([d, rw[..., None]], axis=-1) * mask[:, None, None]
    lv = corstr.whiten(op, v, g).reshape(-1, v.shape[-1])
    m = lv.T @ lv
    return m[:-1, :-1], m[:-1, -1]


@partial(jax.jit, static_argnames=("fam", "corstr", "n_waves", "chunks", "max_iter", "tol"))
def fit_gee(buckets, ctx, *, fam, corstr, n_waves, chunks, max_iter, tol) -> GEEFit:
    """buckets: tuple of per-bucket grids {X, y, offset, w, mask, wave, pattern, mustart}; ctx:
    {patterns (P, K), max_size}; `chunks` the clusters per chunk of each bucket."""
    ctx = {**ctx, "n_waves": n_waves}
    p = buckets[0]["X"].shape[-1]
    dt = buckets[0]["X"].dtype
    layouts = tuple(Layout(c) for c in chunks)

    def total(chunk_fn, zeros):
        out = zeros
        for b, layout in zip(buckets, layouts, strict=True):
            part = chunked_sum(chunk_fn, b, layout, zeros)
            out = jax.tree.map(jnp.add, out, part)
        return out

    kk, k1 = jnp.zeros((p, p), dt), jnp.zeros(p, dt)

    def fisher(beta, alpha):
        op = corstr.prepare(alpha, ctx)
        return total(lambda g, m: _gram(fam, corstr, op, beta, g, m), (kk, k1))

    def residuals(beta):
        """(sum w r^2, sum w, the alpha statistics) at beta."""

        def chunk(g, mask):
            _, _, r = _linear(fam, beta, g)
            r = r * mask[:, None]
            w = g["w"] * mask[:, None]
            stats = corstr.stats(r, {**g, "w": w}, ctx)
            return jnp.sum(w * r**2), jnp.sum(w), stats

        zeros = (jnp.zeros((), dt), jnp.zeros((), dt), corstr.stats_zeros(n_waves, dt))
        return total(chunk, zeros)

    def start():
        """One weighted least-squares step from the starting means (R's glm start)."""

        def chunk(g, mask):
            eta0 = fam.link.linkfun(g["mustart"])
            mu0, dmu = jax.jvp(fam.mean, (eta0,), (jnp.ones_like(eta0),))
            z = eta0 - g["offset"] + (g["y"] - mu0) / dmu
            wt = jnp.sqrt(g["w"] * dmu**2 / fam.variance(mu0, None)) * mask[:, None]
            v = jnp.concatenate([g["X"], z[..., None]], axis=-1) * wt[..., None]
            v = v.reshape(-1, p + 1)
            m = v.T @ v
            return m[:-1, :-1], m[:-1, -1]

        a, u = total(chunk, (kk, k1))
        return jnp.linalg.solve(a, u)

    def line_search(beta, alpha, step):
        """(t, phi, alpha) at beta + t step: t = 1, halved while the new means are invalid (the
        residual pass is not finite); one residual pass per try, traced once."""

        def body(s):
            t, _, _, _, n = s
            t = jnp.where(n == 0, 1.0, 0.5 * t)
            ss, sw, stats = residuals(beta + t * step)
            phi = ss / sw
            return t, phi, corstr.update(alpha, stats, phi), jnp.isfinite(ss), n + 1

        first = (jnp.ones((), dt), jnp.ones((), dt), alpha, jnp.asarray(False), 0)
        t, phi, alpha_new, _, _ = lax.while_loop(
            lambda s: ~s[3] & (s[4] <= _MAX_HALVINGS), body, first
        )
        return t, phi, alpha_new

    def cond(st):
        *_, it, change = st
        return (it < max_iter) & (change > tol) & ~jnp.isnan(change)

    def body(st):
        beta, alpha, phi, it, _ = st
        a, u = fisher(beta, alpha)
        step = jnp.linalg.solve(a, u)
        t, phi_new, alpha_new = line_search(beta, alpha, step)
        beta_new = beta + t * step
        change = jnp.max(
            jnp.concatenate(
                [
                    jnp.abs(t * step) / jnp.maximum(1.0, jnp.abs(beta_new)),
                    (jnp.abs(phi_new - phi) / jnp.maximum(1.0, phi_new))[None],
                    jnp.abs(alpha_new - alpha),
                ]
            )
        )
        return beta_new, alpha_new, phi_new, it + 1, change

    # geepack's start: alpha = 0, so the first step is an IRLS step of the GLM
    alpha0 = jnp.zeros(corstr.n_alpha(n_waves), dt)
    init = (start(), alpha0, jnp.ones((), dt), jnp.asarray(0), jnp.asarray(jnp.inf, dt))
    beta, alpha, phi, n_iter, change = lax.while_loop(cond, body, init)

    # the covariances at the fixed point: A first, then the per-cluster pieces that need A^-1
    a_raw, u_raw = fisher(beta, alpha)
    info, score = a_raw / phi, u_raw / phi
    ainv, info_status = psd_inverse(info)
    op = corstr.prepare(alpha, ctx)

    def meats(g, mask):
        d, rw, _ = _linear(fam, beta, g)
        v = jnp.concatenate([d, rw[..., None]], axis=-1) * mask[:, None, None]
        lv = corstr.whiten(op, v, g)
        m = jnp.einsum("gji,gjk->gik", lv, lv) / phi  # per cluster (p+1) x (p+1)
        a_g, u_g = m[:, :-1, :-1], m[:, :-1, -1]
        eye = jnp.eye(p, dtype=dt)
        u_tilde = jnp.linalg.solve(eye - a_g @ ainv, u_g[..., None])[..., 0]
        return u_g.T @ u_g, u_tilde.T @ u_tilde

    meat, md_meat = total(meats, (kk, kk))
    valid = corstr.valid(alpha, ctx)
    finite = jnp.all(jnp.isfinite(beta)) & jnp.isfinite(phi) & jnp.all(jnp.isfinite(alpha))
    status = jnp.select(
        [~valid, ~finite | ~jnp.isfinite(change), change > tol, info_status != Status.SUCCESSFUL],
        [Status.CORRELATION_NOT_PD, Status.NONFINITE, Status.GEE_MAX_ITER, info_status],
        Status.SUCCESSFUL,
    ).astype(jnp.int32)
    return GEEFit(beta, alpha, phi, info, score, meat, md_meat, n_iter, change, status)
