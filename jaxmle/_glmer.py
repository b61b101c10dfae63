"""glmer() and glmer_nb(): generalized linear mixed models from an lme4 formula, on `fit_mixed`.

    jm.glmer("cbind(incidence, size - incidence) ~ C(period) + (1 | herd)", cbpp, family="binomial")
    jm.glmer_nb("TICKS ~ YEAR + (1 | BROOD)", grouseticks)

The model is lme4's: eta_i = x_i'beta + offset_i + sum_t z_ti' Lambda_t u_t,g(i), with spherical
effects u ~ N(0, I) and Lambda_t lower triangular (theta its column-major lower triangle), y_i from
the `jm.glm` family with mean g^-1(eta_i). `fit_mixed` integrates u out (Laplace, or adaptive
Gauss-Hermite with `n_quad` > 1 for one factor) and maximises over (beta, theta) with exact
derivatives; the diagonal of each Lambda_t has the lower bound 0, so a zero variance is reached and
reported (status BOUNDARY). Results are `MerResult`s with the standard deviations and correlations
of b_t = Lambda_t u_t (delta-method covariance from theta's).

Standard errors differ from lme4's on purpose: lme4's `vcov(glmer)` inverts a finite-difference
Hessian of the Laplace deviance over (theta, beta) (its `derivs`); ours is the exact Hessian (implicit
function theorem at the modes), so they agree to the few digits finite differences carry.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict

import jax
import jax.numpy as jnp
import numpy as np

from ._laplace import Data
from ._laplace import factorize as laplace_factorize
from ._laplace import terms as laplace_terms
from ._lmer import prepare
from ._lmm import factor_lambda, tril_index
from ._merresult import MerLevels, MerResult, MerSpec
from ._mixed import fit_mixed
from ._results import with_handles
from ._varcomp import all_theta_to_phi, phi_names
from .families._glmfamily import GaussianFamily, GLMFamily, glm_family

_SUPPORTED = ("binomial", "poisson", "negative_binomial")


@dataclasses.dataclass(frozen=True)
class _RowLogpdf:
    """ln f(y_i | u): the family's log-density at eta_i = x_i'beta + offset_i + z_i' Lambda u
    (hashable by value, so refits of one model reuse the compiled program)."""

    family: GLMFamily
    layout: object  # _lmm.LMMLayout (levels unused)
    names: tuple[str, ...]  # factor names, in layout order
    keyed: bool

    def __call__(self, theta, u, obs):
        eta = obs["X"] @ theta["beta"] + obs["offset"]
        for f, name in enumerate(self.names):
            lam = factor_lambda(self.layout, theta["lam"], f)
            eff = u[name] if self.keyed else u
            eta = eta + obs["Z"][f] @ (lam @ eff)
        extra = theta[self.family.extra] if self.family.extra else None
        dist = self.family.distribution(eta, extra, obs["w"], obs["y"])
        return dist.logpdf(self.family.response(obs["y"], obs["w"]))


@dataclasses.dataclass(frozen=True)
class _StandardNormal:
    """ln N(u; 0, I): lme4's spherical random effects."""

    def __call__(self, theta, u):
        return -0.5 * jnp.sum(jnp.square(u)) - 0.5 * u.shape[0] * math.log(2.0 * math.pi)


def glmer(
    formula: str,
    data,
    family="binomial",
    link=None,
    *,
    weights=None,
    offset=None,
    n_quad: int = 1,
    max_iter: int = 100,
    tol: float | None = None,
) -> MerResult:
    """Fit a GLMM by maximum likelihood: R `lme4::glmer(formula, data, family, weights, offset,
    nAGQ = n_quad)`.

    Args:
      formula: lme4's grammar (see `jm.lmer`); `cbind(successes, failures) ~ ...` for binomial counts.
      family, link: as `jm.glm`: "binomial" (logit, probit, cloglog, cauchit, log), "poisson" (log,
        identity, sqrt), "negative_binomial" (as `glmer_nb`). A Gaussian model with the identity
        link is `jm.lmer`.
      weights: prior weights as in `jm.glm` (binomial: trials, y the proportion; poisson and
        negative binomial: frequency weights).
      offset: column name or (N,) array added to the linear predictor.
      n_quad: 1 (Laplace, lme4's default nAGQ = 1) or the number of adaptive Gauss-Hermite points
        per random effect (one grouping factor).
    """
    fam = glm_family(family, link)
    if isinstance(fam, GaussianFamily) and fam.link.name == "identity":
        raise ValueError("a Gaussian model with the identity link is a linear mixed model: jm.lmer")
    if fam.name not in _SUPPORTED:
        raise ValueError(f"glmer fits the families {_SUPPORTED}, not {fam.name!r}")
    return _fit(formula, data, fam, weights, offset, n_quad, max_iter, tol)


def glmer_nb(
    formula: str,
    data,
    link="log",
    *,
    weights=None,
    offset=None,
    n_quad: int = 1,
    max_iter: int = 100,
    tol: float | None = None,
) -> MerResult:
    """A negative binomial (NB2, Var y = mu + mu^2 / theta) GLMM: R `lme4::glmer.nb`.

    theta is estimated jointly with the other parameters by maximising the same Laplace likelihood
    (glmer.nb alternates between theta and the rest to the same optimum); it is reported as the
    parameter "theta", after the variance parameters.
    """
    return _fit(formula, data, glm_family("negative_binomial", link), weights, offset, n_quad,
                max_iter, tol)  # fmt: skip


def _fit(formula, data, fam, weights, offset, n_quad, max_iter, tol) -> MerResult:
    _, md, layout = prepare(formula, data, weights, offset, allow_n=True, frame_depth=3)
    d, rt = md.fixed, md.random
    fam.check_response(d.y, d.w, d.response_name)
    factors = list(rt.factors.values())
    layout = dataclasses.replace(layout, n_levels=tuple(f.n_levels for f in factors))
    names = tuple(f.name for f in factors)
    keyed = len(factors) > 1
    Zf = [
        np.concatenate([rt.Z[t] for t in layout.terms_of(f)], axis=1) for f in range(len(factors))
    ]
    frequency = fam.weight_role == "frequency" and d.weights_given
    rows = {
        "X": np.asarray(d.X),
        "y": d.y,
        "w": np.ones_like(d.w) if frequency else d.w,
        "offset": d.offset,
        "Z": tuple(Zf),
    }
    init = {"beta": _start_beta(fam, d), "lam": layout.theta_start()}
    diag = np.zeros(layout.n_theta, bool)
    for sl, q in zip(layout.theta_slices, layout.q, strict=True):
        rows_, cols_ = tril_index(q)
        diag[sl] = rows_ == cols_
    lower = {"lam": np.where(diag, 0.0, -np.inf)}
    if fam.extra:
        init[fam.extra] = 1.0
        lower[fam.extra] = 0.0
    re_init = {n: np.zeros(layout.Q(f)) for f, n in enumerate(names)}
    codes = {n: f.codes for n, f in zip(names, factors, strict=True)}
    sizes = {n: f.n_levels for n, f in zip(names, factors, strict=True)}
    res = fit_mixed(
        _RowLogpdf(fam, layout, names, keyed),
        {n: _StandardNormal() for n in names} if keyed else _StandardNormal(),
        init,
        re_init if keyed else re_init[names[0]],
        rows,
        codes if keyed else codes[names[0]],
        n_groups=sizes if keyed else sizes[names[0]],
        n_quad=n_quad,
        lower=lower,
        weights=d.w if frequency else None,
        max_iter=max_iter,
        tol=tol,
    )
    with jax.enable_x64(True):
        return _result(formula, fam, n_quad, md, layout, names, res)


def _start_beta(fam, d) -> np.ndarray:
    """Least squares of g(mustart) - offset on X, weighted by the prior weights: a start inside
    the family's support (lme4 starts from a GLM fit; Newton needs only a reasonable point)."""
    mu = np.asarray(fam.mustart(d.y, d.w), float)
    with jax.enable_x64(True):
        z = np.asarray(fam.link.linkfun(jnp.asarray(mu))) - d.offset
    sw = np.sqrt(d.w)[:, None]
    return np.linalg.lstsq(np.asarray(d.X) * sw, z * sw[:, 0], rcond=None)[0]


def _result(formula, fam, n_quad, md, layout, names, res) -> MerResult:
    d, rt = md.fixed, md.random
    p, m = len(d.names), layout.n_theta
    coef = jnp.asarray(res.coef)  # ravel order: beta, lam[, extra]
    qs = layout.q

    def to_phi(c):
        phi = all_theta_to_phi(qs, layout.theta_slices, c[p : p + m], 1.0)
        return jnp.concatenate([c[:p], phi, c[p + m :]])

    J = jax.jacfwd(to_phi)(coef)
    out = to_phi(coef)
    cov = J @ res.cov @ J.T
    # a term with a variance parameter on its bound: no Wald SE for its components
    at_bound = np.asarray(res.at_bound)
    bad = np.zeros(len(out), bool)
    start = p
    for sl, q in zip(layout.theta_slices, qs, strict=True):
        k = q * (q + 1) // 2
        if at_bound[p + sl.start : p + sl.stop].any():
            bad[start : start + k] = True
        start += k
    cov = jnp.where(bad[:, None] | bad[None, :], jnp.nan, cov)
    J_inv = jnp.linalg.inv(J)  # d theta / d phi: the information in phi is J^-T I J^-1
    info = J_inv.T @ res.information @ J_inv
    extra = (fam.extra,) if fam.extra else ()
    all_names = d.names + phi_names(rt.specs) + extra
    se = jnp.sqrt(jnp.diagonal(cov))
    k = len(all_names)
    modes, cond = _ranef(res, layout, names, coef[p : p + m])
    how = "Laplace" if n_quad == 1 else f"adaptive Gauss-Hermite, {n_quad} points"
    spec = MerSpec(
        formula=formula,
        kind="glmer",
        family=f"{fam.name}, link {fam.link.name}",
        estimation=how,
        coef_names=d.names,
        terms=rt.specs,
        factors=tuple((f.name, f.n_levels) for f in rt.factors.values()),
        extra=extra,
    )
    out_res = MerResult(
        params=OrderedDict((n, out[i]) for i, n in enumerate(all_names)),
        se=OrderedDict((n, se[i]) for i, n in enumerate(all_names)),
        cov=cov,
        loglik=res.loglik,
        score=J_inv.T @ res.score,
        information=info,
        expected_information=jnp.full((k, k), jnp.nan),
        opg=jnp.full((k, k), jnp.nan),
        meat=jnp.full((k, k), jnp.nan),
        score_groups=jnp.zeros((0, k)),
        n_obs=jnp.asarray(float(len(d.y))),
        n_iter=res.n_iter,
        n_damped=res.n_damped,
        scaled_gradient=res.scaled_gradient,
        status=res.status,
        ranef_modes=modes,
        ranef_cov=cond,
        n_missing=jnp.asarray(d.n_missing),
        n_zero_weight=jnp.asarray(d.n_zero_weight),
        names=all_names,
        free=(True,) * k,
        method=f"newton on the {how} likelihood (fit_mixed)",
        cov_type="hessian",
        spec=spec,
    )
    levels = MerLevels({f.name: f.levels for f in rt.factors.values()})
    return with_handles(out_res, _levels=levels)


def _ranef(res, layout, names, lam):
    """Conditional modes b = Lambda u and covariances Lambda (-H_uu)^-1 Lambda' per level, from
    the Laplace factorisation at the estimate (the diagonal blocks of the inverse)."""
    problem = res.problem
    model = problem.model
    inner = [f.name for f in model.factors]  # fit_mixed's order (sorted; "group" for one factor)
    order = [0] if model.single else [inner.index(n) for n in names]
    u = tuple(jnp.asarray(res.re_mode[n]) for n in inner)
    blocks = _inverse_blocks(model, jnp.asarray(res.coef), u, problem)
    modes, covs = [], []
    for f in range(len(names)):
        lam_f = factor_lambda(layout, lam, f)
        k = order[f]
        modes.append(u[k] @ lam_f.T)
        covs.append(jnp.einsum("ij,gjk,lk->gil", lam_f, blocks[k], lam_f))
    return tuple(modes), tuple(covs)


def _inverse_blocks(model, theta, u, problem):
    data = Data(problem.data, tuple(problem.codes), problem.weights)
    return _blocks_compiled(model, theta, u, data)


def _blocks_impl(model, theta, u, data):
    fac = laplace_factorize(model, laplace_terms(model, theta, u, data))
    eye = jnp.broadcast_to(jnp.eye(fac.chol_a.shape[-1]), fac.chol_a.shape)
    a_inv = jax.scipy.linalg.cho_solve((fac.chol_a, True), eye)
    if model.single:
        return (a_inv,)
    s_inv = jax.scipy.linalg.cho_solve((fac.chol_s, True), jnp.eye(fac.chol_s.shape[0]))
    out = [None] * len(model.factors)
    out[model.primary] = a_inv + jnp.einsum("gqd,de,gre->gqr", fac.x, s_inv, fac.x)
    offs = model.offsets()
    for f in model.secondary:
        q, n = model.factors[f].q, model.factors[f].n_groups
        ix = offs[f] + np.arange(n)[:, None] * q + np.arange(q)[None, :]
        out[f] = s_inv[ix[:, :, None], ix[:, None, :]]
    return tuple(out)


_blocks_compiled = jax.jit(_blocks_impl, static_argnums=0)
