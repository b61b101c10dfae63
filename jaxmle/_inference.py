"""Wald tests and the delta method, from a fitted result (docs/theory.md, "Tests").

    Wald        W  = (R theta_hat - r)' [R V R']^-1 (R theta_hat - r)        ~ chi2(q)
                     g(theta_hat)' [G V G']^-1 g(theta_hat),  G = dg/dtheta'   (nonlinear, delta method)
    delta       g(theta_hat),  Cov = G V G'

V is any covariance kind of the fit (`cov=`; the fit's own `res.cov` by default). Every test returns
a `TestResult` pytree, so the tests run under `jit` and `vmap` (a batched fit from `jax.vmap(fit)`
gives a batch of tests). Errors that the restriction's shape or names decide are raised on the host,
before any work. Text restrictions ("b[1] = b[2]") are parsed in `_restrictions`; LR and score tests
are `_lrscore`, profile likelihood `_profile`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ._restrictions import _check_linear, parse_restrictions
from ._results import FitResult, parameter_names
from ._scope import host64, over_batch, traced
from ._tables import coefficient_table, normal_quantile, table_lines
from ._testing import TestResult, chi2_test, cov_label, cov_matrix, wald_form

PyTree = Any


@functools.partial(jax.jit, static_argnames="g")
def _g_and_jacobian(params, g):
    """(g(params) as a pytree, flat, and G = d flat / d theta') at once."""
    theta, unravel = ravel_pytree(params)

    def flat(t):
        return jnp.atleast_1d(ravel_pytree(g(unravel(t)))[0])

    return g(params), flat(theta), jax.jacfwd(flat)(theta)


# ---------------------------------------------------------------- Wald


@host64
def wald_test(res: FitResult, R, r=None, *, cov=None) -> TestResult:
    """Wald test of R theta = r, or of g(theta) = r by the delta method.

    W = (R theta_hat - r)' [R V R']^-1 (R theta_hat - r) ~ chi2(q), V = the fit's covariance (or
    `cov=` another kind or a (k, k) matrix). `R` is a (q, k) matrix over the flattened parameters
    (`res.names` order), a string naming parameters as in `summary()`
    (`"b[1] = b[2], b[3] = 0"`; linear, `= 0` when omitted), or a function `g(params) -> pytree`
    (nonlinear: G = dg/dtheta' by autodiff). Single-parameter z tests are what `summary()` shows.

    Equals R `lmtest::waldtest(full, restricted, test = "Chisq", vcov = V)` and
    `car::linearHypothesis(m, "smoke = ht", test = "Chisq")`; statsmodels
    `res.wald_test("x1 = x2", use_f=False)`; Stata `test` (chi2 form).
    """
    label = cov_label(res, cov)
    if callable(R) and not isinstance(R, (str, np.ndarray, jax.Array)):
        return _wald_nonlinear(res, R, r, cov, label)
    labels = None
    if isinstance(R, str) or (isinstance(R, (list, tuple)) and R and isinstance(R[0], str)):
        if r is not None:
            raise ValueError("r= is taken from the text; write the right-hand sides there")
        R, r, labels = parse_restrictions(R, res.names)
    R = jnp.atleast_2d(jnp.asarray(R, res.cov.dtype)) if traced(R) else np.atleast_2d(R)
    r = np.zeros(R.shape[0]) if r is None else r
    r = jnp.atleast_1d(jnp.asarray(r, res.cov.dtype)) if traced(r) else np.atleast_1d(r)
    if traced(R, r):
        hypothesis = f"R theta = r ({R.shape[0]} restrictions)"
    else:
        R, r = np.asarray(R, float), np.asarray(r, float)
        hypothesis = ", ".join(_check_linear(R, r, res, labels))
    q = R.shape[0]

    def one(fit):
        theta = ravel_pytree(fit.params)[0]
        R_ = jnp.asarray(R, theta.dtype)
        diff = R_ @ theta - jnp.asarray(r, theta.dtype)
        stat_p = wald_form(diff, R_, cov_matrix(fit, cov), q)
        return chi2_test(stat_p, q, "Wald", hypothesis, label, (fit,))

    return over_batch(one, res)


def _flat_g(g, res):
    params = res.params if not np.ndim(res.status) else res[0].params
    _, unravel = ravel_pytree(params)

    def flat(theta):
        return ravel_pytree(_checked_g(g)(unravel(theta)))[0]

    return flat


class _checked_g:
    """g, raising a clear error when its output is not a pytree of floats; equal (and hashed)
    as g itself, so the compiled kernels keyed on it are reused across calls with the same g."""

    def __init__(self, g):
        self.g = g

    def __call__(self, params):
        out = self.g(params)
        leaves = jax.tree.leaves(out)
        if not leaves or not all(
            jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) for x in leaves
        ):
            raise TypeError("g(params) must return a pytree of floating-point arrays")
        return out

    def __hash__(self):
        return hash(self.g)

    def __eq__(self, other):
        return isinstance(other, _checked_g) and self.g == other.g


def _wald_nonlinear(res, g, r, cov, label):
    name = _g_name(g)
    params = res.params if not np.ndim(res.status) else res[0].params
    q_shape = jax.eval_shape(_flat_g(g, res), ravel_pytree(params)[0]).shape
    q = q_shape[0] if q_shape else 1
    if r is None or traced(r):
        rhs = "0" if r is None else "r"
    else:
        rhs = ", ".join(f"{v:g}" for v in np.ravel(np.asarray(r, float)))
        rhs = rhs if np.size(r) == 1 else f"({rhs})"
    hypothesis = f"{name}(theta) = {rhs}"

    def one(fit):
        _, val, G = _g_and_jacobian(fit.params, _checked_g(g))
        r_ = jnp.zeros(q, val.dtype) if r is None else jnp.atleast_1d(jnp.asarray(r, val.dtype))
        if not traced(G):
            _check_jacobian(np.asarray(G), fit, name)
        stat_p = wald_form(val - r_, G, cov_matrix(fit, cov), q)
        return chi2_test(stat_p, q, "Wald (delta method)", hypothesis, label, (fit,))

    return over_batch(one, res)


@jax.jit
def _sandwich(G, V):
    c = G @ V @ G.T
    return 0.5 * (c + c.T)


def _check_jacobian(G, res, name):
    free = np.asarray(res.free)
    Gf = G[:, free]
    if not np.isfinite(Gf).all():
        raise ValueError(f"the Jacobian of {name} is not finite at theta_hat")
    rank = np.linalg.matrix_rank(Gf) if Gf.size else 0
    if rank < G.shape[0]:
        raise ValueError(
            f"the Jacobian of {name} over the free parameters has rank {rank} < {G.shape[0]} "
            "restrictions at theta_hat: some restrictions are redundant there, or involve only "
            "fixed parameters (the Wald statistic is undefined)"
        )


def _g_name(g) -> str:
    name = getattr(g, "__name__", "g")
    return name if name.isidentifier() else "g"


# ---------------------------------------------------------------- delta method


class DeltaResult(eqx.Module):
    """g(theta_hat) with its delta-method covariance G V G' (ravel order of g's output)."""

    estimate: PyTree
    se: PyTree
    cov: jax.Array
    names: tuple[str, ...] = eqx.field(static=True)
    cov_type: str = eqx.field(static=True, default="")

    def table(self, level: float = 0.95) -> dict[str, np.ndarray]:
        if np.ndim(self.cov) > 2:
            raise ValueError("table() needs one result, not a batch; index it first")
        est = np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(self.estimate)])
        se = np.sqrt(np.diagonal(np.asarray(self.cov)))
        return coefficient_table(est, se, level)

    @host64
    def conf_int(self, level: float = 0.95):
        """Wald interval g_hat -/+ z_{(1+level)/2} se, as (lower, upper) pytrees."""
        q = normal_quantile(level)
        lo = jax.tree.map(lambda e, s: e - q * s, self.estimate, self.se)
        hi = jax.tree.map(lambda e, s: e + q * s, self.estimate, self.se)
        return lo, hi

    def to_frame(self, level: float = 0.95):
        import pandas as pd

        return pd.DataFrame(self.table(level), index=pd.Index(self.names, name="quantity"))

    def summary(self, level: float = 0.95) -> str:
        lines = [f"Delta method (covariance: {self.cov_type})"]
        lines += table_lines(self.names, self.table(level), level)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary() if np.ndim(self.cov) == 2 else repr(self)


@host64
def delta_method(res: FitResult, g: Callable[[PyTree], PyTree], *, cov=None) -> DeltaResult:
    """g(theta_hat) and its covariance G V G', G = dg/dtheta' at theta_hat by autodiff.

    `g` maps the params pytree to any pytree of floats; `.estimate` and `.se` have g's structure,
    `.cov` is in ravel order of g's output. V is the fit's covariance or `cov=` another kind or a
    (k, k) matrix. Equals R `car::deltaMethod(m, "b1/b2", vcov. = V)`, Stata `nlcom`, statsmodels
    `res._get_wald_nonlinear(g)`.
    """
    if not callable(g):
        raise TypeError(f"g must be a function of the params pytree, got {type(g).__name__}")
    label = cov_label(res, cov)
    out_shape = jax.eval_shape(g, res.params if not np.ndim(res.status) else res[0].params)
    base = _g_name(g)
    names = parameter_names(out_shape)
    if not jax.tree_util.tree_flatten_with_path(out_shape)[0][0][0]:  # a bare array: no path
        names = tuple(base + n[len("theta") :] for n in names)

    def one(fit):
        estimate, _, G = _g_and_jacobian(fit.params, _checked_g(g))
        c = _sandwich(G, cov_matrix(fit, cov))
        unravel = ravel_pytree(estimate)[1]
        return DeltaResult(
            estimate=estimate,
            se=unravel(jnp.sqrt(jnp.diagonal(c))),
            cov=c,
            names=names,
            cov_type=label,
        )

    return over_batch(one, res)
