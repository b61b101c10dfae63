"""lmer(): a Gaussian linear mixed model from an lme4 formula, as R's `lme4::lmer`.

    jm.lmer("Reaction ~ Days + (Days | Subject)", df)               # REML, lmer's default
    jm.lmer("Reaction ~ Days + (Days || Subject)", df, reml=False)  # ML, uncorrelated effects

The fit minimises lme4's profiled deviance over theta (`_lmm`, `_lmmfit`); the result is a
`MerResult` with lme4's numbers under jaxmle's names.
"""

from __future__ import annotations

import sys
from collections import OrderedDict

import jax
import jax.numpy as jnp
import numpy as np

from ._design import as_frame, caller_context, check_collinear, gram
from ._lme4formula import parse
from ._lmm import LMMLayout, padded_levels
from ._lmmfit import fit_lmm, lmm_cross_products
from ._merdesign import MixedDesign, mixed_design
from ._merresult import MerLevels, MerResult, MerSpec
from ._results import with_handles
from ._varcomp import phi_names


def layout_of(md: MixedDesign) -> LMMLayout:
    """The compiled shape: term sizes, their factors, the factors' padded level counts, p."""
    factors = list(md.random.factors)
    specs = md.random.specs
    return LMMLayout(
        q=tuple(s.q for s in specs),
        term_factor=tuple(factors.index(s.factor) for s in specs),
        n_levels=tuple(
            padded_levels(f.n_levels, k == 0) for k, f in enumerate(md.random.factors.values())
        ),
        p=len(md.fixed.names),
    )


def prepare(formula, data, weights, offset, *, allow_n, frame_depth=2):
    """(parsed formula, design, layout) with every host-side check done."""
    mf = parse(formula)
    frame = as_frame(data)
    context = caller_context(sys._getframe(frame_depth))
    md = mixed_design(mf, frame, context, weights, offset, allow_n=allow_n)
    with jax.enable_x64(True):
        md.fixed.X = jnp.asarray(md.fixed.X)
        check_collinear(np.asarray(gram(md.fixed.X)), md.fixed.names)
    return mf, md, layout_of(md)


def lmer(
    formula: str,
    data,
    *,
    reml: bool = True,
    weights=None,
    offset=None,
    max_iter: int = 100,
    tol: float = 1e-12,
) -> MerResult:
    """Fit a linear mixed model by REML (default) or ML: R `lme4::lmer(formula, data, REML = reml,
    weights = weights, offset = offset)`.

    Args:
      formula: lme4's grammar (`_lme4formula`): "y ~ x + (x | g)" correlated, "(x || g)"
        uncorrelated, "(1 | a/b)" nested, "(1 | a) + (1 | b)" crossed; the fixed part in formulaic
        syntax as in `jm.glm` (`C(f)`, `x * z`, `np.log(x)`).
      data: a pandas DataFrame (or a dict of columns).
      reml: True for REML (lmer's default), False for maximum likelihood (needed for LR tests
        between models with different fixed effects).
      weights: column name or (N,) array of precision weights, Var e_i = sigma^2 / w_i (R's).
      offset: column name or (N,) array added to the linear predictor.
      tol: convergence when the scaled gradient of lnL in theta, U' (-H)^-1 U, is below it.

    Returns a `MerResult`: `params`/`se` of the fixed effects by formula name and of the variance
    parameters ("sd(Days|Subject)", "cor(Intercept,Days|Subject)", "sigma"); `loglik` = R
    `logLik(m)` (the REML criterion / -2 for REML fits); `varcorr()`, `ranef()`, `n_groups`,
    `summary()`. Rows with missing values in any variable used are dropped (counted).
    """
    if not isinstance(reml, bool):
        raise TypeError(f"reml must be True or False, got {reml!r}")
    mf, md, layout = prepare(formula, data, weights, offset, allow_n=False)
    if mf.cbind is not None:
        raise ValueError(
            "a cbind() response is binomial: fit it with jm.glmer(..., family='binomial')"
        )
    d, rt = md.fixed, md.random
    if len(d.y) <= layout.p:
        raise ValueError(f"{len(d.y)} observations for {layout.p} fixed effects: too few")
    with jax.enable_x64(True):
        stats, n, ldW = lmm_cross_products(
            d.X,
            jnp.asarray(d.y),
            jnp.asarray(d.w),
            jnp.asarray(d.offset),
            [jnp.asarray(z) for z in rt.Z],
            [jnp.asarray(f.codes) for f in rt.factors.values()],
            layout=layout,
        )
        theta0 = jnp.asarray(layout.theta_start())
        out = fit_lmm(
            stats,
            n,
            ldW,
            theta0,
            jnp.asarray(float(reml)),
            layout=layout,
            max_iter=max_iter,
            tol=tol,
        )
        return _result(formula, reml, md, out)


def _result(formula, reml, md: MixedDesign, out) -> MerResult:
    d, rt = md.fixed, md.random
    p = len(d.names)
    names = d.names + phi_names(rt.specs) + ("sigma",)
    k = len(names)
    coef = jnp.concatenate([out["beta"], out["phi"]])
    cov = jax.scipy.linalg.block_diag(out["cov_beta"], out["cov_phi"])
    info_beta = jnp.linalg.inv(out["cov_beta"])
    information = jax.scipy.linalg.block_diag(info_beta, out["info_phi"])
    se = jnp.sqrt(jnp.diagonal(cov))
    nan = jnp.full((k, k), jnp.nan)
    levels = list(rt.factors.values())
    spec = MerSpec(
        formula=formula,
        kind="lmer",
        family="gaussian, link identity",
        estimation="REML" if reml else "ML",
        coef_names=d.names,
        terms=rt.specs,
        factors=tuple((f.name, f.n_levels) for f in rt.factors.values()),
        extra=("sigma",),
    )
    res = MerResult(
        params=OrderedDict((n, coef[i]) for i, n in enumerate(names)),
        se=OrderedDict((n, se[i]) for i, n in enumerate(names)),
        cov=cov,
        loglik=out["loglik"],
        score=jnp.concatenate([jnp.zeros(p), out["score_phi"]]),
        information=information,
        expected_information=nan,
        opg=nan,
        meat=nan,
        score_groups=jnp.zeros((0, k)),
        n_obs=jnp.asarray(float(len(d.y))),
        n_iter=out["n_iter"],
        n_damped=out["n_damped"],
        start_rows=jnp.asarray(0, jnp.int32),
        scaled_gradient=out["scaled_gradient"],
        status=out["status"],
        ranef_modes=tuple(b[: f.n_levels] for b, f in zip(out["ranef"], levels, strict=True)),
        ranef_cov=tuple(v[: f.n_levels] for v, f in zip(out["ranef_cov"], levels, strict=True)),
        n_missing=jnp.asarray(d.n_missing),
        n_zero_weight=jnp.asarray(d.n_zero_weight),
        names=names,
        free=(True,) * k,
        method="newton on the profiled deviance",
        cov_type="hessian",
        spec=spec,
    )
    return with_handles(res, _levels=MerLevels({f.name: f.levels for f in levels}))
