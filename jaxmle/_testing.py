"""What every test returns, and the quadratic form they share (docs/theory.md, "Tests").

    chi2 test   statistic, df, P(chi2_df > statistic), and the status of the fits it used
    Wald form   d' [G V G']^-1 d                 the Wald, delta-method and Monte Carlo statistics
    V           the covariance of a fit: its own, another registered kind, or a (k, k) matrix

`TestResult` is a pytree (batched under vmap); numerical trouble (a singular G V G') gives NaN, never
an exception, inside jit.
"""

from __future__ import annotations

import functools
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaincc

from ._results import FitResult
from ._status import MESSAGES, Status

PyTree = Any


def chi2_sf(x, df):
    """P(chi2_df > x), jittable (regularised upper incomplete gamma)."""
    x = jnp.asarray(x)
    return gammaincc(jnp.asarray(df, x.dtype) / 2.0, x / 2.0)


# ---------------------------------------------------------------- the test result


class TestResult(eqx.Module):
    """A chi-square test: `statistic`, `df`, `pvalue` (arrays; batched under vmap).

    `test` names the test, `hypothesis` the restrictions in words, `cov_type` the covariance or
    information it used; all static. `status` is the worst `Status` of the fits the test used
    (0 when all converged): a test from a fit that stopped early is computed, and flagged.
    """

    statistic: jax.Array
    df: jax.Array
    pvalue: jax.Array
    status: jax.Array
    test: str = eqx.field(static=True)
    hypothesis: str = eqx.field(static=True, default="")
    cov_type: str = eqx.field(static=True, default="")

    __test__ = False  # not a pytest class

    def reject(self, level: float = 0.05) -> jax.Array:
        """pvalue < level (NaN statistics never reject); a rejection rate is its mean."""
        return self.pvalue < level

    def __str__(self) -> str:
        head = f"{self.test} test" + (f" ({self.cov_type})" if self.cov_type else "")
        what = f" of {self.hypothesis}" if self.hypothesis else ""
        if np.ndim(self.statistic):
            rate = float(np.mean(np.asarray(self.pvalue) < 0.05))
            return (
                f"{head}{what}: batch {np.shape(self.statistic)}, rejection rate at 5% {rate:.4f}"
            )
        text = (
            f"{head}{what}: chi2({int(self.df)}) = {float(self.statistic):.6g}, "
            f"P > chi2 = {float(self.pvalue):.4g}"
        )
        if int(self.status) != Status.SUCCESSFUL:
            text += (
                f"\n  warning: a fit it uses did not succeed: {MESSAGES[Status(int(self.status))]}"
            )
        return text


def chi2_test(stat_p, df, test, hypothesis="", cov_type="", fits=()):
    stat, p = stat_p
    status = jnp.zeros((), jnp.int32)
    for f in fits:  # the first fit that did not succeed names the problem
        status = jnp.where(status == 0, f.status, status)
    return TestResult(
        statistic=stat,
        df=jnp.asarray(df, jnp.int32),
        pvalue=p,
        status=status,
        test=test,
        hypothesis=hypothesis,
        cov_type=cov_type,
    )


# Compiled kernels (one program per shape and static option): eager op-by-op execution of the
# same arithmetic would compile dozens of small programs on a first call.


def with_pvalue(stat, df):
    return stat, chi2_sf(jnp.maximum(stat, 0.0), df)


def quadratic_form(d, v):
    """d' V^-1 d through the Cholesky factor of the equilibrated S V S, S = diag(V)^-1/2 (so that
    parameters on very different scales do not look singular); NaN when V is not positive definite.
    """
    s = 1.0 / jnp.sqrt(jnp.diagonal(v))
    chol = jnp.linalg.cholesky(s[:, None] * v * s[None, :])
    z = jax.scipy.linalg.solve_triangular(chol, s * d, lower=True)
    return jnp.sum(z**2)


@functools.partial(jax.jit, static_argnames="df")
def wald_form(diff, G, V, df):
    """diff' [G V G']^-1 diff and its chi2(df) p-value (NaN when G V G' is not positive definite)."""
    return with_pvalue(quadratic_form(diff, G @ V @ G.T), df)


# ---------------------------------------------------------------- shared host checks


def cov_label(res: FitResult, cov) -> str:
    """Check `cov=` on the host (before any work) and name it."""
    k = len(res.names)
    if cov is None:
        return res.cov_type
    if isinstance(cov, str):
        res.check_cov(cov)
        return cov
    if np.shape(cov) != (k, k):
        raise ValueError(f"cov must be a ({k}, {k}) matrix in ravel order, got {np.shape(cov)}")
    return "user"


def cov_matrix(fit: FitResult, cov):
    """V of one fit: its own cov, another kind (from the stored matrices), or a user matrix."""
    if cov is None:
        return fit.cov
    if isinstance(cov, str):
        return fit.covariance(cov)
    return jnp.asarray(cov, fit.cov.dtype)
