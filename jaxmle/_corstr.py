"""Working correlation structures of GEE: R(alpha), its inverse square root, and geepack's alpha update.

Clusters sit on a grid (G, m): slot j of cluster g holds one observation, `mask` marks real slots,
`wave` its time code (0..K-1, the dense rank of `time=`, or the position in the cluster); `ctx` holds
what is shared by all clusters (the number of waves K, the unstructured patterns). For each
structure:

    prepare(alpha)     what `whiten` needs from alpha, computed once per pass (not once per chunk)
    whiten(op, v)      L v for R^-1 = L'L, applied along the slot axis of v (G, m, c), so that
                       v' R^-1 u = (Lv)'(Lu): every GEE sum is then one GEMM over the grid
    stats(r, w)        sums over clusters of the pair products of the standardised Pearson residuals
                       w_j r_j w_k r_k and of the pair weights w_j w_k
    update(alpha, s)   geepack's step for alpha (gee2.cc `update_alpha`): least squares of the pair
                       products z_jk = e_j e_k, e = r / sqrt(phi), on rho_jk(alpha), pairs weighted by
                       w_j w_k: exact for exchangeable and unstructured, one Gauss-Newton step for ar1

    independence   R = I
    exchangeable   R_jk = alpha. R^-1 = (I - c 11') / (1 - alpha), c = alpha / (1 + (n-1) alpha), so
                   L v = (v - f 1 1'v) / sqrt(1 - alpha), f = (1 - sqrt((1 - alpha)/(1 + (n-1) alpha)))/n:
                   O(n_g) per cluster. alpha = sum_pairs w w z / sum_pairs w w (all pairs, no df
                   correction; statsmodels with ddof_scale=0 has the same).
    ar1            R_jk = alpha^|t_j - t_k| (t the time codes, so gaps count). An AR(1) observed at any
                   times is Markov: L v_1 = v_1, L v_j = (v_j - rho_j v_{j-1}) / sqrt(1 - rho_j^2),
                   rho_j = alpha^(t_j - t_{j-1}); O(n_g). alpha solves
                   sum_pairs w w d alpha^(d-1) (z - alpha^d) = 0 over ALL pairs (d = t_k - t_j), as
                   geepack's cor_rho_ar1 (statsmodels uses lag-1 pairs only).
    unstructured   R_jk = alpha_{t_j t_k}, one per pair of waves, K(K-1)/2 in geepack's order
                   (1:2, 1:3, ..., 1:K, 2:3, ...), each the weighted mean of z over the clusters that
                   observe both waves, with ONE global scale phi (statsmodels divides by each wave's
                   own variance). L = chol(R_S)^-1 for the waves S a cluster observes, one Cholesky per
                   distinct pattern of observed waves.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class CorStr:
    """One working correlation; the methods are pure functions of grid arrays."""

    name: str
    label: str

    def n_alpha(self, n_waves: int) -> int:
        return 1

    def prepare(self, alpha, ctx):
        return alpha[0]

    def whiten(self, op, v, grid):
        raise NotImplementedError

    def stats(self, r, grid, ctx):
        raise NotImplementedError

    def stats_zeros(self, n_waves, dtype):
        return jnp.zeros((2,), dtype)

    def update(self, alpha, stats, phi):
        raise NotImplementedError

    def valid(self, alpha, ctx) -> jax.Array:
        return jnp.asarray(True)

    def matrix(self, alpha, n_waves):
        """The correlation as reported: alpha itself (a scalar), or the K x K matrix."""
        return alpha[0]


def _sum_slots(x, mask):
    return jnp.sum(x * mask[..., None], axis=1, keepdims=True)


class Independence(CorStr):
    def n_alpha(self, n_waves):
        return 0

    def prepare(self, alpha, ctx):
        return alpha

    def whiten(self, op, v, grid):
        return v

    def stats(self, r, grid, ctx):
        return jnp.zeros((2,), r.dtype)

    def update(self, alpha, stats, phi):
        return alpha

    def matrix(self, alpha, n_waves):
        return jnp.zeros((), alpha.dtype)


class Exchangeable(CorStr):
    def whiten(self, op, v, grid):
        a = op
        n = jnp.sum(grid["mask"], axis=1)[:, None, None]  # (G, 1, 1), observations per cluster
        f = (1.0 - jnp.sqrt((1.0 - a) / (1.0 + (n - 1.0) * a))) / n
        return (v - f * _sum_slots(v, grid["mask"])) * grid["mask"][..., None] / jnp.sqrt(1.0 - a)

    def stats(self, r, grid, ctx):
        wr, w = grid["w"] * r, grid["w"]
        pairs = 0.5 * (jnp.sum(wr, axis=1) ** 2 - jnp.sum(wr**2, axis=1))
        weights = 0.5 * (jnp.sum(w, axis=1) ** 2 - jnp.sum(w**2, axis=1))
        return jnp.stack([jnp.sum(pairs), jnp.sum(weights)])

    def update(self, alpha, stats, phi):
        return (stats[0] / phi / stats[1])[None]

    def valid(self, alpha, ctx):
        a = alpha[0]
        return (a < 1.0) & (a * (ctx["max_size"] - 1) > -1.0)


def _int_power(a, d):
    """a^d for an integer-valued float array d >= 0, also for a < 0."""
    odd = jnp.mod(d, 2.0) == 1.0
    return jnp.abs(a) ** d * jnp.where((a < 0) & odd, -1.0, 1.0)


class AR1(CorStr):
    def whiten(self, op, v, grid):
        a, mask, wave = op, grid["mask"], grid["wave"]
        gap = jnp.concatenate([jnp.zeros_like(wave[:, :1]), jnp.diff(wave, axis=1)], axis=1)
        has_prev = jnp.concatenate([jnp.zeros_like(mask[:, :1]), mask[:, :-1] * mask[:, 1:]], 1)
        rho = jnp.where(has_prev > 0, _int_power(a, gap), 0.0)[..., None]
        prev = jnp.concatenate([jnp.zeros_like(v[:, :1]), v[:, :-1]], axis=1)
        return (v - rho * prev) / jnp.sqrt(1.0 - rho**2) * mask[..., None]

    def stats(self, r, grid, ctx):
        """[Z_1..Z_{K-1}, W_1..W_{K-1}]: pair products and pair weights by time distance d."""
        wr, w, wave = grid["w"] * r, grid["w"], grid["wave"]
        n_waves = ctx["n_waves"]
        upper = jnp.triu(jnp.ones((wr.shape[1], wr.shape[1]), bool), 1)
        dist = (wave[:, None, :] - wave[:, :, None]).astype(jnp.int32)
        dist = jnp.where(upper, jnp.clip(dist, 0, n_waves - 1), 0)
        z = jnp.where(upper, wr[:, :, None] * wr[:, None, :], 0.0)
        ww = jnp.where(upper, w[:, :, None] * w[:, None, :], 0.0)
        both = jnp.stack([z, ww], axis=-1).reshape(-1, 2)
        sums = jax.ops.segment_sum(both, dist.reshape(-1), num_segments=n_waves)
        return jnp.concatenate([sums[1:, 0], sums[1:, 1]])

    def stats_zeros(self, n_waves, dtype):
        return jnp.zeros((2 * (n_waves - 1),), dtype)

    def update(self, alpha, stats, phi):
        a = alpha[0]
        half = stats.shape[0] // 2
        z, ww = stats[:half] / phi, stats[half:]
        d = jnp.arange(1, half + 1, dtype=a.dtype)
        rho = _int_power(a, d)
        drho = d * jnp.where(d == 1.0, 1.0, _int_power(a, d - 1.0))
        step = jnp.sum(drho * (z - ww * rho)) / jnp.sum(ww * drho**2)
        return (a + step)[None]

    def valid(self, alpha, ctx):
        return jnp.abs(alpha[0]) < 1.0


class Unstructured(CorStr):
    """Grid slots are the waves themselves (m = K); `grid["pattern"]` indexes the distinct sets of
    observed waves, `ctx["patterns"]` (P, K) holds them."""

    def n_alpha(self, n_waves):
        return n_waves * (n_waves - 1) // 2

    def full(self, alpha, n_waves):
        rows, cols = np.triu_indices(n_waves, 1)  # row-major: geepack's 1:2, 1:3, ..., 2:3, ...
        r = jnp.eye(n_waves, dtype=alpha.dtype)
        return r.at[rows, cols].set(alpha).at[cols, rows].set(alpha)

    def inverse_roots(self, alpha, patterns):
        """L_p = chol(R_S)^-1 for each pattern p of observed waves (P, K, K); missing waves get an
        identity row and column, which keeps them apart from the observed ones."""
        k = patterns.shape[1]
        r = self.full(alpha, k)
        m = patterns[:, :, None] * patterns[:, None, :]
        masked = r[None] * m + jnp.eye(k, dtype=alpha.dtype)[None] * (1.0 - m)
        chol = jnp.linalg.cholesky(masked)
        eye = jnp.broadcast_to(jnp.eye(k, dtype=alpha.dtype), masked.shape)
        return jax.scipy.linalg.solve_triangular(chol, eye, lower=True)

    def prepare(self, alpha, ctx):
        return self.inverse_roots(alpha, ctx["patterns"])

    def whiten(self, op, v, grid):
        return jnp.einsum("gkl,glc->gkc", op[grid["pattern"]], v)

    def stats(self, r, grid, ctx):
        wr, w = grid["w"] * r, grid["w"]
        rows, cols = np.triu_indices(wr.shape[1], 1)
        return jnp.concatenate([(wr.T @ wr)[rows, cols], (w.T @ w)[rows, cols]])

    def stats_zeros(self, n_waves, dtype):
        return jnp.zeros((2 * self.n_alpha(n_waves),), dtype)

    def update(self, alpha, stats, phi):
        half = stats.shape[0] // 2
        return stats[:half] / phi / stats[half:]

    def valid(self, alpha, ctx):
        roots = self.inverse_roots(alpha, ctx["patterns"])
        return jnp.all(jnp.isfinite(roots))

    def matrix(self, alpha, n_waves):
        return self.full(alpha, n_waves)


CORSTRS: Mapping[str, CorStr] = types.MappingProxyType(
    {
        c.name: c
        for c in (
            Independence("independence", "independence"),
            Exchangeable("exchangeable", "exchangeable"),
            AR1("ar1", "AR(1)"),
            Unstructured("unstructured", "unstructured"),
        )
    }
)


def get_corstr(name) -> CorStr:
    if isinstance(name, CorStr):
        return name
    if not isinstance(name, str) or name not in CORSTRS:
        raise ValueError(f"unknown corstr {name!r}; choose one of {tuple(CORSTRS)}")
    return CORSTRS[name]
