"""The Gaussian linear mixed model's profiled (RE)ML deviance, as lme4 computes it (pure JAX).

    y = X beta + Z b + e,  b ~ N(0, sigma^2 Lambda Lambda'),  e ~ N(0, sigma^2 W^-1)

With b = Lambda u (u spherical) the penalised least-squares problem
    r^2(theta) = min_{u, beta} |W^1/2 (y - X beta - Z Lambda u)|^2 + |u|^2
is solved by one Cholesky factorisation of the cross-product matrix of [Z Lambda, X, y] with I added
to its u block: its diagonal holds L (Lambda'Z'WZ Lambda + I = L L'), R_X and sqrt(r^2). Profiling out
beta and sigma leaves a function of theta (the lower triangles of the Lambda_t) alone (Bates, Maechler,
Bolker & Walker 2015, "Fitting linear mixed-effects models using lme4", JSS 67(1), eqs. 34 and 41):
    ML    d(theta) = log|L|^2 - log|W| + n (1 + log(2 pi r^2 / n))
    REML  d(theta) = log|L|^2 - log|W| + log|R_X|^2 + (n - p) (1 + log(2 pi r^2 / (n - p)))
and -d/2 is R's `logLik(m)`. d depends on Lambda only through Lambda Lambda', so it is even in the
sign of each column of Lambda: theta ranges over all of R^m, a zero variance is an interior point
(reachable, not a log-SD running off to -inf) and d is smooth there.

Sparsity. The factor with the most levels ("the first factor", lme4's first term) makes
Lambda'Z'WZ Lambda + I block diagonal: one Q1 x Q1 block per level, Q1 the number of its random
effects. Those blocks are eliminated first by a batched small Cholesky (elementwise over the levels;
no G Q1 x G Q1 matrix ever exists). What remains, the effects of the other (crossed) factors, X and y,
is a dense Schur complement of size D = R + p + 1 (R = sum over the other factors of levels x
effects), factorised once per evaluation. Cost per evaluation: O(G1 Q1 D^2 + D^3), independent of n:
the data enter once, through their cross products (`cross_products`), computed before the search.
For one factor (D = p + 1) an evaluation is a few vector operations over the levels; for two crossed
factors it is cheap while the second has up to a few hundred levels (measured in benchmarks/RESULTS.md),
and grows as D^3 beyond.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

# Batched Cholesky and triangular solves of blocks up to this size are written out elementwise over
# the batch (fast, fused); larger blocks go to LAPACK.
_UNROLL_MAX = 6


@dataclasses.dataclass(frozen=True)
class LMMLayout:
    """The static shape of a mixed model: effects per term, each term's factor, levels, p.

    Factor 0 is the first term's factor (the one with the most levels); theta is the concatenation
    of the terms' column-major lower triangles (lme4's order).
    """

    q: tuple[int, ...]
    term_factor: tuple[int, ...]
    n_levels: tuple[int, ...]
    p: int

    def terms_of(self, f: int) -> tuple[int, ...]:
        return tuple(t for t, g in enumerate(self.term_factor) if g == f)

    def Q(self, f: int) -> int:
        return sum(self.q[t] for t in self.terms_of(f))

    @property
    def n_factors(self) -> int:
        return len(self.n_levels)

    @property
    def theta_slices(self) -> tuple[slice, ...]:
        out, start = [], 0
        for q in self.q:
            out.append(slice(start, start + q * (q + 1) // 2))
            start += q * (q + 1) // 2
        return tuple(out)

    @property
    def n_theta(self) -> int:
        return sum(q * (q + 1) // 2 for q in self.q)

    def rest_offset(self, f: int) -> int:
        return sum(self.n_levels[h] * self.Q(h) for h in range(1, f))

    @property
    def R(self) -> int:
        return self.rest_offset(self.n_factors)

    @property
    def D(self) -> int:
        return self.R + self.p + 1

    def theta_start(self) -> np.ndarray:
        """lme4's start: Lambda_t = I (1 on the diagonals, 0 below)."""
        return np.concatenate([tril_ones(q) for q in self.q])


def padded_levels(n_levels: int, first: bool) -> int:
    """The number of levels a program is compiled for. Padding levels have no rows, so they add
    log|I| = 0 to the deviance and nothing to the Schur complement: they cost a little work and let
    data sets of similar size share one compiled program. The first factor: the next power of two
    (at least 8) up to 1024, then the next multiple of 1/8 of a power of two (<= 12.5% padding);
    the other factors (which size the dense block): the next multiple of 16."""
    if not first:
        return -(-n_levels // 16) * 16
    if n_levels <= 1024:
        return max(8, 1 << (n_levels - 1).bit_length())
    step = 1 << ((n_levels - 1).bit_length() - 4)
    return -(-n_levels // step) * step


def tril_index(q: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of a q x q lower triangle in column-major order (lme4's theta order)."""
    rows = [i for j in range(q) for i in range(j, q)]
    cols = [j for j in range(q) for i in range(j, q)]
    return np.asarray(rows), np.asarray(cols)


def tril_ones(q: int) -> np.ndarray:
    rows, cols = tril_index(q)
    return (rows == cols).astype(float)


def term_lambda(theta_t, q: int):
    """Lambda_t from theta_t, as a product with a constant 0/1 matrix (no scatter to differentiate)."""
    rows, cols = tril_index(q)
    place = np.zeros((q * q, len(rows)))
    place[rows * q + cols, np.arange(len(rows))] = 1.0
    return (jnp.asarray(place, theta_t.dtype) @ theta_t).reshape(q, q)


def factor_lambda(layout: LMMLayout, theta, f: int):
    """Lambda_f: block diagonal over the terms of factor f (in term order)."""
    blocks = [term_lambda(theta[layout.theta_slices[t]], layout.q[t]) for t in layout.terms_of(f)]
    return jax.scipy.linalg.block_diag(*blocks) if len(blocks) > 1 else blocks[0]


# ---------------------------------------------------------------- batched small linear algebra


def chol_small(a):
    """Lower Cholesky factors of a batch (..., q, q) of SPD matrices."""
    q = a.shape[-1]
    if q > _UNROLL_MAX:
        return jnp.linalg.cholesky(a)
    L = [[None] * q for _ in range(q)]
    for j in range(q):
        s = a[..., j, j] - sum((L[j][k] ** 2 for k in range(j)), jnp.zeros_like(a[..., 0, 0]))
        L[j][j] = jnp.sqrt(s)
        for i in range(j + 1, q):
            s = a[..., i, j] - sum((L[i][k] * L[j][k] for k in range(j)), jnp.zeros_like(s))
            L[i][j] = s / L[j][j]
    zero = jnp.zeros_like(a[..., 0, 0])
    return jnp.stack(
        [jnp.stack([L[i][j] if j <= i else zero for j in range(q)], -1) for i in range(q)], -2
    )


def solve_lower_small(L, b):
    """L^-1 b for a batch: L (..., q, q) lower triangular, b (..., q, m)."""
    q = L.shape[-1]
    if q > _UNROLL_MAX:
        return solve_triangular(L, b, lower=True)
    x = []
    for i in range(q):
        s = b[..., i, :] - sum(
            (L[..., i, k, None] * x[k] for k in range(i)), jnp.zeros_like(b[..., 0, :])
        )
        x.append(s / L[..., i, i, None])
    return jnp.stack(x, -2)


def solve_upper_t_small(L, b):
    """L'^-1 b for a batch: L (..., q, q) lower triangular, b (..., q, m)."""
    q = L.shape[-1]
    if q > _UNROLL_MAX:
        return solve_triangular(L, b, lower=True, trans="T")
    x = [None] * q
    for i in reversed(range(q)):
        s = b[..., i, :] - sum(
            (L[..., k, i, None] * x[k] for k in range(i + 1, q)), jnp.zeros_like(b[..., 0, :])
        )
        x[i] = s / L[..., i, i, None]
    return jnp.stack(x, -2)


# ---------------------------------------------------------------- the data's cross products (one pass)


def cross_products(layout: LMMLayout, X, y, w, Zs, codes):
    """The weighted cross products the deviance needs, from one pass over the rows.

    C11 (G1, Q1, Q1) = sum_{i in g} w_i z_i z_i'     z_i: row i of the first factor's Z
    C1D (G1, Q1, D)  = sum_{i in g} w_i z_i d_i'     d_i: row i of [Z_rest, X, y] (Z_rest sparse)
    CDD (D, D)       = sum_i w_i d_i d_i'
    `Zs` are the terms' Z blocks, `codes` each factor's level codes; y already has the offset off.
    """

    def zf(f):
        return jnp.concatenate([Zs[t] for t in layout.terms_of(f)], axis=1)

    G1, Q1 = layout.n_levels[0], layout.Q(0)
    z1, c1 = zf(0), codes[0]
    xy = jnp.concatenate([X, y[:, None]], axis=1)
    wz1 = w[:, None] * z1
    C11 = jax.ops.segment_sum(wz1[:, :, None] * z1[:, None, :], c1, G1)
    C1xy = jax.ops.segment_sum(wz1[:, :, None] * xy[:, None, :], c1, G1)
    xyxy = (xy * w[:, None]).T @ xy
    if layout.n_factors == 1:
        return {"C11": C11, "C1D": C1xy, "CDD": xyxy}
    R = layout.R
    ridx = jnp.concatenate(
        [
            layout.rest_offset(f)
            + codes[f][:, None] * layout.Q(f)
            + jnp.arange(layout.Q(f))[None, :]
            for f in range(1, layout.n_factors)
        ],
        axis=1,
    )
    rz = jnp.concatenate([zf(f) for f in range(1, layout.n_factors)], axis=1)
    wrz = w[:, None] * rz
    C1R = (
        jnp.zeros((G1, Q1, R), X.dtype)
        .at[c1[:, None, None], jnp.arange(Q1)[None, :, None], ridx[:, None, :]]
        .add(wz1[:, :, None] * rz[:, None, :])
    )
    RR = (
        jnp.zeros((R, R), X.dtype)
        .at[ridx[:, :, None], ridx[:, None, :]]
        .add(wrz[:, :, None] * rz[:, None, :])
    )
    Rxy = jnp.zeros((R, layout.p + 1), X.dtype).at[ridx].add(wrz[:, :, None] * xy[:, None, :])
    return {
        "C11": C11,
        "C1D": jnp.concatenate([C1R, C1xy], axis=2),
        "CDD": jnp.block([[RR, Rxy], [Rxy.T, xyxy]]),
    }


# ---------------------------------------------------------------- factorisation and deviance


def _scale_rest(layout: LMMLayout, M, lambdas):
    """M Lambda_D: the columns of the other factors' effects times their Lambda_f (X, y as is)."""
    parts = []
    for f in range(1, layout.n_factors):
        off, G, Q = layout.rest_offset(f), layout.n_levels[f], layout.Q(f)
        block = M[..., off : off + G * Q].reshape(*M.shape[:-1], G, Q) @ lambdas[f]
        parts.append(block.reshape(*M.shape[:-1], G * Q))
    return jnp.concatenate([*parts, M[..., layout.R :]], axis=-1)


def factorize(layout: LMMLayout, theta, stats):
    """(L1 (G1, Q1, Q1), R1 (G1, Q1, D), LD (D, D)): the blocks of the Cholesky factor of the
    cross-product matrix of [Z Lambda, X, y] with I added to the u block. L1_g L1_g' =
    Lambda_1' C11_g Lambda_1 + I; R1_g = L1_g^-1 Lambda_1' C1D_g Lambda_D; LD LD' is the Schur
    complement of the first factor in the rest."""
    lambdas = [factor_lambda(layout, theta, f) for f in range(layout.n_factors)]
    lam1 = lambdas[0]
    Q1 = lam1.shape[0]
    A11 = jnp.einsum("ji,gjk,kl->gil", lam1, stats["C11"], lam1) + jnp.eye(Q1)
    L1 = chol_small(A11)
    B = _scale_rest(layout, jnp.einsum("ji,gjd->gid", lam1, stats["C1D"]), lambdas)
    R1 = solve_lower_small(L1, B)
    CDD = _scale_rest(layout, _scale_rest(layout, stats["CDD"], lambdas).T, lambdas)
    eye_u = jnp.concatenate([jnp.ones(layout.R), jnp.zeros(layout.p + 1)])
    S = CDD + jnp.diag(eye_u) - jnp.einsum("gia,gib->ab", R1, R1)
    LD = chol_small(S)
    return L1, R1, LD


def deviance_pieces(layout: LMMLayout, theta, stats):
    """(log|L|^2, log|R_X|^2, r^2) at theta."""
    L1, _, LD = factorize(layout, theta, stats)
    d1 = jnp.diagonal(L1, axis1=-2, axis2=-1)
    dD = jnp.diagonal(LD)
    R, p = layout.R, layout.p
    ldL2 = 2.0 * jnp.sum(jnp.log(d1)) + 2.0 * jnp.sum(jnp.log(dD[:R]))
    ldRX2 = 2.0 * jnp.sum(jnp.log(dD[R : R + p]))
    return ldL2, ldRX2, jnp.square(dD[-1])


def n_resid(layout: LMMLayout, n, reml):
    """n (ML, reml = 0) or n - p (REML, reml = 1): the divisor of r^2 in sigma^2.

    `reml` is a 0/1 array, not a Python flag, so REML and ML fits of one model share a program."""
    return n - layout.p * reml


def profiled_deviance(layout: LMMLayout, reml, theta, stats, n, ldW):
    """d(theta): the (RE)ML deviance with beta and sigma profiled out (see the module docstring)."""
    ldL2, ldRX2, r2 = deviance_pieces(layout, theta, stats)
    nu = n_resid(layout, n, reml)
    return ldL2 - ldW + reml * ldRX2 + nu * (1.0 + jnp.log(2.0 * math.pi * r2 / nu))
