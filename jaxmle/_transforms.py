"""Bounded parameters: write the model in natural parameters, let the optimiser work unconstrained.

A transform (`_bounds`: `positive()`, `interval(a, b)`) maps an unconstrained u (what Newton sees)
to the natural parameter x (what the log-density and the table see), elementwise and increasing.

`fit_transformed` fits lnL(x(u)) over u and returns the result in natural parameters: theta_hat is
x(u_hat) (ML is invariant to reparametrisation) and every matrix is carried over by the chain rule,
with D = diag(du/dx) at x_hat:

    cov_x = D^-1 cov_u D^-1            (delta method; the same for every covariance kind)
    U_x = D U_u,  -H_x = D (-H_u) D - diag(U_u * d2u/dx2),  OPG, meat, I: D . D,  score_groups: . D

so `res.covariance(kind)`, Wald tests and score tests read natural parameters, exactly as if the
model had been fitted in x. Stata's `ml` does the same with `diparm`; R's `bbmle::mle2` leaves the
reparametrisation to the user.

A transform keeps the estimate strictly inside the range. It is not a boundary estimate: when the
maximum of lnL over the closed range lies on the boundary (a variance that is best at 0), u runs off
to -inf, the fit does not converge (status `max_iter` or `separation`) and the delta-method standard
error is meaningless. Such a case needs a fit with the parameter held at the boundary
(`fixed={"s": 0.0}` in a parametrisation where 0 is allowed) and tests whose null distribution is a
chi-square mixture (Self & Liang 1987), not the chi-square of an interior point.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from ._bounds import Bounds, Transforms, _derivatives, flat_forward
from ._fit import fit
from ._results import FitResult, replace, with_handles
from ._scope import float64_scope, over_batch

PyTree = Any


def to_natural(res: FitResult, transforms: Transforms | Mapping) -> FitResult:
    """A fit over u reported in natural parameters x = x(u) (see the module docstring)."""
    transforms = Transforms(transforms)
    return over_batch(lambda one: _to_natural(one, transforms), res)


def _to_natural(res: FitResult, transforms: Transforms) -> FitResult:
    u, unravel = ravel_pytree(res.params)
    bounds = transforms.flat_bounds(res.params)
    x = flat_forward(bounds, u)
    d1, d2 = _derivatives(bounds, x)
    jac = 1.0 / d1  # dx/du

    def congruent(m):
        return d1[:, None] * m * d1[None, :]

    cov = jac[:, None] * res.cov * jac[None, :]
    information = congruent(res.information) - jnp.diag(res.score * d2)
    out = replace(
        res,
        params=unravel(x),
        se=unravel(jnp.sqrt(jnp.diagonal(cov))),
        cov=cov,
        score=d1 * res.score,
        information=0.5 * (information + information.T),
        expected_information=congruent(res.expected_information),
        opg=congruent(res.opg),
        meat=congruent(res.meat),
        score_groups=res.score_groups * d1,
    )
    if res.has_problem:
        out = with_handles(out, _problem=res.problem.replace(transforms=transforms))
    return out


def fit_transformed(
    logpdf,
    init: PyTree,
    data: PyTree,
    transforms: Mapping[str, Bounds] | Transforms,
    *,
    fixed: Mapping | None = None,
    **options,
) -> FitResult:
    """`jm.fit` of a log-density written in natural parameters, some of them bounded.

    `transforms = {"sigma": jm.positive(), "p": jm.interval(0, 1)}` names top-level keys of `init`;
    `init` and `fixed` are natural values strictly inside the ranges. The optimiser works on the
    unconstrained u; the result reports x_hat = x(u_hat) with delta-method standard errors
    (cov_x = D^-1 cov_u D^-1, D = du/dx), for every covariance kind. `jm.profile_ci` profiles on
    the u scale and maps the bounds back (profile intervals are invariant under such maps). Other
    options as in `jm.fit`. Not a boundary estimate: see the module docstring.

    Like Stata `ml` with `diparm(lnsigma, exp)`; in R, fit in log(sigma) and use `car::deltaMethod`.
    """
    transforms = Transforms(transforms)
    transforms.check(init, fixed)
    with float64_scope(init, data, fixed):
        return _fit_transformed(logpdf, init, data, transforms, fixed, options)


def _fit_transformed(logpdf, init, data, transforms, fixed, options):
    if fixed:
        fixed = {
            k: (transforms.spec[k].inverse(jnp.asarray(v, float)) if k in transforms.spec else v)
            for k, v in fixed.items()
        }
    init_u = transforms.to_unconstrained(init)
    res = fit(transforms.wrap(logpdf), init_u, data, fixed=fixed, **options)
    return to_natural(res, transforms)


def profile_scale(res: FitResult, j: int) -> Bounds:
    """The transform of flat parameter j (the real line if none): profiles run on its u scale."""
    transforms = res.problem.transforms
    if transforms is None:
        return Bounds()
    return transforms.flat_bounds(res.params)[j]
