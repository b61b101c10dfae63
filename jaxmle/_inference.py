"""Tests and derived quantities from a fitted result (theory.md, "Tests").

    Wald        W  = (R theta_hat - r)' [R V R']^-1 (R theta_hat - r)        ~ chi2(q)
                     g(theta_hat)' [G V G']^-1 g(theta_hat),  G = dg/dtheta'   (nonlinear, delta method)
    LR          LR = 2 (lnL_full - lnL_restricted)                            ~ chi2(k_full - k_restricted)
    score (LM)  LM = U' M^-1 U at the restricted estimate, M = -H | OPG | I   ~ chi2(q)
                robust: a' [V_qq]^-1 a,  a = ((-H)^-1 U)_q,  V = sandwich or cluster covariance
    delta       g(theta_hat),  Cov = G V G'
    compare     AIC, BIC and sequential LR tests of several fits

V is any covariance kind of the fit (`cov=`; the fit's own `res.cov` by default). Every test returns
a `TestResult` pytree, so the tests run under `jit` and `vmap` (a batched fit from `jax.vmap(fit)`
gives a batch of tests); numerical trouble (a singular R V R') gives NaN, never an exception there.
Errors that the restriction's shape or names decide are raised on the host, before any work.
Text restrictions ("b[1] = b[2]") are parsed in `_restrictions`; profile likelihood is `_profile`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.scipy.special import gammaincc

from ._covariance import KINDS, covariance, psd_inverse
from ._restrictions import _check_linear, parse_restrictions
from ._results import FitResult, coefficient_table, parameter_names
from ._transforms import over_batch

PyTree = Any

# A restricted fit reproduces the full model's lnL at theta_tilde to rounding; a larger gap means
# theta_tilde is not the restricted estimate, or the data differ.
LOGLIK_MATCH_RTOL = 1e-6


def _host64(fn):
    """Run with 64-bit JAX when the (first) result is a host-side float64 fit."""

    @functools.wraps(fn)
    def wrapper(res, *args, **kwargs):
        leaf = getattr(res, "loglik", None)
        if leaf is not None and leaf.dtype == jnp.float64 and not isinstance(leaf, jax.core.Tracer):
            with jax.enable_x64(True):
                return fn(res, *args, **kwargs)
        return fn(res, *args, **kwargs)

    return wrapper


def chi2_sf(x, df):
    """P(chi2_df > x), jittable (regularised upper incomplete gamma)."""
    x = jnp.asarray(x)
    return gammaincc(jnp.asarray(df, x.dtype) / 2.0, x / 2.0)


def _traced(*xs) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(xs))


# ---------------------------------------------------------------- the test result


class TestResult(eqx.Module):
    """A chi-square test: `statistic`, `df`, `pvalue` (arrays; batched under vmap).

    `test` names the test, `hypothesis` the restrictions in words, `cov_type` the covariance or
    information it used; all static.
    """

    statistic: jax.Array
    df: jax.Array
    pvalue: jax.Array
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
        return (
            f"{head}{what}: chi2({int(self.df)}) = {float(self.statistic):.6g}, "
            f"P > chi2 = {float(self.pvalue):.4g}"
        )


def _chi2_test(stat_p, df, test, hypothesis="", cov_type=""):
    stat, p = stat_p
    return TestResult(
        statistic=stat,
        df=jnp.asarray(df, jnp.int32),
        pvalue=p,
        test=test,
        hypothesis=hypothesis,
        cov_type=cov_type,
    )


# Compiled kernels (one program per shape and static option): eager op-by-op execution of the
# same arithmetic would compile dozens of small programs on a first call.


def _with_pvalue(stat, df):
    return stat, chi2_sf(jnp.maximum(stat, 0.0), df)


@functools.partial(jax.jit, static_argnames="df")
def _quadratic_form_test(diff, G, V, df):
    """diff' [G V G']^-1 diff and its chi2(df) p-value."""
    w_inv, _ = psd_inverse(G @ V @ G.T)
    return _with_pvalue(diff @ w_inv @ diff, df)


@functools.partial(jax.jit, static_argnames="g")
def _g_and_jacobian(params, g):
    """(g(params) as a pytree, flat, and G = d flat / d theta') at once."""
    theta, unravel = ravel_pytree(params)

    def flat(t):
        return jnp.atleast_1d(ravel_pytree(g(unravel(t)))[0])

    return g(params), flat(theta), jax.jacfwd(flat)(theta)


@functools.partial(jax.jit, static_argnames="df")
def _lr_kernel(loglik_restricted, loglik_full, df):
    return _with_pvalue(2.0 * (loglik_full - loglik_restricted), df)


@functools.partial(jax.jit, static_argnames=("kind", "held", "df"))
def _lm_kernel(score, information, opg, meat, score_groups, expected, kind, held, df):
    if kind in ("hessian", "opg", "expected"):
        m = {"hessian": information, "opg": opg, "expected": expected}[kind]
        m_inv, _ = psd_inverse(m)
        return _with_pvalue(score @ m_inv @ score, df)
    held = np.asarray(held)
    bread, _ = psd_inverse(information)
    V, _ = covariance(kind, information, opg, meat, score_groups)
    a = (bread @ score)[held]
    v_inv, _ = psd_inverse(V[held][:, held])
    return _with_pvalue(a @ v_inv @ a, df)


# ---------------------------------------------------------------- shared host checks


def _cov_label(res: FitResult, cov) -> str:
    """Check `cov=` on the host (before any work) and name it."""
    k = len(res.names)
    if cov is None:
        return res.cov_type
    if isinstance(cov, str):
        if cov not in KINDS:
            raise ValueError(f"unknown cov {cov!r}; choose one of {KINDS} or pass a (k, k) matrix")
        if cov == "cluster" and res.score_groups.shape[-2] == 0:
            raise ValueError("cov='cluster' needs cluster ids: fit with groups=... first")
        return cov
    if np.shape(cov) != (k, k):
        raise ValueError(f"cov must be a ({k}, {k}) matrix in ravel order, got {np.shape(cov)}")
    return "user"


def _cov_matrix(fit: FitResult, cov):
    """V of one fit: its own cov, another kind (from the stored matrices), or a user matrix."""
    if cov is None:
        return fit.cov
    if isinstance(cov, str):
        return fit.covariance(cov)
    return jnp.asarray(cov, fit.cov.dtype)


# ---------------------------------------------------------------- Wald


@_host64
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
    label = _cov_label(res, cov)
    if callable(R) and not isinstance(R, (str, np.ndarray, jax.Array)):
        return _wald_nonlinear(res, R, r, cov, label)
    labels = None
    if isinstance(R, str) or (isinstance(R, (list, tuple)) and R and isinstance(R[0], str)):
        if r is not None:
            raise ValueError("r= is taken from the text; write the right-hand sides there")
        R, r, labels = parse_restrictions(R, res.names)
    R = jnp.atleast_2d(jnp.asarray(R, res.cov.dtype)) if _traced(R) else np.atleast_2d(R)
    r = np.zeros(R.shape[0]) if r is None else r
    r = jnp.atleast_1d(jnp.asarray(r, res.cov.dtype)) if _traced(r) else np.atleast_1d(r)
    if _traced(R, r):
        hypothesis = f"R theta = r ({R.shape[0]} restrictions)"
    else:
        R, r = np.asarray(R, float), np.asarray(r, float)
        hypothesis = ", ".join(_check_linear(R, r, res, labels))
    q = R.shape[0]

    def one(fit):
        theta = ravel_pytree(fit.params)[0]
        R_ = jnp.asarray(R, theta.dtype)
        diff = R_ @ theta - jnp.asarray(r, theta.dtype)
        stat_p = _quadratic_form_test(diff, R_, _cov_matrix(fit, cov), q)
        return _chi2_test(stat_p, q, "Wald", hypothesis, label)

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
    if r is None or _traced(r):
        rhs = "0" if r is None else "r"
    else:
        rhs = ", ".join(f"{v:g}" for v in np.ravel(np.asarray(r, float)))
        rhs = rhs if np.size(r) == 1 else f"({rhs})"
    hypothesis = f"{name}(theta) = {rhs}"

    def one(fit):
        _, val, G = _g_and_jacobian(fit.params, _checked_g(g))
        r_ = jnp.zeros(q, val.dtype) if r is None else jnp.atleast_1d(jnp.asarray(r, val.dtype))
        if not _traced(G):
            _check_jacobian(np.asarray(G), fit, name)
        stat_p = _quadratic_form_test(val - r_, G, _cov_matrix(fit, cov), q)
        return _chi2_test(stat_p, q, "Wald (delta method)", hypothesis, label)

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


# ---------------------------------------------------------------- likelihood ratio


def _check_same_data(restricted: FitResult, full: FitResult) -> None:
    if np.shape(restricted.status) != np.shape(full.status):
        raise ValueError(
            f"batch shapes differ: {np.shape(restricted.status)} vs {np.shape(full.status)}"
        )
    if _traced(restricted.n_obs, full.n_obs):
        return
    n_r, n_f = np.asarray(restricted.n_obs), np.asarray(full.n_obs)
    if not np.array_equal(n_r, n_f):
        shown = [", ".join(f"{v:g}" for v in np.unique(n)) for n in (n_r, n_f)]
        raise ValueError(
            f"the fits are on different data: N = {shown[0]} (restricted) vs {shown[1]} (full); "
            "an LR test compares two models of the same observations"
        )
    a, b = restricted.context, full.context
    if a is None or b is None:
        return
    if (a.weights is None) != (b.weights is None) or (
        a.weights is not None and not np.array_equal(np.asarray(a.weights), np.asarray(b.weights))
    ):
        raise ValueError("the fits use different observation weights; an LR test needs the same")
    la, ta = jax.tree.flatten(a.data)
    lb, tb = jax.tree.flatten(b.data)
    n = getattr(a, "n_rows", None)  # without the padding rows of a sharded fit
    la, lb = ([x[:n] for x in leaves] for leaves in (la, lb))
    same_shape = ta == tb and all(x.shape == y.shape for x, y in zip(la, lb, strict=True))
    if a.logpdf == b.logpdf and same_shape:
        for x, y, path in zip(la, lb, jax.tree_util.tree_flatten_with_path(a.data)[0], strict=True):
            if not np.array_equal(np.asarray(x), np.asarray(y)):
                raise ValueError(
                    "the two fits are the same model on different data (data"
                    f"{jax.tree_util.keystr(path[0])} differs); an LR test compares two models "
                    "of the same observations"
                )


@_host64
def lr_test(restricted: FitResult, full: FitResult) -> TestResult:
    """Likelihood-ratio test LR = 2 (lnL_full - lnL_restricted) ~ chi2(k_full - k_restricted).

    k counts the free parameters (`n_params`), so a restricted fit may be the same model with
    `fixed=` or a model written separately. Refuses fits on different data (N, weights, or the same
    model on other values) and parameter counts that cannot be nested. Both fits should have
    converged (check `converged`); a negative statistic (the restricted fit is better) gives
    P = 1. Equals R `lmtest::lrtest(restricted, full)`, statsmodels
    `full.compare_lr_test(restricted)`, Stata `lrtest`.
    """
    k_r, k_f = restricted.n_params, full.n_params
    if k_r >= k_f:
        swap = " (did you swap them? the call is lr_test(restricted, full))" if k_r > k_f else ""
        raise ValueError(
            f"the restricted fit has {k_r} free parameters and the full fit {k_f}: nested models "
            f"need fewer in the restricted one{swap}"
        )
    _check_same_data(restricted, full)
    df = k_f - k_r

    def one(r, f):
        return _chi2_test(_lr_kernel(r.loglik, f.loglik, df), df, "Likelihood-ratio", "", "")

    return over_batch(one, restricted, full)


# ---------------------------------------------------------------- score (Lagrange multiplier)

_SCORE_KINDS = ("hessian", "opg", "expected", "sandwich", "cluster")


@_host64
def score_test(
    restricted: FitResult,
    logpdf: Callable | None = None,
    theta: PyTree = None,
    data: PyTree = None,
    *,
    cov: str | None = None,
    fixed: Sequence[str] | None = None,
    **fit_options,
) -> TestResult:
    """Score (Lagrange-multiplier) test of the restriction, from the restricted estimate only.

    `score_test(restricted)`, with `restricted = jm.fit(..., fixed={"g": values})`: the fit keeps
    the full score U and information at theta_tilde; df = number of fixed parameters.
    `score_test(restricted, logpdf_full, theta_tilde, data)`: the restricted model written on its
    own; theta_tilde is the full parameter pytree at its estimate (df = k_full - k_restricted; the
    full model's lnL at theta_tilde must equal the restricted lnL). Other `jm.fit` options
    (weights, groups, expected) go in `**fit_options`.

        cov="hessian"  LM = U' (-H)^-1 U       ("opg": U' (sum u u')^-1 U; "expected": U' I^-1 U)
        cov="sandwich" | "cluster"  robust LM = a' [V_qq]^-1 a,  a = ((-H)^-1 U)_q,
                       V = (-H)^-1 B (-H)^-1 (cluster: B_c, times G/(G-1)), q = the restricted ones
                       (Boos 1992; with a separate restricted model name them with fixed=[keys]).

    Default `cov` is the restricted fit's own kind. Equals R `anova(m0, m1, test = "Rao")` for
    canonical-link GLMs and statsmodels `GLMResults.score_test(exog_extra, observed=True)`; the
    robust form is statsmodels' `_lm_robust` with the uncentred meat sum u u'.
    """
    kind = restricted.cov_type if cov is None else cov
    if kind not in _SCORE_KINDS:
        raise ValueError(f"unknown cov {kind!r} for a score test; choose one of {_SCORE_KINDS}")
    if logpdf is None:
        if theta is not None or data is not None or fixed is not None or fit_options:
            raise ValueError(
                "score_test(restricted) takes the restricted fit only; for a separately written "
                "restricted model pass score_test(restricted, logpdf_full, theta_tilde, data)"
            )
        q = len(restricted.free) - restricted.n_params
        if q == 0:
            raise ValueError(
                "the fit holds no parameter fixed, so there is nothing to test: fit the "
                "restricted model with fixed={...}, or pass the full model's logpdf, theta, data"
            )
        _check_score_kind(restricted, kind)
        return over_batch(lambda one: _lm(one, kind, q), restricted)
    return _score_separate(restricted, logpdf, theta, data, kind, fixed, fit_options)


def _check_score_kind(res: FitResult, kind: str) -> None:
    if kind == "cluster" and res.score_groups.shape[-2] == 0:
        raise ValueError("cov='cluster' needs cluster ids: fit with groups=...")
    info = res.expected_information
    if kind == "expected" and not _traced(info) and not np.isfinite(np.asarray(info)).all():
        raise ValueError("cov='expected' needs a fit with expected=(predict, fisher)")


def _lm(res: FitResult, kind: str, q: int) -> TestResult:
    held = tuple(int(i) for i in np.flatnonzero(~np.asarray(res.free)))
    stat_p = _lm_kernel(
        res.score,
        res.information,
        res.opg,
        res.meat,
        res.score_groups,
        res.expected_information,
        kind=kind,
        held=held,
        df=q,
    )
    label = {"hessian": "observed information", "opg": "OPG", "expected": "expected information"}
    return _chi2_test(stat_p, q, "Score (LM)", "", label.get(kind, f"robust, {kind}"))


def _score_separate(restricted, logpdf, theta, data, kind, fixed, fit_options):
    from ._fit import fit

    if theta is None or data is None:
        raise ValueError("pass both theta_tilde (the full parameters) and data")
    if kind in ("sandwich", "cluster") and fixed is None:
        raise ValueError(
            f"the robust score test (cov={kind!r}) needs to know which parameters the restriction "
            "holds: pass fixed=[top-level keys of theta held by the restricted model]"
        )
    if "max_iter" in fit_options or "cov" in fit_options:
        raise ValueError("max_iter and cov are set by score_test; pass cov= to score_test")
    held = None
    if fixed is not None:
        if isinstance(fixed, str):
            fixed = [fixed]
        if not isinstance(theta, dict):
            raise TypeError("fixed= names top-level keys of theta, so theta must be a dict")
        held = {key: theta[key] for key in fixed} if all(k in theta for k in fixed) else None
        if held is None:
            missing = [k for k in fixed if k not in theta]
            raise KeyError(f"fixed names {missing}, which are not keys of theta ({list(theta)})")
    if kind == "cluster" and fit_options.get("groups") is None:
        raise ValueError("cov='cluster' needs cluster ids: pass groups=... (a fit option)")
    if kind == "expected" and fit_options.get("expected") is None:
        raise ValueError("cov='expected' needs expected=(predict, fisher) (a fit option)")
    # cov="hessian" whatever the kind: the result keeps every matrix, and one program serves all
    full = fit(logpdf, theta, data, fixed=held, max_iter=0, cov="hessian", **fit_options)
    k_full = len(full.free)
    q = k_full - restricted.n_params
    if q <= 0:
        raise ValueError(
            f"the full model has {k_full} parameters and the restricted fit {restricted.n_params} "
            "free ones: nothing is restricted"
        )
    if held is not None and k_full - full.n_params != q:
        raise ValueError(
            f"fixed={list(fixed)} holds {k_full - full.n_params} parameters, but the restricted "
            f"fit has {restricted.n_params} of the full model's {k_full}: they must add up"
        )
    if not _traced(full.loglik, restricted.loglik):
        a, b = float(full.loglik), float(restricted.loglik)
        if not abs(a - b) <= LOGLIK_MATCH_RTOL * max(1.0, abs(b)):
            raise ValueError(
                f"the full model's lnL at theta_tilde is {a:.10g} but the restricted fit's is "
                f"{b:.10g}: theta_tilde must be the restricted estimate written in the full "
                "model's parameters, on the same data"
            )
    _check_score_kind(full, kind)
    return over_batch(lambda one: _lm(one, kind, q), full)


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

    def conf_int(self, level: float = 0.95):
        """Wald interval g_hat -/+ z_{(1+level)/2} se, as (lower, upper) pytrees."""
        q = statistics.NormalDist().inv_cdf(0.5 + level / 2.0)
        wide = self.cov.dtype == jnp.float64 and not _traced(self.cov)
        with jax.enable_x64(True) if wide else contextlib.nullcontext():
            lo = jax.tree.map(lambda e, s: e - q * s, self.estimate, self.se)
            hi = jax.tree.map(lambda e, s: e + q * s, self.estimate, self.se)
        return lo, hi

    def to_frame(self, level: float = 0.95):
        import pandas as pd

        return pd.DataFrame(self.table(level), index=pd.Index(self.names, name="quantity"))

    def summary(self, level: float = 0.95) -> str:
        t = self.table(level)
        width = max(12, *(len(n) for n in self.names)) + 1
        lo, hi = (1 - level) / 2, (1 + level) / 2
        rule = "-" * (width + 70)
        lines = [
            f"Delta method (covariance: {self.cov_type})",
            rule,
            f"{'':<{width}}{'estimate':>12}{'std.err':>12}{'z':>9}{'P>|z|':>9}"
            f"{f'[{lo:.3g}':>14}{f'{hi:.3g}]':>14}",
            rule,
        ]
        for i, name in enumerate(self.names):
            lines.append(
                f"{name:<{width}}{t['estimate'][i]:>12.6g}{t['std_err'][i]:>12.6g}"
                f"{t['z'][i]:>9.3f}{t['p_value'][i]:>9.4f}"
                f"{t['ci_lower'][i]:>14.6g}{t['ci_upper'][i]:>14.6g}"
            )
        lines.append(rule)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary() if np.ndim(self.cov) == 2 else repr(self)


@_host64
def delta_method(res: FitResult, g: Callable[[PyTree], PyTree], *, cov=None) -> DeltaResult:
    """g(theta_hat) and its covariance G V G', G = dg/dtheta' at theta_hat by autodiff.

    `g` maps the params pytree to any pytree of floats; `.estimate` and `.se` have g's structure,
    `.cov` is in ravel order of g's output. V is the fit's covariance or `cov=` another kind or a
    (k, k) matrix. Equals R `car::deltaMethod(m, "b1/b2", vcov. = V)`, Stata `nlcom`, statsmodels
    `res._get_wald_nonlinear(g)`.
    """
    if not callable(g):
        raise TypeError(f"g must be a function of the params pytree, got {type(g).__name__}")
    label = _cov_label(res, cov)
    out_shape = jax.eval_shape(g, res.params if not np.ndim(res.status) else res[0].params)
    base = _g_name(g)
    names = parameter_names(out_shape)
    if not jax.tree_util.tree_flatten_with_path(out_shape)[0][0][0]:  # a bare array: no path
        names = tuple(base + n[len("theta") :] for n in names)

    def one(fit):
        estimate, _, G = _g_and_jacobian(fit.params, _checked_g(g))
        c = _sandwich(G, _cov_matrix(fit, cov))
        unravel = ravel_pytree(estimate)[1]
        return DeltaResult(
            estimate=estimate,
            se=unravel(jnp.sqrt(jnp.diagonal(c))),
            cov=c,
            names=names,
            cov_type=label,
        )

    return over_batch(one, res)


# ---------------------------------------------------------------- comparison table


@dataclasses.dataclass(frozen=True)
class ModelComparison:
    """lnL, k, N, AIC, BIC of several fits, and the LR test of each against the previous one."""

    names: tuple[str, ...]
    loglik: np.ndarray
    k: np.ndarray
    n_obs: np.ndarray
    aic: np.ndarray
    bic: np.ndarray
    lr: np.ndarray
    df: np.ndarray
    pvalue: np.ndarray

    def to_frame(self):
        import pandas as pd

        cols = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)[1:]}
        return pd.DataFrame(cols, index=pd.Index(self.names, name="model"))

    def __str__(self) -> str:
        width = max(8, *(len(n) for n in self.names)) + 1
        head = f"{'':<{width}}{'lnL':>14}{'k':>5}{'N':>9}{'AIC':>13}{'BIC':>13}"
        head += f"{'LR':>11}{'df':>5}{'P>chi2':>10}"
        lines = [head, "-" * len(head)]
        for i, name in enumerate(self.names):
            row = f"{name:<{width}}{self.loglik[i]:>14.6f}{self.k[i]:>5d}{self.n_obs[i]:>9.6g}"
            row += f"{self.aic[i]:>13.4f}{self.bic[i]:>13.4f}"
            if np.isfinite(self.lr[i]):
                row += f"{self.lr[i]:>11.4f}{int(self.df[i]):>5d}{self.pvalue[i]:>10.4g}"
            lines.append(row)
        lines.append(
            "LR: each model against the previous one, df = |k difference| (lmtest::lrtest)"
        )
        return "\n".join(lines)


def compare(*fits: FitResult, names: Sequence[str] | None = None) -> ModelComparison:
    """Information criteria and sequential LR tests for fits of the same data.

    AIC = -2 lnL + 2k, BIC = -2 lnL + k ln N (k free parameters). Row i > 0 carries the LR test
    against row i - 1: LR = 2 |lnL_i - lnL_{i-1}|, df = |k_i - k_{i-1}|, NaN where k is equal
    (not nested). Equals R `lmtest::lrtest(m1, m2, m3)` with `AIC(m1, m2, m3)`, `BIC(...)`.
    `compare({"null": r0, "full": r1})` names the rows.
    """
    if len(fits) == 1 and isinstance(fits[0], dict):
        names = tuple(fits[0]) if names is None else names
        fits = tuple(fits[0].values())
    elif len(fits) == 1 and isinstance(fits[0], (list, tuple)):
        fits = tuple(fits[0])
    if len(fits) < 1 or not all(isinstance(f, FitResult) for f in fits):
        raise TypeError("compare takes FitResults: compare(fit1, fit2, ...)")
    names = tuple(f"model {i + 1}" for i in range(len(fits))) if names is None else tuple(names)
    if len(names) != len(fits):
        raise ValueError(f"{len(names)} names for {len(fits)} fits")
    for f in fits:
        if np.ndim(f.status):
            raise ValueError("compare takes single fits, not batches; index them first")
    n = np.array([float(f.n_obs) for f in fits])
    if not np.all(n == n[0]):
        raise ValueError(
            f"the fits are on different data (N = {', '.join(f'{v:g}' for v in n)}); "
            "information criteria and LR "
            "tests compare models of the same observations"
        )
    for a, b in itertools.pairwise(fits):
        if a.n_params != b.n_params:
            pair = (a, b) if a.n_params < b.n_params else (b, a)
            _check_same_data(*pair)
    ll = np.array([float(f.loglik) for f in fits])
    k = np.array([f.n_params for f in fits])
    lr = np.full(len(fits), np.nan)
    df = np.zeros(len(fits), dtype=int)
    p = np.full(len(fits), np.nan)
    for i in range(1, len(fits)):
        df[i] = abs(k[i] - k[i - 1])
        if df[i]:
            lr[i] = 2.0 * abs(ll[i] - ll[i - 1])
            with jax.enable_x64(True):
                p[i] = float(chi2_sf(jnp.asarray(lr[i], jnp.float64), df[i]))
    return ModelComparison(
        names=names,
        loglik=ll,
        k=k,
        n_obs=n,
        aic=-2.0 * ll + 2.0 * k,
        bic=-2.0 * ll + np.log(n) * k,
        lr=lr,
        df=df,
        pvalue=p,
    )
