"""Likelihood-ratio and score tests, and the comparison of several fits (docs/theory.md, "Tests").

LR          LR = 2 (lnL_full - lnL_restricted)                            ~ chi2(k_full - k_restricted)
score (LM)  LM = U' M^-1 U at the restricted estimate, M = -H | OPG | I   ~ chi2(q)
            robust: a' [V_qq]^-1 a,  a = ((-H)^-1 U)_q,  V = sandwich or cluster covariance
compare     AIC, BIC and sequential LR tests of several fits
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._covariance import covariance, psd_inverse
from ._fit import fit
from ._results import FitResult
from ._scope import host64, over_batch, traced
from ._testing import TestResult, chi2_sf, chi2_test, with_pvalue

PyTree = Any

# A restricted fit reproduces the full model's lnL at theta_tilde to rounding; a larger gap means
# theta_tilde is not the restricted estimate, or the data differ.
LOGLIK_MATCH_RTOL = 1e-6


@functools.partial(jax.jit, static_argnames="df")
def _lr_kernel(loglik_restricted, loglik_full, df):
    return with_pvalue(2.0 * (loglik_full - loglik_restricted), df)


@functools.partial(jax.jit, static_argnames=("entry", "held", "df"))
def _lm_kernel(score, pieces, entry, held, df):
    if entry.name in ("hessian", "opg", "expected"):
        m = {"hessian": pieces.information, "opg": pieces.opg, "expected": pieces.expected}
        m_inv, _ = psd_inverse(m[entry.name])
        return with_pvalue(score @ m_inv @ score, df)
    held = np.asarray(held)
    bread, _ = psd_inverse(pieces.information)
    V, _ = covariance(entry, pieces)
    a = (bread @ score)[held]
    v_inv, _ = psd_inverse(V[held][:, held])
    return with_pvalue(a @ v_inv @ a, df)


# ---------------------------------------------------------------- likelihood ratio


def _check_same_data(restricted: FitResult, full: FitResult) -> None:
    if np.shape(restricted.status) != np.shape(full.status):
        raise ValueError(
            f"batch shapes differ: {np.shape(restricted.status)} vs {np.shape(full.status)}"
        )
    if traced(restricted.n_obs, full.n_obs):
        return
    n_r, n_f = np.asarray(restricted.n_obs), np.asarray(full.n_obs)
    if not np.array_equal(n_r, n_f):
        shown = [", ".join(f"{v:g}" for v in np.unique(n)) for n in (n_r, n_f)]
        raise ValueError(
            f"the fits are on different data: N = {shown[0]} (restricted) vs {shown[1]} (full); "
            "an LR test compares two models of the same observations"
        )
    if not (restricted.has_problem and full.has_problem):
        return
    a, b = restricted.problem, full.problem
    if (a.weights is None) != (b.weights is None) or (
        a.weights is not None
        and not np.array_equal(np.asarray(a.weights)[: a.n_rows], np.asarray(b.weights)[: b.n_rows])
    ):
        raise ValueError("the fits use different observation weights; an LR test needs the same")
    if a.layout.host is not None or b.layout.host is not None:
        return  # streamed data stay on the host; compared by N only
    # every data leaf the two models share (same path and shape) must hold the same values: two
    # separately written models read some of the same columns, and the response among them
    leaves_b = {
        jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_flatten_with_path(b.data)[0]
    }
    for path, x in jax.tree_util.tree_flatten_with_path(a.data)[0]:
        y = leaves_b.get(jax.tree_util.keystr(path))
        if y is None:
            continue
        x, y = np.asarray(x)[: a.n_rows], np.asarray(y)[: b.n_rows]
        if x.shape == y.shape and not np.array_equal(x, y, equal_nan=True):
            raise ValueError(
                f"the two fits are on different data (data{jax.tree_util.keystr(path)} "
                "differs); an LR test compares two models of the same observations"
            )


@host64
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
        stat_p = _lr_kernel(r.loglik, f.loglik, df)
        return chi2_test(stat_p, df, "Likelihood-ratio", "", "", (r, f))

    return over_batch(one, restricted, full)


# ---------------------------------------------------------------- score (Lagrange multiplier)


@host64
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
    if not isinstance(kind, str) or kind not in restricted.cov_kinds:
        raise ValueError(
            f"unknown cov {kind!r} for a score test; choose one of {tuple(restricted.cov_kinds)}"
        )
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
        return over_batch(lambda one: _lm(one, kind, q, one), restricted)
    return _score_separate(restricted, logpdf, theta, data, kind, fixed, fit_options)


def _check_score_kind(res: FitResult, kind: str) -> None:
    res.check_cov(kind)


def _lm(res: FitResult, kind: str, q: int, restricted: FitResult) -> TestResult:
    held = tuple(int(i) for i in np.flatnonzero(~np.asarray(res.free)))
    everything = res.pieces()._replace(  # over the full vector: the score test needs every row
        information=res.information,
        opg=res.opg,
        meat=res.meat,
        score_groups=res.score_groups,
        expected=res.expected_information,
    )
    stat_p = _lm_kernel(res.score, everything, entry=res.cov_kinds[kind], held=held, df=q)
    label = {"hessian": "observed information", "opg": "OPG", "expected": "expected information"}
    cov_type = label.get(kind, f"robust, {kind}")
    return chi2_test(stat_p, q, "Score (LM)", "", cov_type, (restricted,))


def _score_separate(restricted, logpdf, theta, data, kind, fixed, fit_options):
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
    if not traced(full.loglik, restricted.loglik):
        a, b = float(full.loglik), float(restricted.loglik)
        if not abs(a - b) <= LOGLIK_MATCH_RTOL * max(1.0, abs(b)):
            raise ValueError(
                f"the full model's lnL at theta_tilde is {a:.10g} but the restricted fit's is "
                f"{b:.10g}: theta_tilde must be the restricted estimate written in the full "
                "model's parameters, on the same data"
            )
    _check_score_kind(full, kind)
    return over_batch(lambda one, r: _lm(one, kind, q, r), full, restricted)


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
