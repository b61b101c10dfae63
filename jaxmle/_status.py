"""Status codes of a fit and the words `summary()` prints for them.

Numerical outcomes are data (design tier 2): a compiled fit cannot raise, so it returns one of these
codes, decided after its loop from the final state, and `FitResult.message` says it in words.
"""

from __future__ import annotations

import enum

import numpy as np


class Status(enum.IntEnum):
    """Outcome of a fit; `FitResult.status` holds the code, `FitResult.message` the words."""

    SUCCESSFUL = 0
    MAX_ITER = 1
    NONFINITE = 2
    NONFINITE_START = 3
    LINE_SEARCH_FAILED = 4
    SEPARATION = 5
    NOT_CONCAVE = 6
    SINGULAR_INFORMATION = 7
    BAD_GROUPS = 8
    SINGULAR_JACOBIAN = 9
    SINGULAR_WEIGHT = 10
    GEE_MAX_ITER = 11
    CORRELATION_NOT_PD = 12
    CG_NOT_CONVERGED = 13
    BOUNDARY = 14
    MODE_NOT_FOUND = 15


MESSAGES = {
    Status.SUCCESSFUL: "converged",
    Status.MAX_ITER: "not converged: max_iter reached before the scaled gradient fell below tol",
    Status.NONFINITE: "failed: the log-likelihood or its derivatives became NaN or infinite",
    Status.NONFINITE_START: "failed: the log-likelihood is -inf or NaN at the start values",
    Status.LINE_SEARCH_FAILED: (
        "not converged: the line search found no step that increases lnL (the maximum may be "
        "ill-determined, or the log-density not smooth)"
    ),
    Status.SEPARATION: (
        "the MLE does not exist: lnL keeps increasing while some estimates diverge and the "
        "information along that direction vanishes (complete or quasi-complete separation); "
        "estimates and standard errors along it are meaningless"
    ),
    Status.NOT_CONCAVE: (
        "the Hessian is not negative definite at the final point: not a maximum; "
        "standard errors are NaN"
    ),
    Status.SINGULAR_INFORMATION: (
        "the information matrix is singular: some parameters (or combinations) are not "
        "identified; standard errors are NaN"
    ),
    Status.BAD_GROUPS: (
        "invalid cluster codes: some groups lie outside 0..n_groups-1, so their scores would be "
        "dropped from the cluster sums; cluster-robust standard errors are NaN"
    ),
    Status.SINGULAR_JACOBIAN: (
        "the Jacobian A = -sum_i dpsi_i/dtheta' of the estimating equations is singular at the "
        "solution: some parameters (or combinations) are not identified by them; standard errors "
        "are NaN"
    ),
    Status.SINGULAR_WEIGHT: (
        "the covariance S of the moment conditions is singular, so the GMM weighting matrix "
        "W = S^-1 does not exist (redundant moments, or fewer clusters than moments); estimates "
        "after the first step, standard errors and the J test are NaN"
    ),
    Status.GEE_MAX_ITER: (
        "not converged: the GEE iteration (a scoring step for the coefficients, then the scale "
        "and the working correlation) reached max_iter before the largest change fell below tol"
    ),
    Status.CORRELATION_NOT_PD: (
        "the estimated working correlation is not positive definite (alpha outside the range an "
        "exchangeable, AR(1) or unstructured correlation allows): the working covariance cannot "
        "be inverted; estimates and standard errors are NaN. Try corstr='independence'"
    ),
    Status.CG_NOT_CONVERGED: (
        "the conjugate-gradient solves (the fixed effects, or the standard errors of a "
        "Hessian-free fit) did not reach their tolerance; standard errors are NaN"
    ),
    Status.BOUNDARY: (
        "converged on the boundary of the parameter space (lme4's 'boundary (singular) fit'): "
        "some parameters sit on their bounds (a zero variance, a correlation of +/-1); they have "
        "no standard errors, the others' are conditional on them, and LR tests of them have a "
        "chi-square mixture as null distribution, not a chi-square"
    ),
    Status.MODE_NOT_FOUND: (
        "failed: the conditional mode of the random effects was not found for some groups (named "
        "in summary()), so the Laplace/quadrature log-likelihood there is not valid"
    ),
}


class Replications:
    """Mixin for results of R replications that carry a (R,) `status`: which succeeded (only these
    enter the summaries), how many failed, and why (Monte Carlo, the bootstrap)."""

    @property
    def converged(self) -> np.ndarray:
        """(R,) bool: the replication's fit succeeded (status 0)."""
        return np.asarray(self.status) == Status.SUCCESSFUL

    @property
    def n_failed(self) -> int:
        return int(np.sum(~self.converged))

    def failures(self) -> dict[Status, np.ndarray]:
        """{status: indices of the replications whose fit ended with it}, failures only; the
        words are `MESSAGES` (printed by `summary()`)."""
        status = np.asarray(self.status)
        codes = [c for c in np.unique(status) if c != Status.SUCCESSFUL]
        return {Status(int(c)): np.flatnonzero(status == c) for c in codes}
