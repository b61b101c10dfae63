"""Covariance of theta_hat: one registry entry per kind (docs/theory.md, "Covariance kinds").

Every kind is computed from `Pieces`, the sums a fit stores over its free parameters, evaluated at
theta_hat in `ravel_pytree(init)` order; A = -H is the observed information, u_i the score of
observation i, w_i its weight, N the number of observations, k the free parameters:

    hessian   A^-1                                 R `vcov(glm)` (canonical link), Stata `ml` default (OIM)
    expected  I^-1, I = sum_i w_i J_i' F(eta_i) J_i  R `vcov(glm)` (any link, dispersion 1), Stata `glm`
    opg       (sum_i w_i u_i u_i')^-1              Stata `vce(opg)`, R `maxLik(method = "BHHH")`
    sandwich  A^-1 B A^-1,  B = sum_i c_i u_i u_i'  HC0: R `sandwich::sandwich(m)`, Stata `vce(robust)`
    = HC0                                          without its N/(N-1) factor
    HC1       N/(N-k) A^-1 B A^-1                  R `vcovHC(m, type = "HC1")`, Stata `regress,
                                                   vce(robust)`; k counts every free parameter
                                                   (a scale too; `jm.glm` counts coefficients only)
    cluster   A^-1 B_c A^-1 (see `_cluster`): one-way or multi-way (Cameron, Gelbach & Miller 2011)
                                                   R `sandwich::vcovCL(m, cluster = ~ g1 + g2,
                                                   type = "HC0")`, Stata `vce(cluster g)` (one-way)
    HAC       A^-1 B_HAC A^-1 (see `_hac`), rows in time order
                                                   R `sandwich::NeweyWest(m, lag = L, prewhite =
                                                   FALSE, adjust = FALSE)`, `kernHAC(...)`

A kind is a `CovKind`: its label, what it needs beyond the always-stored pieces (`NEEDS`), the
keyword options it takes and a check of their values, and its formula. Kinds that need per-
observation terms ("rows": scores in time order, leverages) get them through one mechanism, `Rows`,
filled by a pass over the data: inside the compiled fit when the kind is chosen there, or later from
the result's `problem` handle (`_perobs`). Adding a kind is one entry in a registry (`KINDS` here;
a result class may extend it, as `jm.glm` does with `GLM_KINDS`), read by `fit`, by
`FitResult.covariance`/`with_cov`, by the tests and by `monte_carlo`: `check_kind` is the one place
that says what a kind is missing.

Inverses go through the equilibrated eigen-decomposition, S A S with S = diag(A)^-1/2, so a covariate
measured in thousands next to one in thousandths does not look singular. A matrix whose smallest
equilibrated eigenvalue is below `RCOND` times its largest has no usable inverse: the covariance is
NaN and the status says whether A was not positive definite (H not negative definite: not a maximum)
or merely singular (an unidentified direction).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import types
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp

from . import _hac
from ._solvers import equilibrated_eigh
from ._status import Status

# Equilibrated condition numbers beyond 1/RCOND leave fewer than ~4 correct digits in float64 SEs.
RCOND = 1e-12


class Rows(NamedTuple):
    """Per-observation terms, computed by a pass over the data only for kinds that need them.

    score   r_i = sqrt(c_i) u_i, in time order when the fit has one (N x k): sum_i r_i r_i' is the
            meat (c_i = w_i frequency, w_i^2 sampling weights, 1 without)
    hat     leverage h_i of one observation (N,; 0-length unless a kind needs it)
    select  which parameters enter automatic HAC bandwidths (k,; 0 for an intercept)
    """

    score: jax.Array
    hat: jax.Array
    select: jax.Array


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=[
        "information",
        "opg",
        "meat",
        "score_groups",
        "expected",
        "n_obs",
        "rows",
        "n_clusters",
    ],
    meta_fields=["clusters", "n_coef"],
)
@dataclasses.dataclass(frozen=True)
class Pieces:
    """The sums every covariance kind is computed from (free-parameter blocks, at theta_hat).

    information   A = -H                         k x k
    opg           sum_i w_i u_i u_i'             k x k
    meat          sum_i c_i u_i u_i' (c_i = w_i, or w_i^2 for sampling weights)
    score_groups  s_g = sum_{i in g} w_i u_i     G x k (0 x k without groups); multi-way: the sums
                  of every clustering (each factor, then their intersections) stacked
    expected      I(theta_hat)                   k x k (NaN without expected=)
    n_obs         N (the sum of frequency weights)
    rows          `Rows`, or None (filled only for kinds that need them)
    clusters      static: the number of clusters of each stacked clustering; () = one clustering
    n_coef        static: the k of small-sample factors when it is not every free parameter
                  (`jm.glm`: the coefficients, as R counts them)
    n_clusters    G of the cluster factor when some clusters have no rows in the estimation
                  sample (fixed-effects fits drop rows); None: every row of score_groups counts
    """

    information: jax.Array
    opg: jax.Array
    meat: jax.Array
    score_groups: jax.Array
    expected: jax.Array
    n_obs: jax.Array
    rows: Rows | None = None
    clusters: tuple[int, ...] = ()
    n_coef: int | None = None
    n_clusters: jax.Array | None = None

    @property
    def n_params(self) -> int:
        return self.information.shape[-1]

    @property
    def k_adjust(self) -> int:
        """k in N/(N-k): `n_coef` when set, else every free parameter."""
        return self.n_params if self.n_coef is None else self.n_coef

    def _replace(self, **changes) -> Pieces:
        return dataclasses.replace(self, **changes)


Bread = tuple[jax.Array, jax.Array]  # (A^-1, status of the inverse)


@dataclasses.dataclass(frozen=True)
class CovKind:
    """One covariance kind: `formula(pieces, bread, **options) -> (cov, status)`.

    `needs` names what the kind requires beyond the always-stored pieces (keys of `NEEDS`);
    `options` the keyword options it takes (`res.with_cov(kind, **options)`), whose values `check`
    validates before any work.
    """

    name: str
    label: str
    formula: Callable[..., tuple[jax.Array, jax.Array]]
    needs: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    check: Callable[[Mapping], None] | None = None


NEEDS = {
    "groups": "cluster ids: fit with groups=<(N,) labels> (or {'firm': f, 'year': t})",
    "independent_groups": (
        "independent groups: one grouping factor (with crossed or nested factors the Laplace "
        "approximation couples the groups, so there are no per-group scores)"
    ),
    "expected": (
        "the model's expected information: pass expected=(predict, fisher) to fit, "
        "or fit a families model"
    ),
    "rows": (
        "a pass over the observations, and this result holds no data (it came out of jit, vmap "
        "or a tree operation): give them back with jm.attach(res, logpdf, data, **fit_options)"
    ),
    "time": (
        "the time order of the rows: fit with time=<(N,) times, one per row> (np.arange(N) when "
        "the rows are already in time order), without frequency weights (rows of one period)"
    ),
    "hat": "hat values, which need the model's expected information (expected=)",
}

# rows-needing kinds declare "rows" and what the rows must carry
ROW_NEEDS = ("rows", "time", "hat")


def psd_inverse(a, decomposition=None) -> Bread:
    """(A^-1, status): NaN and a failure status when A is not safely positive definite.

    `decomposition` is `equilibrated_eigh(a)` when the caller has it already (the solver does).
    """
    s, lam, vec = equilibrated_eigh(a) if decomposition is None else decomposition
    top = jnp.max(jnp.abs(lam))
    low = jnp.min(lam)
    ok = (low > RCOND * top) & jnp.all(jnp.isfinite(lam))
    inv = s[:, None] * ((vec / jnp.where(ok, lam, 1.0)) @ vec.T) * s[None, :]
    status = jnp.where(
        ok,
        Status.SUCCESSFUL,
        jnp.where(low < -RCOND * top, Status.NOT_CONCAVE, Status.SINGULAR_INFORMATION),
    )
    return jnp.where(ok, inv, jnp.nan), status


def symmetric(c):
    """The matrix mirrored from its upper triangle: exactly symmetric, whatever XLA's FMA contraction
    does to 0.5 (C + C') element by element."""
    return jnp.triu(c) + jnp.triu(c, 1).T


def sandwich(bread: Bread, meat) -> tuple[jax.Array, jax.Array]:
    """(A^-1 B A^-T, status of A^-1); A^-T = A^-1 for the symmetric A of a likelihood, not for the
    Jacobian of a general estimating equation (`_estimate`)."""
    inv, status = bread
    return inv @ meat @ inv.T, status


def _opg(p: Pieces, bread: Bread):
    cov, status = psd_inverse(p.opg)
    # an outer product cannot be indefinite: a negative eigenvalue here is rounding of a zero one
    return cov, jnp.where(status == Status.NOT_CONCAVE, Status.SINGULAR_INFORMATION, status)


# ---------------------------------------------------------------- HC0..HC3


def _hc0(p: Pieces, bread: Bread):
    return sandwich(bread, p.meat)


def _hc1(p: Pieces, bread: Bread):
    """N/(N-k) A^-1 B A^-1 (`Pieces.k_adjust`)."""
    cov, status = sandwich(bread, p.meat)
    return p.n_obs / (p.n_obs - p.k_adjust) * cov, status


def _hc_leverage(p: Pieces, bread: Bread, power: int):
    """A^-1 [sum_i c_i u_i u_i' / (1 - h_i)^power] A^-1: HC2 (power 1), HC3 (power 2)."""
    r = p.rows.score / (1.0 - p.rows.hat[:, None]) ** (power / 2)
    return sandwich(bread, r.T @ r)


# ---------------------------------------------------------------- cluster, one- and multi-way


def clusterings(n_factors: int) -> tuple[tuple[int, ...], ...]:
    """The factor sets of multi-way clustering in R's order: each factor, then the intersections of
    2, 3, ... factors (`combn`), e.g. (0,), (1,), (0, 1); sign (-1)^(|set| + 1)."""
    return tuple(
        s
        for size in range(1, n_factors + 1)
        for s in itertools.combinations(range(n_factors), size)
    )


def n_factors(n_clusterings: int) -> int:
    """D from the 2^D - 1 clusterings of D-way clustering."""
    return (n_clusterings + 1).bit_length() - 1


def _cluster(p: Pieces, bread: Bread, *, cadjust=True, multi0=False, type="HC0", fix=False):
    """A^-1 B_c A^-1 with B_c = sum_S sign_S a_S sum_{g in S} s_g s_g' over the clusterings S.

    One-way: B_c = G/(G-1) sum_g s_g s_g'. Multi-way (Cameron, Gelbach & Miller 2011): S runs over
    each factor and every intersection of factors, sign_S = (-1)^(|S|+1) (two-way: firm + year -
    firm x year), a_S = G_S/(G_S-1) (`cadjust=True`, R's default and CGM's: each term with its
    own clusters; False: a_S = 1). `multi0=True` replaces the last intersection by the HC0 meat
    with a = 1 (R's option, for panels where it has one row per cell). `type="HC1"` multiplies B_c
    by (N-1)/(N-k) (R `vcovCL(type = "HC1")`). `fix=True` clips negative eigenvalues of the result
    at 0 (CGM's fix, R `vcovCL(fix = TRUE)`); multi-way B_c need not be positive semi-definite.
    With `Pieces.n_coef` (jm.glm) the fix acts on the coefficient block, as R's, and on the extra
    parameter's block separately (their covariances set to 0).
    Equals R `sandwich::vcovCL(m, cluster = ~ f1 + f2, type, cadjust, multi0, fix)`.
    """
    sizes = p.clusters or (p.score_groups.shape[0],)
    sets = clusterings(n_factors(len(sizes)))
    meat, start = jnp.zeros_like(p.meat), 0
    n, k = p.n_obs, p.k_adjust
    for j, (g, members) in enumerate(zip(sizes, sets, strict=True)):
        sign = (-1.0) ** (len(members) + 1)
        if multi0 and len(sizes) > 1 and j == len(sizes) - 1:
            term = p.meat * ((n - k) / (n - 1) if type == "HC1" else 1.0)
        else:
            s = p.score_groups[start : start + g]
            # one-way: count only clusters with rows left (a fixed-effects fit drops rows)
            c = p.n_clusters if p.n_clusters is not None and len(sizes) == 1 else g
            term = s.T @ s * (c / (c - 1) if cadjust else 1.0)
        meat, start = meat + sign * term, start + g
    if type == "HC1":
        meat = (n - 1) / (n - k) * meat
    cov, status = sandwich(bread, meat)
    if fix and p.n_coef is not None and p.n_coef < p.n_params:
        # R's convention (jm.glm): the coefficient block as vcovCL fixes it; the extra parameter
        # keeps its own (clipped) block, its covariances with the coefficients dropped
        c = p.n_coef
        zero = jnp.zeros((c, p.n_params - c), cov.dtype)
        top, bottom = _clip_eigenvalues(cov[:c, :c]), _clip_eigenvalues(cov[c:, c:])
        return jnp.block([[top, zero], [zero.T, bottom]]), status
    return (_clip_eigenvalues(cov) if fix else cov), status


def _clip_eigenvalues(c):
    lam, vec = jnp.linalg.eigh(symmetric(c))
    return (vec * jnp.maximum(lam, 0.0)) @ vec.T


def _check_cluster(options) -> None:
    for name in ("cadjust", "multi0", "fix"):
        if not isinstance(options.get(name, False), bool):
            raise ValueError(f"cluster option {name} must be True or False, got {options[name]!r}")
    if options.get("type", "HC0") not in ("HC0", "HC1"):
        raise ValueError(f"cluster type must be 'HC0' or 'HC1', got {options['type']!r}")


# ---------------------------------------------------------------- HAC


def _hac_formula(p: Pieces, bread: Bread, *, lags=None, kernel="bartlett", bandwidth=None,
                 adjust=False):  # fmt: skip
    """A^-1 B_HAC A^-1 over the rows in time order (`_hac`); `adjust=True` multiplies B_HAC by
    N/(N-k) (R's `adjust`)."""
    r = p.rows
    w = _hac.hac_weights(r.score, r.select, lags=lags, kernel=kernel, bandwidth=bandwidth)
    meat = _hac.toeplitz_meat(r.score, w)
    if adjust:
        meat = p.n_obs / (p.n_obs - p.k_adjust) * meat
    return sandwich(bread, meat)


# ---------------------------------------------------------------- registries


def working_bread(formula):
    """The same formula with the bread I^-1, the inverse expected information: R's `bread.glm`,
    (X'WX)^-1 with the IRLS working weights (equal to A^-1 for canonical links)."""

    def with_expected(p: Pieces, bread: Bread, **options):
        return formula(p, psd_inverse(p.expected), **options)

    return with_expected


_HAC_OPTIONS = ("lags", "kernel", "bandwidth", "adjust")
_CLUSTER_OPTIONS = ("cadjust", "multi0", "type", "fix")

KINDS: Mapping[str, CovKind] = types.MappingProxyType(
    {
        k.name: k
        for k in (
            CovKind("hessian", "observed information (OIM)", lambda p, bread: bread),
            CovKind(
                "expected",
                "expected information (EIM)",
                lambda p, bread: psd_inverse(p.expected),
                needs=("expected",),
            ),
            CovKind("opg", "outer product of gradients (OPG)", _opg),
            CovKind("sandwich", "robust sandwich (HC0)", _hc0),
            CovKind("HC0", "robust sandwich (HC0)", _hc0),
            CovKind("HC1", "robust sandwich, N/(N-k) (HC1)", _hc1),
            CovKind(
                "cluster",
                "cluster-robust sandwich",
                _cluster,
                needs=("groups",),
                options=_CLUSTER_OPTIONS,
                check=_check_cluster,
            ),
            CovKind(
                "HAC",
                "heteroskedasticity and autocorrelation consistent (HAC)",
                _hac_formula,
                needs=("rows", "time"),
                options=_HAC_OPTIONS,
                check=_hac.check_options,
            ),
        )
    }
)

# `jm.glm` results: R's `vcovHC` / `NeweyWest` for glm objects, with the working-weights bread and
# the coefficients as k; HC2/HC3 from the GLM hat values h_i = W_i x_i'(X'WX)^-1 x_i.
GLM_KINDS: Mapping[str, CovKind] = types.MappingProxyType(
    {
        **KINDS,
        **{
            k.name: k
            for k in (
                CovKind(
                    "HC0", "HC0 (working-weights bread)", working_bread(_hc0), needs=("expected",)
                ),
                CovKind(
                    "HC1",
                    "HC1, N/(N-p) (working-weights bread)",
                    working_bread(_hc1),
                    needs=("expected",),
                ),
                CovKind(
                    "HC2",
                    "HC2, u_i / (1-h_i)^1/2 (working-weights bread)",
                    working_bread(functools.partial(_hc_leverage, power=1)),
                    needs=("expected", "rows", "hat"),
                ),
                CovKind(
                    "HC3",
                    "HC3, u_i / (1-h_i) (working-weights bread)",
                    working_bread(functools.partial(_hc_leverage, power=2)),
                    needs=("expected", "rows", "hat"),
                ),
                CovKind(
                    "HAC",
                    "HAC (working-weights bread)",
                    working_bread(_hac_formula),
                    needs=("expected", "rows", "time"),
                    options=_HAC_OPTIONS,
                    check=_hac.check_options,
                ),
            )
        },
    }
)


def check_kind(
    kinds: Mapping[str, CovKind],
    kind: str,
    *,
    has: Mapping[str, bool],
    options: Mapping | None = None,
) -> CovKind:
    """The registry entry of `kind`, or a plain error saying what is unknown or missing.

    `has` says which needs the fit can meet ({"groups": ..., "expected": ..., "rows": ...,
    "time": ..., "hat": ...}); called on the host before any work by everything that takes a `cov=`.
    """
    if not isinstance(kind, str) or kind not in kinds:
        raise ValueError(f"unknown cov {kind!r}; choose one of {tuple(kinds)}")
    entry = kinds[kind]
    for need in entry.needs:
        if not has.get(need, False):
            raise ValueError(f"cov={kind!r} needs {NEEDS.get(need, need)}")
    unknown = sorted(set(options or ()) - set(entry.options))
    if unknown:
        takes = f"it takes {entry.options}" if entry.options else "it takes no options"
        raise TypeError(f"cov={kind!r} got unknown option(s) {unknown}; {takes}")
    if entry.check is not None:
        entry.check(dict(options or {}))
    return entry


def needs_rows(entry: CovKind) -> bool:
    """Whether the kind needs a pass over the observations (`Rows`)."""
    return "rows" in entry.needs


def covariance(
    entry: CovKind, pieces: Pieces, information_eig=None, inverse=psd_inverse, **options
) -> tuple[jax.Array, jax.Array]:
    """(cov, status) of one kind over the free block; `information_eig` is the solver's
    `equilibrated_eigh(information)` when it has one (one decomposition serves every bread).
    `inverse(A) -> (A^-1, status)` makes the bread: `psd_inverse` for an information matrix, a
    general inverse for the non-symmetric A of an estimating equation."""
    if information_eig is not None:
        bread = psd_inverse(pieces.information, information_eig)
    else:
        bread = inverse(pieces.information)
    cov, status = entry.formula(pieces, bread, **options)
    return symmetric(cov), status


def cluster_label(pieces_clusters: tuple, cov_options: Mapping) -> str:
    """Words for the cluster kind's finite-sample convention (summary lines)."""
    ways = "one-way" if len(pieces_clusters) <= 1 else f"{n_factors(len(pieces_clusters))}-way"
    adjust = "G/(G-1) per term" if cov_options.get("cadjust", True) else "no G/(G-1)"
    extra = [adjust]
    if cov_options.get("type", "HC0") == "HC1":
        extra.append("(N-1)/(N-k)")
    if cov_options.get("multi0", False):
        extra.append("multi0")
    if cov_options.get("fix", False):
        extra.append("eigenvalues clipped at 0")
    return f"{ways}, {', '.join(extra)}"
