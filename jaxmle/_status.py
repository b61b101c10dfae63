"""Status codes of a fit and the words `summary()` prints for them.

Numerical outcomes are data (design tier 2): a compiled fit cannot raise, so it returns one of these
codes, decided after its loop from the final state, and `FitResult.message` says it in words.
"""

from __future__ import annotations

import enum


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
    BOUNDARY = 9
    MODE_NOT_FOUND = 10


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
