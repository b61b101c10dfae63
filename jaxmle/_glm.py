"""glm(): generalised linear models from a formula and a pandas DataFrame, as R's glm and MASS::glm.nb.

The formula (formulaic: interactions, `C(g)` categoricals, `np.log(x)` transforms) gives the response y
and the design X; the family gives the distribution of y_i with mean mu_i = g^-1(x_i'b + offset_i)
(`families._glmfamily`), and the fit is `jaxmle.fit` of that model by Fisher scoring with
I(theta) = sum_i J_i' F(eta_i) J_i (docs/theory.md), which for a GLM is IRLS. Everything R's `summary(glm)`
reports comes out under the formula's coefficient names.
"""

from __future__ import annotations

import dataclasses
import sys
from collections import OrderedDict
from functools import partial
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from ._covariance import KINDS, check_kind
from ._design import (
    Design,
    as_frame,
    build_design,
    caller_context,
    check_collinear,
    gram,
    new_design,
    new_offset,
)
from ._fit import fit
from ._results import FitResult, replace, result_class, static, with_handles
from ._solvers import check_method
from ._tables import head_lines, table_lines
from .families._glmfamily import GLMFamily, NegativeBinomialFamily, glm_family
from .families._model import Model

DISPERSIONS = (None, "pearson", "mle")
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


@dataclasses.dataclass(frozen=True)
class GLMSpec:
    """What a GLM is, by value (static in the result: two fits of one formula share a treedef)."""

    formula: str
    family: GLMFamily
    coef_names: tuple[str, ...]
    response_name: str
    dispersion: str | None


@dataclasses.dataclass(frozen=True, eq=False)
class GLMDesign:
    """How the design was built from the frame, for `predict` on new data (a host-side handle)."""

    model_spec: Any
    offset: Any
    index: Any


@result_class
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

    deviance: jax.Array
    null_deviance: jax.Array
    pearson_chi2: jax.Array
    dispersion: jax.Array
    df_resid: jax.Array
    df_null: jax.Array
    n_missing: jax.Array
    n_zero_weight: jax.Array
    glm: GLMSpec = static()

    _handles: ClassVar[tuple[str, ...]] = ("_problem", "_design")
    _design: ClassVar[Any] = None

    @property
    def family(self) -> GLMFamily:
        return self.glm.family

    @property
    def coef_names(self) -> tuple[str, ...]:
        return self.glm.coef_names

    @property
    def n_dropped(self) -> int:
        """Rows left out: missing values in the variables used (R's na.omit), and zero weights."""
        return int(self.n_missing) + int(self.n_zero_weight)

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
        if self._design is None:
            raise ValueError(
                "this GLM result does not hold its design (it passed through jit or "
                "a tree operation); predict from the result jm.glm returned"
            )
        if newdata is None:
            X = np.asarray(self.problem.data["X"])
            off = np.asarray(self.problem.data["offset"])
            index = self._design.index
        else:
            frame = as_frame(newdata)
            X = new_design(self._design, frame)
            off = new_offset(self._design, frame, offset)
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
        info = self.glm
        fam = info.family
        dropped = []
        if int(self.n_missing):
            dropped.append(f"{int(self.n_missing)} with missing values")
        if int(self.n_zero_weight):
            dropped.append(f"{int(self.n_zero_weight)} with zero weight")
        n_text = f"{int(self.n_obs)}" + (f" ({', '.join(dropped)} dropped)" if dropped else "")
        head = [
            ("Formula", info.formula),
            ("Family", f"{fam.name}, link {fam.link.name}"),
            ("Observations", n_text),
            ("Method", f"{self.method}, {int(self.n_iter)} iterations"),
            ("Covariance", self.cov_type),
            ("Dispersion", f"{float(self.dispersion):.6g}"),
            ("Deviance", f"{float(self.deviance):.6f} on {int(self.df_resid)} df"),
            ("Null deviance", f"{float(self.null_deviance):.6f} on {int(self.df_null)} df"),
            ("Pearson chi2", f"{float(self.pearson_chi2):.6f}"),
            ("Log-likelihood", f"{float(self.loglik):.6f}"),
            ("AIC", f"{float(self.aic):.4f}"),
            ("BIC", f"{float(self.bic):.4f}"),
            ("Status", f"{self.message} (scaled gradient {float(self.scaled_gradient):.2e})"),
        ]
        p = len(info.coef_names)
        sections = {p: f"{fam.name} {fam.extra}, maximum likelihood:"} if fam.extra else None
        lines = head_lines("Generalized linear model (jaxmle)", head)
        lines += table_lines(self.names, self.table(level), level, sections=sections)
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
    check_method(method)
    check_kind(KINDS, cov, has={"groups": groups is not None, "expected": True})
    if isinstance(fam, NegativeBinomialFamily):
        fam = dataclasses.replace(fam, observed_theta=dispersion is None)
    frame = as_frame(data)
    context = caller_context(sys._getframe(1))
    d = build_design(formula, frame, offset, weights, groups, context)
    fam.check_response(d.y, d.w, d.response_name)
    with jax.enable_x64(True):
        d.X = jnp.asarray(d.X)  # on the device once: the Gram matrix, the start values and the fit
        check_collinear(np.asarray(gram(d.X)), d.names)
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
        data = res.problem.data
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
    spec = GLMSpec(formula, fam, d.names, d.response_name, dispersion)
    out = GLMResult(
        **{f.name: getattr(res, f.name) for f in dataclasses.fields(FitResult)},
        deviance=stats["deviance"],
        null_deviance=stats["null_deviance"],
        pearson_chi2=stats["pearson_chi2"],
        dispersion=jnp.asarray(phi),
        df_resid=jnp.asarray(df_resid),
        df_null=jnp.asarray(float(n - int(d.intercept))),
        n_missing=jnp.asarray(d.n_missing),
        n_zero_weight=jnp.asarray(d.n_zero_weight),
        glm=spec,
    )
    out = replace(
        out, params=params, se=se, names=names, cov=cov_matrix, cov_type=cov_type,
        n_obs=jnp.asarray(float(n)),
    )  # fmt: skip
    design = GLMDesign(model_spec=d.model_spec, offset=offset, index=d.index)
    return with_handles(out, _problem=res.problem, _design=design)


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


def _start_values(fam, d: Design, start) -> dict:
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
