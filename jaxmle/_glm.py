"""glm(): generalised linear models from a formula and a pandas DataFrame, as R's glm and MASS::glm.nb.

The formula (formulaic: interactions, `C(g)` categoricals, `np.log(x)` transforms) gives the response y
and the design X; the family gives the distribution of y_i with mean mu_i = g^-1(x_i'b + offset_i)
(`families._glmfamily`), and the fit is `jaxmle.fit` of that model by Fisher scoring with
I(theta) = sum_i J_i' F(eta_i) J_i (theory.md), which for a GLM is IRLS. Everything R's `summary(glm)`
reports comes out under the formula's coefficient names.
"""

from __future__ import annotations

import dataclasses
import sys
import warnings
from collections import OrderedDict
from functools import partial
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._covariance import KINDS
from ._fit import METHODS, fit
from ._results import FitResult, table_row
from .families._glmfamily import GLMFamily, NegativeBinomialFamily, glm_family
from .families._model import Model

DISPERSIONS = (None, "pearson", "mle")
# A column whose part not explained by the columns before it is below this fraction of its sum of
# squares (R^2 > 1 - 1e-11 on them) is a linear combination of them. The Gram matrix resolves this
# fraction to ~1e-13 in float64; such a column would leave the information matrix singular anyway.
COLLINEAR_TOL = 1e-11
_NULL_ITERATIONS = 50


# ---------------------------------------------------------------- the model (hashable pieces)


@dataclasses.dataclass(frozen=True)
class _Predict:
    """predict(theta, obs) -> the family's distribution of y_i, eta_i = x_i'b + offset_i."""

    family: GLMFamily
    coef_names: tuple[str, ...]

    def __call__(self, theta, obs):
        eta = obs["X"] @ theta["coef"] + obs["offset"]
        extra = theta[self.family.extra] if self.family.extra else None
        return self.family.distribution(eta, extra, obs["w"], obs["y"])


@dataclasses.dataclass(frozen=True)
class _Response:
    family: GLMFamily

    def __call__(self, obs):
        return self.family.response(obs["y"], obs["w"])


class GLMInfo:
    """Host-side description of a GLM fit (formula, family, design spec, dropped rows); identity-hashed,
    so a `GLMResult` stays a cheap pytree."""

    def __init__(self, **fields):
        self.__dict__.update(fields)


class GLMResult(FitResult):
    """A `FitResult` with R's GLM numbers. `params`, `se`: coefficients by formula name, then the
    family's extra parameter ("scale", "shape" or "theta") at its MLE.

    deviance      sum_i w_i d(y_i, mu_i)                  R `deviance(m)`
    null_deviance the same for the intercept(+offset) model R `m$null.deviance`
    pearson_chi2  sum_i w_i (y_i - mu_i)^2 / V(mu_i)      R `sum(residuals(m, "pearson")^2)`
    dispersion    Pearson chi2 / df_resid (gaussian, gamma, or dispersion="pearson"; R
                  `summary(m)$dispersion`), 1 (binomial, poisson, negative binomial), or
                  phi_MLE (sigma^2, 1/shape) with dispersion="mle"
    df_resid      n - p                                   R `df.residual(m)`
    `cov_type` says which covariance `cov`/`se` hold; `covariance(kind)`/`with_cov(kind)` give the
    unscaled kinds of `jaxmle.fit` (pure MLE).
    """

    deviance: jax.Array = eqx.field(kw_only=True)
    null_deviance: jax.Array = eqx.field(kw_only=True)
    pearson_chi2: jax.Array = eqx.field(kw_only=True)
    dispersion: jax.Array = eqx.field(kw_only=True)
    df_resid: jax.Array = eqx.field(kw_only=True)
    df_null: jax.Array = eqx.field(kw_only=True)
    glm: Any = eqx.field(static=True, kw_only=True, default=None)

    @property
    def family(self) -> GLMFamily:
        return self.glm.family

    @property
    def coef_names(self) -> tuple[str, ...]:
        return self.glm.coef_names

    @property
    def n_dropped(self) -> int:
        """Rows left out: missing values in the variables used (R's na.omit), and zero weights."""
        return self.glm.n_missing + self.glm.n_zero_weight

    def predict(self, newdata=None, offset=None):
        """Linear predictor and mean with delta-method standard errors, as a DataFrame.

        Columns `link` (x'b + offset), `se_link` = sqrt(x' V x), `response` (mu = g^-1(eta)) and
        `se_response` = |d mu/d eta| se_link, V the coefficient block of `cov` (so the dispersion
        scaling of `cov_type` carries over). Equals R `predict(m, newdata, type = "link" / "response",
        se.fit = TRUE)`. `newdata=None` predicts the rows fitted; an offset given as a column name
        is read from `newdata`, one given as an array must be passed again as `offset=`.
        """
        import pandas as pd

        self._require_single("predict")
        info = self.glm
        if newdata is None:
            X = np.asarray(self.context.data["X"])
            off = np.asarray(self.context.data["offset"])
            index = info.index
        else:
            frame = _as_frame(newdata)
            X = _new_design(info, frame)
            off = _new_offset(info, frame, offset)
            index = frame.index
        p = len(info.coef_names)
        with jax.enable_x64(True):
            coef = jnp.stack([jnp.asarray(self.params[n]) for n in info.coef_names])
            out = _predict_columns(info.family, coef, self.cov[:p, :p], jnp.asarray(X), off)
        names = ("link", "se_link", "response", "se_response")
        cols = {name: np.asarray(col) for name, col in zip(names, out, strict=True)}
        return pd.DataFrame(cols, index=index)

    def summary(self, level: float = 0.95) -> str:
        """R `summary(glm)`-style: call, family, coefficients (z tests), dispersion, deviances, AIC."""
        self._require_single("summary")
        info, t = self.glm, self.table(level)
        fam = info.family
        dropped = []
        if info.n_missing:
            dropped.append(f"{info.n_missing} with missing values")
        if info.n_zero_weight:
            dropped.append(f"{info.n_zero_weight} with zero weight")
        n_text = f"{int(self.n_obs)}" + (f" ({', '.join(dropped)} dropped)" if dropped else "")
        phi = float(self.dispersion)
        head = [
            ("Formula", info.formula),
            ("Family", f"{fam.name}, link {fam.link.name}"),
            ("Observations", n_text),
            ("Method", f"{self.method}, {int(self.n_iter)} iterations"),
            ("Covariance", self.cov_type),
            ("Dispersion", f"{phi:.6g}"),
            ("Deviance", f"{float(self.deviance):.6f} on {int(self.df_resid)} df"),
            ("Null deviance", f"{float(self.null_deviance):.6f} on {int(self.df_null)} df"),
            ("Pearson chi2", f"{float(self.pearson_chi2):.6f}"),
            ("Log-likelihood", f"{float(self.loglik):.6f}"),
            ("AIC", f"{float(self.aic):.4f}"),
            ("BIC", f"{float(self.bic):.4f}"),
            ("Status", f"{self.message} (scaled gradient {float(self.scaled_gradient):.2e})"),
        ]
        lo, hi = (1 - level) / 2, (1 + level) / 2
        width = max(12, *(len(n) for n in self.names)) + 1
        lines = ["Generalized linear model (jaxmle)"] + [f"  {k:<15} {v}" for k, v in head]
        rule = "-" * (width + 70)
        cols = f"{'':<{width}}{'estimate':>12}{'std.err':>12}{'z':>9}{'P>|z|':>9}"
        cols += f"{f'[{lo:.3g}':>14}{f'{hi:.3g}]':>14}"
        lines += [rule, cols, rule]
        for i, name in enumerate(self.names):
            if i == len(info.coef_names):
                lines.append(f"{fam.name} {fam.extra}, maximum likelihood:")
            lines.append(table_row(name, t, i, width))
        lines.append(rule)
        return "\n".join(lines)


# ---------------------------------------------------------------- glm()


def glm(
    formula: str,
    data,
    family="gaussian",
    link=None,
    *,
    offset=None,
    weights=None,
    dispersion: str | None = None,
    method: str = "fisher",
    cov: str = "expected",
    groups=None,
    start=None,
    max_iter: int = 100,
    tol: float = 1e-16,
    chunk_size: int | None = None,
) -> GLMResult:
    """Fit a GLM by maximum likelihood: `glm("y ~ x1 + C(g)", df, family="binomial")`.

    Equals R `glm(formula, family = family(link), data, weights, offset)` (and `MASS::glm.nb` for
    "negative_binomial"); statsmodels `smf.glm(formula, df, family, var_weights=weights, offset=offset)`.

    Args:
      formula: "y ~ terms" in formulaic syntax (`x1 * x2`, `C(g)`, `np.log(x)`); names in the
        caller's scope are visible, as in R.
      data: a pandas DataFrame (or a dict of columns).
      family: "gaussian" | "binomial" | "poisson" | "gamma" | "negative_binomial", a distribution class
        (`families.Poisson`) or `families.glm_family(...)`.
      link: R's link name ("logit", "probit", "cloglog", "log", "identity", "inverse", "sqrt",
        "cauchit") or a `families.Link`; the family's canonical link by default.
      offset: column name or (N,) array added to the linear predictor (R `offset=`).
      weights: column name or (N,) array of R's prior weights: binomial trials (y is then the
        proportion of successes), gaussian and gamma precisions (Var y_i = phi V(mu_i) / w_i),
        poisson and negative binomial frequencies. Rows of weight 0 are left out (counted).
      dispersion: None (default) reproduces R's `summary(glm)`: coefficient covariance
        phi (X'WX)^-1 with phi = Pearson chi2 / (n - p) for gaussian and gamma, phi = 1 for
        binomial and poisson, and glm.nb's theta standard error (observed information at fixed mu)
        for negative binomial. "mle": the pure ML covariance, the inverse expected information of
        (b, extra) estimated jointly. "pearson": phi = Pearson chi2 / (n - p) for every family
        (R's quasibinomial / quasipoisson standard errors).
      method: "fisher" (Fisher scoring = IRLS, default), "newton", "bhhh" or "bfgs".
      cov: "expected" (default; the only kind dispersion scales), or any `jaxmle.fit` kind
        ("hessian", "sandwich", "cluster" with `groups`: column name or array).
      tol: convergence when the scaled gradient U'I^-1 U < tol. Fisher scoring converges only
        linearly for non-canonical links; 1e-16 puts the estimates within ~1e-8 standard errors of
        the maximum (canonical links need one step more than at 1e-12).
      start: starting coefficients (dict by name or array in formula order); default R's: one
        weighted least-squares step from the family's `mustart`.

    Rows with missing values in any variable used (formula, offset, weights, groups) are dropped
    (`res.n_dropped`, printed by `summary()`). Errors before fitting name what is wrong: unknown
    family or link, missing columns, a response outside the family's support, collinear columns.
    """
    fam = glm_family(family, link)
    if dispersion not in DISPERSIONS:
        raise ValueError(f"unknown dispersion {dispersion!r}; choose one of {DISPERSIONS}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    if cov not in KINDS:
        raise ValueError(f"unknown cov {cov!r}; choose one of {KINDS}")
    if isinstance(fam, NegativeBinomialFamily):
        fam = dataclasses.replace(fam, observed_theta=dispersion is None)
    frame = _as_frame(data)
    context = _caller_context(sys._getframe(1))
    d = _design(formula, frame, offset, weights, groups, context)
    fam.check_response(d.y, d.w, d.response_name)
    with jax.enable_x64(True):
        d.X = jnp.asarray(d.X)  # on the device once: the Gram matrix, the start values and the fit
        _check_collinear(np.asarray(_gram(d.X)), d.names)
        init = _start_values(fam, d, start)
    model = Model(_Predict(fam, d.names), _Response(fam))
    frequency = fam.weight_role == "frequency" and d.weights_given
    res = fit(
        model,
        init,
        {"X": d.X, "y": d.y, "w": d.w, "offset": d.offset},
        method=method,
        cov=cov,
        groups=d.groups,
        weights=d.w if frequency else None,
        expected=model.expected,
        max_iter=max_iter,
        tol=tol,
        chunk_size=chunk_size,
    )
    p, n = len(d.names), d.X.shape[0]
    with jax.enable_x64(True):
        coef = res.params["coef"]
        extra = res.params[fam.extra] if fam.extra else jnp.ones(())
        data = res.context.data
        stats = _glm_stats(
            fam, coef, extra, data["X"], data["y"], data["w"], data["offset"], d.intercept
        )
        df_resid = float(n - p)
        pearson_phi = stats["pearson_chi2"] / df_resid if df_resid > 0 else jnp.nan
        cov_matrix, cov_type, phi = _glm_cov(res, fam, dispersion, cov, p, pearson_phi, extra)
        # the fit runs on {"coef": (p,), extra: ()} (one leaf compiles faster than p scalars); the
        # result is keyed by formula names, in formula order (an OrderedDict keeps it under JAX)
        names = d.names + ((fam.extra,) if fam.extra else ())
        flat = res.coef
        se_flat = jnp.sqrt(jnp.diagonal(cov_matrix))
        params = OrderedDict((name, flat[i]) for i, name in enumerate(names))
        se = OrderedDict((name, se_flat[i]) for i, name in enumerate(names))
    info = GLMInfo(
        formula=formula, family=fam, coef_names=d.names, model_spec=d.model_spec,
        response_name=d.response_name, offset=offset, n_missing=d.n_missing,
        n_zero_weight=d.n_zero_weight, index=d.index, dispersion=dispersion,
    )  # fmt: skip
    fields = {f: getattr(res, f) for f in FitResult.__dataclass_fields__}
    fields.update(
        params=params, se=se, names=names, cov=cov_matrix, cov_type=cov_type,
        n_obs=jnp.asarray(float(n)),
    )  # fmt: skip
    return GLMResult(
        **fields,
        deviance=stats["deviance"],
        null_deviance=stats["null_deviance"],
        pearson_chi2=stats["pearson_chi2"],
        dispersion=jnp.asarray(phi),
        df_resid=jnp.asarray(df_resid),
        df_null=jnp.asarray(float(n - int(d.intercept))),
        glm=info,
    )


def _glm_cov(res, fam, dispersion, cov, p, pearson_phi, extra):
    """(cov, cov_type, phi) for the dispersion convention (see `glm`); phi is the reported dispersion:
    phi_MLE with dispersion="mle", else Pearson chi2 / df where R estimates one (or when asked), else 1.
    """
    pearson = fam.has_dispersion or dispersion == "pearson"
    phi = fam.phi_mle(extra) if dispersion == "mle" else pearson_phi if pearson else jnp.ones(())
    if cov != "expected" or dispersion == "mle":
        return res.cov, cov, phi
    if isinstance(fam, NegativeBinomialFamily) and dispersion is None:
        return res.cov, "expected; theta: observed information at fixed mu (MASS::glm.nb)", phi
    if not pearson:
        return res.cov, "expected", phi
    # R: phi (X'WX)^-1; the ML inverse information holds phi_MLE (X'WX)^-1 in the coefficient
    # block, and the coefficient / extra-parameter blocks are orthogonal
    factor = jnp.sqrt(pearson_phi / fam.phi_mle(extra))
    d = jnp.concatenate([jnp.full(p, factor), jnp.ones(res.cov.shape[0] - p)])
    return d[:, None] * res.cov * d[None, :], "expected, Pearson dispersion", phi


@partial(jax.jit, static_argnames=("fam", "intercept"))
def _glm_stats(fam, coef, extra, X, y, w, offset, intercept):
    """Deviance, null deviance and Pearson chi2 (R's definitions) at the fitted coefficients."""
    mu = fam.mean(X @ coef + offset)
    deviance = jnp.sum(w * fam.unit_deviance(y, mu, extra))
    pearson = jnp.sum(w * jnp.square(y - mu) / fam.variance(mu, extra))
    mu0 = _null_mean(fam, extra, y, w, offset) if intercept else fam.mean(offset)
    null = jnp.sum(w * fam.unit_deviance(y, mu0, extra))
    return {"deviance": deviance, "null_deviance": null, "pearson_chi2": pearson}


def _null_mean(fam, extra, y, w, offset):
    """Fitted means of the intercept-only model: the weighted mean of y, or with an offset a 1-D
    Fisher scoring fit of eta_i = a + offset_i (R's glm does the same fit)."""
    ybar = jnp.sum(w * y) / jnp.sum(w)

    def step(_, a):
        eta = a + offset
        mu, dmu = jax.vmap(jax.value_and_grad(fam.mean))(eta)
        v = fam.variance(mu, extra)
        score = jnp.sum(w * (y - mu) * dmu / v)
        info = jnp.sum(w * dmu**2 / v)
        return a + score / info

    a0 = fam.link.linkfun(ybar) - jnp.sum(w * offset) / jnp.sum(w)
    a = jax.lax.fori_loop(0, _NULL_ITERATIONS, step, a0)
    has_offset = jnp.any(offset != 0)
    return jnp.where(has_offset, fam.mean(a + offset), ybar)


@partial(jax.jit, static_argnames=("fam",))
def _predict_columns(fam, coef, cov, X, offset):
    eta = X @ coef + offset
    se_eta = jnp.sqrt(jnp.sum((X @ cov) * X, axis=1))
    mu, dmu = jax.vmap(jax.value_and_grad(fam.mean))(eta)
    return eta, se_eta, mu, jnp.abs(dmu) * se_eta


# ---------------------------------------------------------------- design (host)


@dataclasses.dataclass
class _Design:
    y: np.ndarray
    X: Any  # numpy, then a device array
    names: tuple[str, ...]
    w: np.ndarray
    offset: np.ndarray
    groups: Any
    weights_given: bool
    intercept: bool
    model_spec: Any
    response_name: str
    n_missing: int
    n_zero_weight: int
    index: Any


def _as_frame(data):
    try:
        import pandas as pd
    except ImportError as e:  # pragma: no cover
        raise ImportError(
            "jaxmle.glm needs pandas and formulaic: pip install 'jaxmle[frames]'"
        ) from e
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, dict):
        return pd.DataFrame(data)
    raise TypeError(
        f"data must be a pandas DataFrame (or a dict of columns), got {type(data).__name__}"
    )


def _caller_context(frame) -> dict:
    return {"np": np, **frame.f_globals, **frame.f_locals}


def _column_or_array(value, frame, what):
    """(values (N,) float or object, column name or None) for offset=/weights=/groups=."""
    if value is None:
        return None, None
    if isinstance(value, str):
        if value not in frame.columns:
            raise KeyError(
                f"{what}={value!r} is not a column of data; columns: {list(frame.columns)}"
            )
        return frame[value].to_numpy(), value
    arr = np.asarray(value)
    if arr.shape != (len(frame),):
        raise ValueError(
            f"{what} must be a column name or an array of shape ({len(frame)},), got {arr.shape}"
        )
    return arr, None


def _used_columns(required, frame, context):
    """(columns of data the formula uses, names found nowhere). formulaic reports a quoted dotted
    name such as `Solar.R` as "Solar": such a name stands for the columns it is a prefix of."""
    columns = [str(c) for c in frame.columns]
    used, missing = [], []
    for v in sorted(required):
        if v in columns:
            used.append(v)
        elif any(c.startswith(v + ".") for c in columns):
            used += [c for c in columns if c.startswith(v + ".")]
        elif v not in context:
            missing.append(v)
    return used, missing


def _design(formula, frame, offset, weights, groups, context) -> _Design:
    import formulaic

    if not isinstance(formula, str) or "~" not in formula:
        raise ValueError(f"formula must be a string 'y ~ x1 + x2', got {formula!r}")
    used, missing = _used_columns(formulaic.Formula(formula).required_variables, frame, context)
    if missing:
        raise KeyError(
            f"the formula names {missing}, which are not columns of data ({list(frame.columns)})"
        )

    n_total = len(frame)
    off, _ = _column_or_array(offset, frame, "offset")
    w, _ = _column_or_array(weights, frame, "weights")
    grp, _ = _column_or_array(groups, frame, "groups")
    keep = np.ones(n_total, bool)
    if used:
        keep &= ~frame[used].isna().any(axis=1).to_numpy()
    for arr in (off, w):
        if arr is not None:
            keep &= ~np.isnan(np.asarray(arr, float))
    if grp is not None:
        keep &= ~np.asarray(frame.__class__({"g": grp})["g"].isna())
    n_missing = int(n_total - keep.sum())
    n_zero = 0
    if w is not None:
        w = np.asarray(w, float)
        bad = keep & (~np.isfinite(w) | (w < 0))
        if bad.any():
            i = np.flatnonzero(bad)[0]
            raise ValueError(f"weights must be finite and >= 0; row {frame.index[i]!r} has {w[i]}")
        zero = keep & (w == 0)
        n_zero = int(zero.sum())
        keep &= ~zero
    if not keep.any():
        raise ValueError("no rows left to fit after dropping missing values and zero weights")
    sub = frame.iloc[np.flatnonzero(keep)] if not keep.all() else frame

    try:
        mm = formulaic.model_matrix(formula, sub, context=context, na_action="raise")
    except (ValueError, formulaic.errors.FormulaicError) as e:
        raise ValueError(f"the formula {formula!r} could not be evaluated on data: {e}") from e
    lhs, rhs = mm.lhs, mm.rhs
    if lhs.shape[1] != 1:
        raise ValueError(
            f"the response must be one numeric column; {formula.split('~')[0].strip()!r} gives "
            f"{list(lhs.columns)} (code a categorical response as 0/1)"
        )
    response_name = str(lhs.columns[0])
    y = np.asarray(lhs.iloc[:, 0], dtype=float)
    names = tuple(str(c) for c in rhs.columns)
    if len(set(names)) != len(names):
        raise ValueError(f"the design has duplicate column names: {names}")
    if not names:
        raise ValueError(f"the formula {formula!r} has no terms: use 'y ~ 1' for an intercept only")
    X = np.asarray(rhs, dtype=float)
    bad_col = ~np.isfinite(X).all(axis=0)
    if bad_col.any():
        j = int(np.flatnonzero(bad_col)[0])
        i = int(np.flatnonzero(~np.isfinite(X[:, j]))[0])
        raise ValueError(
            f"design column {names[j]!r} is {X[i, j]} at row {sub.index[i]!r} (a transform "
            "outside its domain?); drop or fix those rows"
        )
    n = len(y)
    w_fit = np.ones(n) if w is None else w[keep]
    off_fit = np.zeros(n) if off is None else np.asarray(off, float)[keep]
    if not np.isfinite(off_fit).all():
        i = int(np.flatnonzero(~np.isfinite(off_fit))[0])
        raise ValueError(f"offset is {off_fit[i]} at row {sub.index[i]!r}; it must be finite")
    return _Design(
        y=y, X=X, names=names, w=w_fit, offset=off_fit,
        groups=None if grp is None else np.asarray(grp)[keep], weights_given=w is not None,
        intercept="Intercept" in names, model_spec=rhs.model_spec, response_name=response_name,
        n_missing=n_missing, n_zero_weight=n_zero, index=sub.index,
    )  # fmt: skip


@jax.jit
def _gram(X):
    return X.T @ X


def _check_collinear(gram, names):
    """Raise naming the columns when one is (numerically) a linear combination of those before it.

    Sequential Gram-Schmidt on the scaled Gram matrix: column j is redundant when the fraction of
    its sum of squares that the kept columns before it leave unexplained is below COLLINEAR_TOL. The
    message gives the combination, as R's `alias(m)` would.
    """
    ss = np.diagonal(gram).copy()
    zero = [names[j] for j in np.flatnonzero(ss == 0)]
    if zero:
        raise ValueError(
            f"design column(s) {zero} are all zero in the rows fitted (an unused category, or a "
            "variable constant at 0); drop them"
        )
    scale = 1.0 / np.sqrt(ss)
    g = gram * np.outer(scale, scale)
    kept: list[int] = []
    problems = []
    for j in range(len(names)):
        if kept:
            coef = np.linalg.solve(g[np.ix_(kept, kept)], g[kept, j])
            resid = g[j, j] - g[j, kept] @ coef
        else:
            coef, resid = np.zeros(0), 1.0
        if resid < COLLINEAR_TOL:
            coef = coef * scale[kept] / scale[j]  # back to the columns' own units
            terms = [
                f"{c:+.6g}*{names[k]}" for c, k in zip(coef, kept, strict=True) if abs(c) > 1e-8
            ]
            problems.append(f"{names[j]} = {' '.join(terms) or '0'}")
        else:
            kept.append(j)
    if problems:
        raise ValueError(
            "the design matrix is rank deficient (perfectly collinear columns): "
            + "; ".join(problems)
            + ". Drop one of the columns named in each relation"
        )


def _start_values(fam, d: _Design, start) -> dict:
    """R's start: one weighted least-squares step from mustart (family$initialize); the extra
    parameter from moments of that fit. Falls back to the intercept-only mean when that step leaves
    the family's support."""
    p = len(d.names)
    if start is not None:
        beta = (
            np.array([float(start[name]) for name in d.names])
            if isinstance(start, dict)
            else np.asarray(start, float)
        )
        if beta.shape != (p,):
            raise ValueError(
                f"start must give {p} coefficients ({list(d.names)}), got shape {beta.shape}"
            )
    else:
        mustart = fam.mustart(d.y, d.w)
        beta, valid = map(np.asarray, _wls_step(fam, d.X, d.y, d.w, d.offset, mustart))
        if not valid and d.intercept:
            beta = np.zeros(p)
            ybar = np.average(mustart, weights=d.w)
            beta[d.names.index("Intercept")] = float(fam.link.linkfun(ybar)) - np.mean(d.offset)
    init = {"coef": jnp.asarray(beta)}
    if fam.extra:  # "coef" sorts before "scale", "shape" and "theta": coefficients come first
        mu = np.asarray(fam.mean(d.X @ jnp.asarray(beta) + d.offset))
        init[fam.extra] = float(fam.extra_start(d.y, mu, d.w, len(d.y) - p))
    return init


@partial(jax.jit, static_argnames="fam")
def _wls_step(fam, X, y, w, offset, mustart):
    """(b, valid): b = (X'WX)^-1 X'Wz, z = eta0 - offset + (y - mu0) / mu'(eta0), W = w mu'^2 / V(mu0)
    at eta0 = g(mustart) (R's glm.fit first iteration); valid: x'b + offset is inside the family's
    support for every row."""
    eta0 = fam.link.linkfun(mustart)
    mu, dmu = jax.vmap(jax.value_and_grad(fam.mean))(eta0)
    z = eta0 - offset + (y - mu) / dmu
    wt = w * dmu**2 / fam.variance(mu, jnp.inf)
    ok = jnp.isfinite(z) & jnp.isfinite(wt)
    wt, z = jnp.where(ok, wt, 0.0), jnp.where(ok, z, 0.0)
    Xw = X * wt[:, None]
    beta = jnp.linalg.solve(Xw.T @ X, Xw.T @ z)
    eta = X @ beta + offset

    def loglik(e, wi, yi):
        return fam.distribution(e, jnp.ones(()), wi, yi).logpdf(fam.response(yi, wi))

    return beta, jnp.all(jnp.isfinite(jax.vmap(loglik)(eta, w, y)))


# ---------------------------------------------------------------- predict on new data (host)


def _new_design(info, frame) -> np.ndarray:
    from formulaic.errors import FormulaicError

    spec = info.model_spec.update(na_action="ignore")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            X = spec.get_model_matrix(frame)
        except Warning as e:
            raise ValueError(f"newdata does not fit the model's design: {e}") from e
        except (FormulaicError, NameError, KeyError) as e:
            raise ValueError(f"newdata lacks what the formula needs: {e}") from e
    return np.asarray(X, dtype=float)


def _new_offset(info, frame, offset) -> np.ndarray:
    if offset is not None:
        arr, _ = _column_or_array(offset, frame, "offset")
        return np.asarray(arr, float)
    if info.offset is None:
        return np.zeros(len(frame))
    if isinstance(info.offset, str):
        if info.offset not in frame.columns:
            raise KeyError(f"the model's offset column {info.offset!r} is not in newdata")
        return frame[info.offset].to_numpy(float)
    raise ValueError("the model was fitted with an offset array: pass offset= for newdata")
