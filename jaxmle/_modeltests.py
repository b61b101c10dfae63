"""Tests of the model itself: White's information-matrix test and Vuong's non-nested test.

Both read per-observation terms (l_i, u_i, H_i) from a pass over the fit's data (`_perobs`), so
they take host fits that hold their `problem` (or `jm.attach` it back).

Information-matrix test (White 1982), OPG form (Chesher 1983; Lancaster 1984). At a correctly
specified model E[u_i u_i' + H_i] = 0 (the information matrix equality). With the indicators
d_i = vech(u_i u_i' + H_i) (the k(k+1)/2 distinct elements), regress 1 on z_i = (u_i', d_i'):

    IM = n R^2 (uncentred) = 1' Z (Z'Z)^+ Z' 1 = n - SSR   ~ chi2(q),  q = rank(Z) - rank(U)

q counts the indicators that are linearly independent of each other and of the scores (with 0/1
covariates many coincide: x_j^2 = x_j). The scores are in the regression because theta is
estimated. The statistic is invariant to reparametrisation: u and H of another parametrisation
span the same columns. Known to over-reject in small samples (Taylor 1987; Orme 1990; Davidson &
MacKinnon 1992, ch. 16): `tests/test_robust.py` measures by how much.

Vuong (1989) test of two non-nested models fitted to the same observations, as R
`nonnest2::vuongtest(m1, m2, adj)`: with m_i = l_i^(1) - l_i^(2),

    LR = sum_i m_i - c,   c = 0 ("none"), k1 - k2 ("aic"), (k1 - k2) ln(n) / 2 ("bic")
    omega^2 = (1/n) sum_i (m_i - mbar)^2,   z = LR / (sqrt(n) omega)  ~ N(0, 1)

z > 0 favours model 1. k counts free parameters (a scale too; nonnest2 counts `coef()`, which for
`lm` leaves sigma out: the same difference when both models have one).
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr

from ._perobs import result_terms
from ._scope import host64
from ._status import Status
from ._testing import TestResult, chi2_sf

# Singular values of the column-normalised regressors below this fraction of the largest count as
# linear dependence (R's qr() uses 1e-7 on a comparable scale; exact ties fall far below either).
RANK_RTOL = 1e-9
CORRECTIONS = ("none", "aic", "bic")


def _require(res, what: str) -> None:
    if np.ndim(res.status):
        raise ValueError(f"{what} takes one fit; index the batch first (res[i])")
    if not res.has_problem:
        raise ValueError(
            f"{what} needs a pass over the fit's data, and this result holds none (it came out of "
            "jit, vmap or a tree operation): give them back with jm.attach(res, logpdf, data, ...)"
        )
    if res.problem.weights is not None and res.problem.weight_kind == "sampling":
        raise ValueError(f"{what} is a likelihood test: it takes frequency weights, not sampling")


def _rank(z, rtol):
    """(U_r, mask, rank): left singular vectors of z with columns scaled to unit length."""
    norms = jnp.sqrt(jnp.sum(z**2, axis=0))
    zs = z / jnp.where(norms > 0, norms, 1.0)
    u, sv, _ = jnp.linalg.svd(zs, full_matrices=False)
    mask = sv > rtol * sv[0]
    return u, mask, jnp.sum(mask)


@functools.partial(jax.jit, static_argnames="rtol")
def im_statistic(score, hessian, weights=None, rtol=RANK_RTOL):
    """(n R^2, q) of the OPG information-matrix regression (module docstring); rows weighted by
    sqrt(w_i) for frequency weights (regressing sqrt(w) on sqrt(w) z)."""
    k = score.shape[1]
    iu = np.triu_indices(k)
    d = (score[:, :, None] * score[:, None, :] + hessian)[:, iu[0], iu[1]]
    z = jnp.concatenate([score, d], axis=1)
    y = jnp.ones(score.shape[0], score.dtype) if weights is None else jnp.sqrt(weights)
    z = z * y[:, None]
    u, mask, rank = _rank(z, rtol)
    _, _, rank_scores = _rank(score * y[:, None], rtol)
    stat = jnp.sum(jnp.where(mask, u.T @ y, 0.0) ** 2)
    return stat, (rank - rank_scores).astype(jnp.int32)


def _im_result(stat, df, res) -> TestResult:
    return TestResult(
        statistic=stat,
        df=df,
        pvalue=chi2_sf(stat, df),
        status=jnp.asarray(res.status, jnp.int32),
        test="Information-matrix",
        hypothesis="E[u u' + H] = 0 (White 1982; OPG form, n R^2)",
        cov_type="",
    )


@host64
def im_test(res) -> TestResult:
    """White's (1982) information-matrix test in the OPG form: n R^2 of 1 on the scores and the
    distinct elements of u_i u_i' + H_i, df the number of linearly independent indicators (module
    docstring). A small p-value says the information matrix equality fails: the model is
    misspecified (its standard errors from -H or the OPG are then not to be trusted; sandwich
    ones may be). The OPG form over-rejects in small samples.

    Equals, on the same data, the direct computation `n - sum(resid(lm(rep(1, n) ~ 0 + Z))^2)`
    in R (fixtures in tests/reference/robust/); Stata's `estat imtest` is its regression-only
    counterpart (Cameron & Trivedi's decomposition).
    """
    _require(res, "im_test")
    _, score, hessian, weights = result_terms(res, hessian=True)
    stat, df = im_statistic(score, hessian, weights)
    return _im_result(stat, df, res)


# ---------------------------------------------------------------- Vuong


class VuongResult(eqx.Module):
    """Vuong's non-nested test: `statistic` z (> 0 favours model 1), two-sided `pvalue`, and the
    one-sided `pvalue_first` (H1: model 1 fits better) and `pvalue_second` (H1: model 2 does),
    R nonnest2's p_LRT$A and p_LRT$B. `lr` is the (corrected) LR sum, `omega` the standard
    deviation of m_i = l_i^(1) - l_i^(2)."""

    statistic: jax.Array
    pvalue: jax.Array
    pvalue_first: jax.Array
    pvalue_second: jax.Array
    lr: jax.Array
    omega: jax.Array
    status: jax.Array
    correction: str = eqx.field(static=True)

    __test__ = False  # not a pytest class

    def preferred(self, level: float = 0.05) -> str:
        """'model 1', 'model 2' or 'neither' at the two-sided `level`."""
        if float(self.pvalue) >= level:
            return "neither"
        return "model 1" if float(self.statistic) > 0 else "model 2"

    def __str__(self) -> str:
        corrected = "" if self.correction == "none" else f", {self.correction.upper()} correction"
        text = (
            f"Vuong non-nested test{corrected}: z = {float(self.statistic):.6g}, "
            f"P > |z| = {float(self.pvalue):.4g} (model 1 better: P = "
            f"{float(self.pvalue_first):.4g}; model 2 better: P = {float(self.pvalue_second):.4g})"
        )
        choice = self.preferred()
        verdict = (
            "the data do not tell the models apart"
            if choice == "neither"
            else f"{choice} fits better"
        )
        text += f"\n  at 5%: {verdict}"
        if int(self.status) != Status.SUCCESSFUL:
            text += "\n  warning: a fit it uses did not succeed"
        return text


@jax.jit
def _vuong_kernel(l1, l2, w, correction):
    m = l1 - l2
    n = jnp.sum(w)
    mean = jnp.sum(w * m) / n
    omega = jnp.sqrt(jnp.sum(w * (m - mean) ** 2) / n)
    lr = jnp.sum(w * m) - correction
    z = lr / (jnp.sqrt(n) * omega)
    return z, lr, omega


@host64
def vuong_test(res1, res2, *, correction: str = "none") -> VuongResult:
    """Vuong's (1989) test of two non-nested models of the same observations (module docstring):
    z = (sum_i m_i - c) / (sqrt(n) omega), m_i = l_i^(1) - l_i^(2), c the AIC (k1 - k2) or BIC
    ((k1 - k2) ln(n) / 2) correction; z ~ N(0, 1) when the models are equally close to the truth.
    Equals R `nonnest2::vuongtest(m1, m2, adj = correction)` ($LRTstat, $p_LRT); the two-sided
    `pvalue` is 2 min(p_A, p_B). For nested models it is not the right test (use `jm.lr_test`).
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r}; choose one of {CORRECTIONS}")
    _require(res1, "vuong_test")
    _require(res2, "vuong_test")
    l1, _, _, w1 = result_terms(res1)
    l2, _, _, w2 = result_terms(res2)
    if l1.shape != l2.shape:
        raise ValueError(
            f"the fits have {l1.shape[0]} and {l2.shape[0]} observations: Vuong's test compares "
            "two models of the same observations, row by row"
        )
    if (w1 is None) != (w2 is None) or (w1 is not None and not np.array_equal(w1, w2)):
        raise ValueError("the fits use different observation weights; Vuong's test needs the same")
    for res, ll in ((res1, l1), (res2, l2)):
        total, fitted = float(jnp.sum(ll if w1 is None else w1 * ll)), float(res.loglik)
        if not abs(total - fitted) <= 1e-8 * max(1.0, abs(fitted)):
            raise ValueError(
                f"the per-observation lnL sums to {total:.10g}, not the fit's {fitted:.10g}"
            )
    w = jnp.ones_like(l1) if w1 is None else w1
    dk = res1.n_params - res2.n_params
    n = float(jnp.sum(w))
    shift = {"none": 0.0, "aic": float(dk), "bic": dk * float(np.log(n)) / 2.0}[correction]
    z, lr, omega = _vuong_kernel(l1, l2, w, shift)
    status = jnp.where(res1.status != 0, res1.status, res2.status).astype(jnp.int32)
    return VuongResult(
        statistic=z, pvalue=2.0 * ndtr(-jnp.abs(z)), pvalue_first=ndtr(-z),
        pvalue_second=ndtr(z), lr=lr, omega=omega, status=status, correction=correction,
    )  # fmt: skip
