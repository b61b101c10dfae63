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
function theorem at the modes), so they agree to the few digits finite differences carry. For a
non-canonical link (probit; glmer.nb's log link) lme4's PIRLS weights are Fisher's, so its "Laplace"
likelihood differs from the Laplace approximation computed here and by glmmTMB (equal to ~1e-12).
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

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
    row_logpdf = _RowLogpdf(fam, layout, names, keyed)
    res = fit_mixed(
        row_logpdf,
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
        inner = (row_logpdf, init, rows, [codes[n] for n in names], d.w if frequency else None)
        return _result(formula, fam, n_quad, md, layout, names, res, inner)


def _start_beta(fam, d) -> np.ndarray:
    """Least squares of g(mustart) - offset on X, weighted by the prior weights: a start inside
    the family's support (lme4 starts from a GLM fit; Newton needs only a reasonable point)."""
    mu = np.asarray(fam.mustart(d.y, d.w), float)
    with jax.enable_x64(True):
        z = np.asarray(fam.link.linkfun(jnp.asarray(mu))) - d.offset
    sw = np.sqrt(d.w)[:, None]
    return np.linalg.lstsq(np.asarray(d.X) * sw, z * sw[:, 0], rcond=None)[0]


def _result(formula, fam, n_quad, md, layout, names, res, inner) -> MerResult:
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
    row_logpdf, init, rows, codes, weights = inner
    theta = jax.flatten_util.ravel_pytree(init)[1](coef)
    modes, cond = _ranef(res, layout, names, theta, rows, codes, weights, row_logpdf)
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
        start_rows=res.start_rows,
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


def _ranef(res, layout, names, theta, rows, codes, weights, row_logpdf):
    """Conditional modes b = Lambda u and covariances Lambda Var(u | y) Lambda' per level, from
    `fit_mixed`'s public result: its modes of u and their conditional SDs. Where every Lambda_f is
    diagonal those SDs are all that is needed; a correlated term needs Var(u | y)'s off-diagonal
    entries, from the inverse of -H_uu (`_u_covariances`)."""
    single = len(names) == 1
    keys = res.mixed.factors if single else names
    u = [jnp.asarray(res.re_mode[k]) for k in keys]
    lams = [factor_lambda(layout, theta["lam"], f) for f in range(len(names))]
    diagonal = all(bool(jnp.all(lm == jnp.diag(jnp.diagonal(lm)))) for lm in lams)
    if diagonal:
        covs_u = [jax.vmap(jnp.diag)(jnp.square(jnp.asarray(res.re_sd[k]))) for k in keys]
    else:
        covs_u = _u_covariances(theta, u, layout, rows, codes, weights, row_logpdf)
    modes = tuple(uf @ lm.T for uf, lm in zip(u, lams, strict=True))
    covs = tuple(
        jnp.einsum("ij,gjk,lk->gil", lm, cu, lm) for lm, cu in zip(lams, covs_u, strict=True)
    )
    return modes, covs


def _u_covariances(theta, u, layout, rows, codes, weights, row_logpdf):
    """Diagonal blocks of (-H_uu)^-1 per factor and level, -H_uu = I - sum_i w_i d2 l_i / du du'
    at the modes: blockwise over the levels for one factor, from the dense joint matrix when
    crossed factors couple the levels (sized by the total number of random effects)."""
    names = row_logpdf.names
    keyed = row_logpdf.keyed
    qs = [layout.Q(f) for f in range(len(names))]
    offs = np.cumsum([0, *qs])
    w = jnp.ones(len(codes[0])) if weights is None else jnp.asarray(weights)

    def row_hessian(obs, u_row):
        def lnf(flat):
            parts = {n: flat[offs[f] : offs[f + 1]] for f, n in enumerate(names)}
            return row_logpdf(theta, parts if keyed else parts[names[0]], obs)

        return jax.hessian(lnf)(u_row)

    u_rows = jnp.concatenate([u[f][codes[f]] for f in range(len(names))], axis=1)
    H = jax.vmap(row_hessian)(rows, u_rows) * w[:, None, None]
    if len(names) == 1:
        G = u[0].shape[0]
        A = jnp.eye(qs[0]) - jax.ops.segment_sum(H, codes[0], G)
        return [jnp.linalg.inv(A)]
    sizes = [u[f].shape[0] * qs[f] for f in range(len(names))]
    starts = np.cumsum([0, *sizes])
    idx = jnp.concatenate(
        [starts[f] + codes[f][:, None] * qs[f] + jnp.arange(qs[f])[None, :] for f in
         range(len(names))], axis=1)  # fmt: skip
    A = jnp.eye(starts[-1]) - jnp.zeros((starts[-1], starts[-1])).at[
        idx[:, :, None], idx[:, None, :]
    ].add(H)
    A_inv = jnp.linalg.inv(A)
    out = []
    for f in range(len(names)):
        ix = starts[f] + np.arange(u[f].shape[0])[:, None] * qs[f] + np.arange(qs[f])[None, :]
        out.append(A_inv[ix[:, :, None], ix[:, None, :]])
    return out
