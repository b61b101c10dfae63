"""Variance components: lme4's theta <-> standard deviations and correlations, and their names.

Term t has Sigma_t = s^2 Lambda_t Lambda_t' (s = sigma for lmer, 1 for glmer) and reports, in lme4's
`as.data.frame(VarCorr(m))` order, the standard deviations sd_i = sqrt(Sigma_t,ii) and then the
correlations cor_ij = Sigma_t,ij / (sd_i sd_j) for i < j (by i, then j). Back from those,
Lambda_t = diag(sd) chol(C) / s (C the correlation matrix): smooth in sd down to sd = 0, so the
observed information in (sd, cor) can be taken by autodiff where |cor| < 1.

Parameter names: "sd(Days|Subject)", "cor(Intercept,Days|Subject)", and "sigma" for the residual.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ._lmm import term_lambda, tril_index


def pairs(q: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(q) for j in range(i + 1, q)]


def n_phi(q: int) -> int:
    return q + q * (q - 1) // 2


def phi_names(specs) -> tuple[str, ...]:
    names = []
    for s in specs:
        names += [f"sd({c}|{s.group})" for c in s.columns]
        names += [f"cor({s.columns[i]},{s.columns[j]}|{s.group})" for i, j in pairs(s.q)]
    return tuple(names)


def theta_to_phi(theta_t, q: int, scale):
    """(sd (q,), cor (q(q-1)/2,)) of Sigma = scale^2 Lambda Lambda'; cor is NaN where an sd is 0."""
    lam = term_lambda(theta_t, q)
    S = lam @ lam.T
    d = jnp.sqrt(jnp.diagonal(S))
    cors = [S[i, j] / (d[i] * d[j]) for i, j in pairs(q)]
    return scale * d, jnp.stack(cors) if cors else jnp.zeros(0, S.dtype)


def phi_to_theta(sd, cor, q: int, scale):
    """theta_t (column-major lower triangle) of Lambda = diag(sd) chol(C) / scale."""
    C = jnp.eye(q, dtype=sd.dtype)
    for k, (i, j) in enumerate(pairs(q)):
        C = C.at[i, j].set(cor[k]).at[j, i].set(cor[k])
    lam = sd[:, None] * jnp.linalg.cholesky(C) / scale
    rows, cols = tril_index(q)
    return lam[rows, cols]


def split_phi(qs, phi):
    """[(sd, cor)] per term (q_t effects each) from the flat vector of variance parameters."""
    out, start = [], 0
    for q in qs:
        out.append((phi[start : start + q], phi[start + q : start + n_phi(q)]))
        start += n_phi(q)
    return out


def all_theta_to_phi(qs, slices, theta, scale):
    parts = []
    for q, sl in zip(qs, slices, strict=True):
        sd, cor = theta_to_phi(theta[sl], q, scale)
        parts += [sd, cor]
    return jnp.concatenate(parts)


def all_phi_to_theta(qs, phi, scale):
    parts = split_phi(qs, phi)
    return jnp.concatenate(
        [phi_to_theta(sd, cor, q, scale) for q, (sd, cor) in zip(qs, parts, strict=True)]
    )


def varcorr_frame(specs, phi, sigma=None):
    """R `as.data.frame(VarCorr(m))`: grp, var1, var2, vcov, sdcor; a "Residual" row when sigma."""
    import pandas as pd

    rows = []
    for s, (sd, cor) in zip(specs, split_phi([t.q for t in specs], np.asarray(phi)), strict=True):
        for c, v in zip(s.columns, sd, strict=True):
            rows.append((s.group, c, None, float(v) ** 2, float(v)))
        for (i, j), r in zip(pairs(s.q), cor, strict=True):
            cov = float(r * sd[i] * sd[j]) if sd[i] * sd[j] > 0 else 0.0  # cor is NaN at sd = 0
            rows.append((s.group, s.columns[i], s.columns[j], cov, float(r)))
    if sigma is not None:
        rows.append(("Residual", None, None, float(sigma) ** 2, float(sigma)))
    return pd.DataFrame(rows, columns=["grp", "var1", "var2", "vcov", "sdcor"])
