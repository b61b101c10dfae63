"""`res.diagnostics()`: what a fit looks like, in words; and the notes `summary()` prints.

    condition       of the information A over the free parameters: lambda_max / lambda_min of
                    S A S, S = diag(A)^-1/2 (scale-free: what ill-identification costs), and of A
    influence       d_i = w_i u_i' A^-1 u_i (the row's score contribution in the information
                    metric); dropping row i moves theta_hat by about delta_i = -(A + w_i H_i)^-1
                    w_i u_i (one Newton step on the lnL without row i: DFBETA for ML), reported
                    in model standard errors sqrt(diag A^-1)
    IM test         White's information-matrix test (`jm.im_test`)

All of them from one pass over the data that gives l_i, u_i and H_i (`_perobs.result_terms`), in
the parametrisation the fit optimised (the condition number of a `fit_transformed` fit is that of
the unconstrained problem, which is what the optimiser saw).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ._modeltests import _im_result, _require, im_statistic
from ._perobs import result_terms
from ._scope import host64
from ._solvers import equilibrated_eigh
from ._testing import TestResult

# Rows whose one-step deletion moves an estimate by more than this many standard errors are named.
INFLUENCE_SE = 1.0
# log10 of the equilibrated condition number beyond which the summary calls A ill-conditioned
# (about that many of float64's ~16 digits are lost in its inverse).
ILL_CONDITIONED = 8.0
N_TOP = 5
# Relative size of a negative eigenvalue of a covariance that the notes report (rounding is ~1e-16).
NEGATIVE_EIG_RTOL = 1e-10


@dataclasses.dataclass(frozen=True)
class Diagnostics:
    """Diagnostics of one fit. `influence` (N,) is d_i for every row, `shift` (N, k) the one-step
    change of each free parameter in standard errors when row i is dropped; `top` the rows with
    the largest d_i; `im` the information-matrix test; `notes` the covariance notes."""

    names: tuple[str, ...]
    message: str
    condition: float
    condition_raw: float
    influence: np.ndarray
    shift: np.ndarray
    top: np.ndarray
    im: TestResult
    notes: tuple[str, ...]

    def lines(self) -> list[str]:
        digits = np.log10(self.condition) if np.isfinite(self.condition) else np.inf
        verdict = (
            "ill-conditioned: some parameter combinations are barely identified"
            if digits > ILL_CONDITIONED
            else "well conditioned"
        )
        out = [
            "Diagnostics (jaxmle)",
            f"  Fit: {self.message}",
            f"  Information: condition number {self.condition:.3g} with parameters scaled to unit "
            f"diagonal ({self.condition_raw:.3g} as is): {verdict}",
        ]
        big = np.flatnonzero(np.max(np.abs(self.shift), axis=1) > INFLUENCE_SE)
        n = self.influence.shape[0]
        if big.size:
            out.append(
                f"  Influential rows: {big.size} of {n} move an estimate by more than "
                f"{INFLUENCE_SE:g} standard error when dropped (one-step approximation)"
            )
        else:
            out.append(
                f"  Influential rows: none of the {n} rows moves an estimate by more than "
                f"{INFLUENCE_SE:g} standard error when dropped (one-step approximation)"
            )
        out.append("  Largest score contributions d_i = u_i' A^-1 u_i:")
        for i in self.top:
            j = int(np.argmax(np.abs(self.shift[i])))
            out.append(
                f"    row {int(i)}: d = {self.influence[i]:.4g}; dropping it moves "
                f"{self.names[j]} by {self.shift[i, j]:+.3g} se"
            )
        im = self.im
        stat, df, p = float(im.statistic), int(im.df), float(im.pvalue)
        verdict = (
            "evidence against the information matrix equality: the model looks misspecified "
            "(prefer sandwich standard errors; the OPG form over-rejects in small samples)"
            if p < 0.05
            else "no evidence against the information matrix equality"
        )
        out.append(f"  Information-matrix test (White 1982, OPG form): chi2({df}) = {stat:.4g}, "
                   f"P = {p:.3g}: {verdict}")  # fmt: skip
        out += [f"  Note: {note}" for note in self.notes]
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


@jax.jit
def _influence(score, hessian, weights):
    info = -jnp.einsum("n,nij->ij", weights, hessian)
    inv = jnp.linalg.inv(info)
    wu = score * weights[:, None]
    d = jnp.sum((wu @ inv) * score, axis=1)
    # delta_i = -(A + w_i H_i)^-1 w_i u_i: a Newton step from theta_hat on the lnL without row i
    # (exact for the coefficients of a linear model with the scale held: the 1/(1-h_i) of DFBETA)
    step = jax.vmap(jnp.linalg.solve)(info[None] + weights[:, None, None] * hessian, wu)
    se = jnp.sqrt(jnp.diagonal(inv))
    _, lam, _ = equilibrated_eigh(info)
    raw = jnp.linalg.eigvalsh(info)
    return d, -step / se, lam[-1] / lam[0], raw[-1] / raw[0]


@host64
def diagnose(res) -> Diagnostics:
    """`res.diagnostics()` (module docstring)."""
    _require(res, "diagnostics")
    _, score, hessian, weights = result_terms(res, hessian=True)
    w = jnp.ones(score.shape[0], score.dtype) if weights is None else weights
    d, shift, cond, cond_raw = map(np.asarray, _influence(score, hessian, w))
    stat, df = im_statistic(score, hessian, weights)
    names = tuple(n for n, f in zip(res.names, res.free, strict=True) if f)
    top = np.argsort(-d, kind="stable")[: min(N_TOP, d.shape[0])]
    return Diagnostics(
        names=names, message=res.message, condition=float(cond), condition_raw=float(cond_raw),
        influence=d, shift=shift, top=top, im=_im_result(stat, df, res),
        notes=tuple(covariance_notes(res)),
    )  # fmt: skip


def covariance_notes(res) -> list[str]:
    """What `summary()` must say about the covariance of a single host fit (tier 2: the numbers
    are there, these say how far to trust them)."""
    if res.batch_shape or res.cov_type != "cluster":
        return []
    notes = []
    sizes = res.clusters or (("groups", res.score_groups.shape[-2]),)
    n_rows = res.problem.n_rows if res.has_problem else float(res.n_obs)
    factors = [(name, g) for name, g in sizes if ":" not in name]
    for name, g in factors:
        if g == n_rows:
            where = "" if name == "groups" else f" of {name!r}"
            notes.append(
                f"every cluster{where} holds one observation: that cluster sandwich is the HC0 "
                f"sandwich times G/(G-1) = {g}/{g - 1}"
            )
    fewest = min(g for _, g in factors)
    if fewest <= res.n_params:
        notes.append(
            f"only {fewest} clusters for {res.n_params} parameters: the cluster covariance has "
            f"rank at most {fewest - 1}, so joint Wald tests of more than {fewest - 1} "
            "restrictions are not possible, and standard errors from so few clusters are unreliable"
        )
    if len(sizes) > 1:
        cov = np.asarray(res.cov)[np.ix_(np.asarray(res.free), np.asarray(res.free))]
        lam = np.linalg.eigvalsh(cov)
        if lam[0] < -NEGATIVE_EIG_RTOL * abs(lam[-1]):
            notes.append(
                "the multi-way cluster covariance is not positive semi-definite (smallest "
                f"eigenvalue {lam[0]:.3g}); res.with_cov('cluster', fix=True) clips its negative "
                "eigenvalues at 0 (Cameron, Gelbach & Miller 2011)"
            )
    return notes
