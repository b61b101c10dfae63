"""fit_mixed(): maximum likelihood with random effects integrated out (Laplace or adaptive quadrature).

The user writes two log-densities: `logpdf(theta, b, obs)` of ONE row given its group's random
effects b, and `re_logpdf(theta, b)` of one group's effects. The marginal log-likelihood (`_laplace`)
is maximised over theta by the solver of every jaxmle fit (`_solvers.maximize`) with the exact
gradient and Hessian (implicit function theorem at the conditional modes), the modes of the previous
accepted point carried as the warm start of the next batched inner Newton.

Boundaries: write the variance parameters on a scale where zero is reachable, e.g. b = sigma u with
u ~ N(0, 1) (or lme4's b = Lambda u, Lambda the relative Cholesky factor) and `lower={"sigma": 0}`.
The solver then runs projected Newton on the box (`_solvers`), reaches sigma = 0 exactly when that is
the maximum, and the result says so (status BOUNDARY, `at_bound`); the other estimates and their
standard errors are then those of the model with sigma = 0, which is what the boundary fit is.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._covariance import KINDS, CovKind, Pieces, check_kind, covariance, symmetric
from ._fit import ParamSpec, Problem, _full_precision, default_tol, finish
from ._groups import factorize as factorize_labels
from ._inputs import prepare_data, prepare_init, prepare_weights
from ._laplace import (
    Data,
    Factor,
    Model,
    Modes,
    conditional_sd,
    factorize,
    inner_newton,
    marginal_units,
)
from ._laplace import terms as laplace_terms
from ._objective import Terms
from ._results import FitResult, parameter_names, result_class, static
from ._scope import float64_scope, host64, traced
from ._solvers import METHODS, check_method, maximize
from ._status import Status
from ._tables import head_lines, table_lines

PyTree = Any
SINGLE = "group"  # the factor's name when `groups` is one array
# Adaptive quadrature evaluates every row at n_quad^q points: beyond this many the cost is the user's
# surprise, not a better integral (lme4 allows nAGQ > 1 only for one scalar random effect).
_MAX_NODES = 4096
_INNER_MAX_ITER = 50


def _independent(kind: CovKind) -> CovKind:
    return dataclasses.replace(kind, needs=("independent_groups",))


MIXED_KINDS: Mapping[str, CovKind] = {
    "hessian": KINDS["hessian"],
    "opg": _independent(KINDS["opg"]),
    "sandwich": _independent(KINDS["sandwich"]),
    "cluster": _independent(KINDS["cluster"]),
}


@dataclasses.dataclass(frozen=True)
class MixedSpec:
    """What the random effects are, by value (static in the result)."""

    factors: tuple[str, ...]
    q: tuple[int, ...]
    n_groups: tuple[int, ...]
    re_names: tuple[tuple[str, ...], ...]
    n_quad: int
    re_specs: tuple = ()  # per factor, the ParamSpec that rebuilds one group's effects

    def unravel(self, f: int, flat):
        """(G, q) flat effects of factor f as re_init's pytree with a leading (G,) axis (numpy,
        so float64 stays float64 with JAX's 64-bit flag off)."""
        flat, spec = np.asarray(flat), self.re_specs[f]
        out, start = [], 0
        for shape in spec.shapes:
            size = math.prod(shape)
            out.append(flat[:, start : start + size].reshape((flat.shape[0], *shape)))
            start += size
        return jax.tree.unflatten(spec.treedef, out)

    @property
    def single(self) -> bool:
        return len(self.factors) == 1


# ---------------------------------------------------------------- the result


@result_class
class MixedResult(FitResult):
    """A `FitResult` of a mixed model (`fit_mixed`), plus the random effects at theta_hat.

    re_mode    {factor: (G_f, q_f)} conditional modes b^_fg (flat effects, `re_names` order)
    re_sd      {factor: (G_f, q_f)} conditional SDs, sqrt diag (-H_bb)^-1 at the modes (as lme4's
               `ranef(m, condVar = TRUE)` for canonical links)
    re_found   {factor: (G_f,)} whether each group's mode was found (one flag for all groups when
               crossed factors couple them)
    at_bound   (k,) parameters on their bounds at theta_hat (a boundary fit)
    n_inner    inner Newton iterations of the final mode search

    With one grouping factor `score_groups` holds the per-group marginal scores (G x k), from
    which the opg, sandwich and cluster covariances are built; crossed or nested factors give
    `hessian` only. Parameters on a bound are held there for the covariance (zero rows, no SE).
    """

    re_mode: dict
    re_sd: dict
    re_found: dict
    at_bound: jax.Array
    n_inner: jax.Array
    mixed: MixedSpec = static()

    cov_kinds: ClassVar[Mapping[str, CovKind]] = MIXED_KINDS

    @property
    def converged(self) -> jax.Array:
        """Converged, inside the parameter space or on its boundary."""
        return (self.status == Status.SUCCESSFUL) | (self.status == Status.BOUNDARY)

    @property
    def n_groups(self) -> dict[str, int]:
        return dict(zip(self.mixed.factors, self.mixed.n_groups, strict=True))

    @property
    def group_labels(self) -> dict[str, np.ndarray]:
        """The labels of each factor's levels, in the order of `re_mode` rows (codes 0..G-1 for
        a fit that no longer holds its problem)."""
        if self.has_problem and self.problem.labels is not None:
            return dict(zip(self.mixed.factors, self.problem.labels, strict=True))
        return {f: np.arange(g) for f, g in self.n_groups.items()}

    def ranef(self, condvar: bool = False) -> dict:
        """{factor: modes}, or with `condvar` {factor: (modes, SDs)}: the conditional modes of
        the random effects and their conditional standard deviations sqrt diag (-H_bb)^-1 (R
        `ranef(m, condVar = TRUE)`, on the scale of the effects the user's functions take). Each
        is re_init's pytree with a leading (G_f,) axis (rows in `group_labels` order)."""
        self._require_single("ranef")
        out = {}
        for i, f in enumerate(self.mixed.factors):
            mode, sd = (self.mixed.unravel(i, x) for x in (self.re_mode[f], self.re_sd[f]))
            out[f] = (mode, sd) if condvar else mode
        return out

    def available(self) -> dict[str, bool]:
        return {**super().available(), "independent_groups": self.mixed.single}

    @host64
    def covariance(self, kind: str, **options) -> jax.Array:
        entry = self.check_cov(kind, **options)
        return _covariance_program(
            self.information, self.opg, self.meat, self.score_groups, self.n_obs, self.at_bound,
            entry=entry, free=tuple(self.free), batch=len(self.batch_shape),
        )  # fmt: skip

    def table(self, level: float = 0.95) -> dict[str, np.ndarray]:
        out = super().table(level)
        for col in ("std_err", "z", "p_value", "ci_lower", "ci_upper"):
            out[col] = np.where(np.asarray(self.at_bound), np.nan, out[col])
        return out

    def head(self) -> list[tuple[str, str]]:
        head = super().head()
        m = self.mixed
        groups = ", ".join(f"{f} {g}" for f, g in zip(m.factors, m.n_groups, strict=True))
        how = "Laplace" if m.n_quad == 1 else f"adaptive Gauss-Hermite, {m.n_quad} points"
        extra = [("Groups", groups), ("Integration", how)]
        bound = [n for n, b in zip(self.names, np.asarray(self.at_bound), strict=True) if b]
        if bound:
            extra.append(("Boundary", f"on their bounds: {', '.join(bound)}"))
        for f in m.factors:
            missing = np.flatnonzero(~np.asarray(self.re_found[f]))
            if missing.size:
                labels = self.group_labels[f][missing[:10]]
                shown = ", ".join(map(str, labels)) + (", ..." if missing.size > 10 else "")
                extra.append(("Modes not found", f"{f}: {missing.size} group(s): {shown}"))
        return head[:4] + extra + head[4:]

    def summary(self, level: float = 0.95) -> str:
        self._require_single("summary")
        fixed = [not f for f in self.free]
        notes = {i: "on its bound" for i, b in enumerate(np.asarray(self.at_bound)) if b}
        lines = head_lines("Mixed model, maximum likelihood (jaxmle)", self.head())
        lines += table_lines(self.names, self.table(level), level, fixed=fixed, notes=notes)
        return "\n".join(lines)


@partial(jax.jit, static_argnames=("entry", "free", "batch"))
def _covariance_program(info, opg, meat, score_groups, n_obs, at_bound, *, entry, free, batch):
    """One compiled covariance per kind; a batch from jax.vmap gives one covariance per fit."""

    def one(info, opg, meat, sg, n_obs, at_bound):
        return _covariance(entry, info, opg, meat, sg, n_obs, jnp.asarray(free) & ~at_bound)[0]

    for _ in range(batch):
        one = jax.vmap(one)
    return one(info, opg, meat, score_groups, n_obs, at_bound)


def _covariance(entry, info, opg, meat, score_groups, n_obs, keep):
    """A covariance kind over the parameters in `keep` (free and not on a bound): the others' rows
    and columns are replaced by the identity for the inverses and zeroed in the result."""
    keep = jnp.asarray(keep)
    both = keep[:, None] & keep[None, :]
    eye = jnp.eye(info.shape[0], dtype=info.dtype)
    pieces = Pieces(
        jnp.where(both, info, eye),
        jnp.where(both, opg, eye),
        jnp.where(both, meat, 0.0),
        jnp.where(keep[None, :], score_groups, 0.0),
        jnp.full_like(info, jnp.nan),
        n_obs,
    )
    cov, status = covariance(entry, pieces)
    return jnp.where(both, cov, 0.0), status


# ---------------------------------------------------------------- the compiled program


@partial(
    jax.jit,
    static_argnames=(
        "model", "spec", "names", "free", "method", "cov", "max_iter", "tol", "inner_max_iter",
        "mixed",
    ),
)  # fmt: skip
@_full_precision
def _mixed_compiled(
    theta0, b0, rows, codes, weights, lower, upper, *, model: Model, spec, names, free, method,
    cov, max_iter, tol, inner_max_iter, mixed: MixedSpec,
) -> MixedResult:  # fmt: skip
    data = Data(rows, codes, weights)
    free_idx = np.flatnonzero(free)
    all_free = len(free_idx) == len(free)

    def embed(theta_free):
        return theta_free if all_free else theta0.at[free_idx].set(theta_free)

    def units(theta_full, b):
        return marginal_units(model, theta_full, b, data)

    def newton_terms(theta, b, over):
        """(lnL, U, -H) over the coordinates `over` maps into theta (free or all), and the
        per-unit scores (U x k): forward over forward, the scores a by-product of the inner pass."""

        def jac_aux(t):
            def f(s):
                u = units(over(s), b)
                return u, u

            jac, u = jax.jacfwd(f, has_aux=True)(t)
            return jnp.sum(jac, 0), (jnp.sum(u), jac)

        h, (v, jac) = jax.jacfwd(jac_aux, has_aux=True)(theta)
        return Terms(v, jnp.sum(jac, 0), symmetric(-h)), jac

    def evaluate(theta_free, carry):
        modes = inner_newton(model, embed(theta_free), carry[0].b, data, inner_max_iter)
        if method.curvature == "hessian":
            t, s = newton_terms(theta_free, modes.b, embed)
        else:  # bhhh: the outer product of the per-group marginal scores
            s = jax.jacfwd(lambda tf: units(embed(tf), modes.b))(theta_free)
            t = Terms(jnp.sum(units(embed(theta_free), modes.b)), jnp.sum(s, 0), s.T @ s)
        # a point where some mode was not found has no usable lnL: the line search steps back
        ok = jnp.all(modes.found)
        return t._replace(loglik=jnp.where(ok, t.loglik, -jnp.inf)), (modes, s)

    k = theta0.shape[0]
    bounds = (lower[free_idx], upper[free_idx])
    n_units = mixed.n_groups[0] if mixed.single else 1
    modes0 = Modes(b0, jnp.zeros(n_units, bool), jnp.asarray(0))
    scores0 = jnp.zeros((n_units, len(free_idx)), theta0.dtype)
    st = maximize(
        evaluate, theta0[free_idx], method=method, max_iter=max_iter, tol=tol, bounds=bounds,
        carry0=(modes0, scores0),
    )  # fmt: skip
    theta_hat = embed(st.theta)
    modes, scores = st.carry  # the modes at theta_hat, from its evaluation in the loop
    if all_free and method.curvature == "hessian":  # the loop's last evaluation is at theta_hat
        full = Terms(st.loglik, st.score, st.matrix)
    else:  # U, -H and the scores over every parameter (fixed ones too, for score tests)
        full, scores = newton_terms(theta_hat, modes.b, lambda t: t)
    if mixed.single:
        sg = scores  # (G, k) per-group marginal scores
        opg = sg.T @ sg
    else:
        sg = jnp.zeros((0, k), theta0.dtype)
        opg = jnp.full((k, k), jnp.nan, theta0.dtype)
    free_mask = jnp.asarray(free)
    at_bound = free_mask & ((theta_hat <= lower) | (theta_hat >= upper))
    keep = free_mask & ~at_bound
    n_obs = jnp.asarray(
        data.codes[0].shape[0] if weights is None else jnp.sum(weights), theta0.dtype
    )
    cov_full, cov_status = _covariance(MIXED_KINDS[cov], full.matrix, opg, opg, sg, n_obs, keep)
    _, info_status = _covariance(MIXED_KINDS["hessian"], full.matrix, opg, opg, sg, n_obs, keep)
    found = jnp.all(modes.found)
    status = jnp.select(
        [
            ~found,
            st.failed_start,
            ~jnp.isfinite(st.loglik) | ~jnp.isfinite(st.decrement),
            st.failed_search,
            (st.decrement > tol) & ~st.at_floor,
            info_status != Status.SUCCESSFUL,
            cov_status != Status.SUCCESSFUL,
            jnp.any(at_bound),
        ],
        [
            Status.MODE_NOT_FOUND,
            Status.NONFINITE_START,
            Status.NONFINITE,
            Status.LINE_SEARCH_FAILED,
            Status.MAX_ITER,
            info_status,
            cov_status,
            Status.BOUNDARY,
        ],
        Status.SUCCESSFUL,
    ).astype(jnp.int32)
    se = jnp.where(at_bound, jnp.nan, jnp.sqrt(jnp.diagonal(cov_full)))
    sds = conditional_sd(model, factorize(model, laplace_terms(model, theta_hat, modes.b, data)))
    found_per = (
        {mixed.factors[0]: modes.found}
        if mixed.single
        else {
            f: jnp.broadcast_to(found, (g,))
            for f, g in zip(mixed.factors, mixed.n_groups, strict=True)
        }
    )
    return MixedResult(
        params=spec.unravel(theta_hat),
        se=spec.unravel(se),
        cov=cov_full,
        loglik=full.loglik,
        score=full.score,
        information=full.matrix,
        expected_information=jnp.full((k, k), jnp.nan, theta0.dtype),
        opg=opg,
        meat=opg,
        score_groups=sg,
        n_obs=n_obs,
        n_iter=st.n_iter,
        n_damped=st.n_damped,
        start_rows=jnp.asarray(0, jnp.int32),
        scaled_gradient=st.decrement,
        status=status,
        names=names,
        free=free,
        method=method.name,
        cov_type=cov,
        re_mode=dict(zip(mixed.factors, modes.b, strict=True)),
        re_sd=dict(zip(mixed.factors, sds, strict=True)),
        re_found=found_per,
        at_bound=at_bound,
        n_inner=modes.n_iter,
        mixed=mixed,
    )


@dataclasses.dataclass(frozen=True, eq=False)
class MixedProblem(Problem):
    """A `Problem` of `fit_mixed`: the model, its factors' codes and labels, the box, b's start."""

    model: Model | None = None
    mixed: MixedSpec | None = None
    codes: tuple = ()
    labels: tuple | None = None
    lower: Any = None
    upper: Any = None
    b0: tuple = ()
    inner_max_iter: int = _INNER_MAX_ITER

    def run(self, theta0, free, warm: bool = False) -> MixedResult:
        return _mixed_compiled(
            theta0, self.b0, self.data, self.codes, self.weights, self.lower, self.upper,
            model=self.model, spec=self.spec, names=self.names, free=free,
            method=METHODS[self.method], cov=self.cov, max_iter=self.max_iter, tol=self.tol,
            inner_max_iter=self.inner_max_iter, mixed=self.mixed,
        )  # fmt: skip

    @property
    def box(self):
        return np.asarray(self.lower), np.asarray(self.upper)


# ---------------------------------------------------------------- fit_mixed


def fit_mixed(
    logpdf: Callable[[PyTree, PyTree, PyTree], jax.Array],
    re_logpdf: Callable[[PyTree, PyTree], jax.Array] | Mapping[str, Callable],
    init: PyTree,
    re_init: PyTree,
    data: PyTree,
    groups,
    n_groups: int | Mapping[str, int] | None = None,
    n_quad: int = 1,
    cov: str = "hessian",
    method: str = "newton",
    *,
    lower: Mapping | None = None,
    upper: Mapping | None = None,
    weights=None,
    fixed: Mapping | None = None,
    max_iter: int = 100,
    tol: float | None = None,
    names: Mapping | None = None,
    throw: bool = False,
) -> MixedResult:
    """Maximum likelihood of a mixed model: lnL(theta) = sum_g ln int exp(h_g(theta, b)) db.

    h_g(theta, b) = sum_{i in g} w_i logpdf(theta, b, obs_i) + re_logpdf(theta, b); the integral by
    the Laplace approximation at each group's conditional mode (`n_quad=1`), or by adaptive
    Gauss-Hermite quadrature with `n_quad` points per dimension (lme4's nAGQ), see `_laplace`.

    Args:
      logpdf: `logpdf(theta, b, obs) -> scalar`, the log-density of ONE row given the random effects
        b of its group (b shaped like `re_init`; a dict {factor: effects} with several factors).
      re_logpdf: `re_logpdf(theta, b) -> scalar`, the log-density of one group's effects; with
        several factors a dict {factor: function}.
      init: start values of theta (any pytree of floats).
      re_init: the shape of one group's effects (any pytree of floats; its values start every
        group's mode search); with several factors a dict {factor: pytree}.
      data: pytree of arrays sharing the leading axis N (rows).
      groups: (N,) labels of any kind, or {factor: (N,) labels} for crossed or nested factors (a
        nested factor is given by its own unique labels, e.g. batch:cask). Under jit/vmap, integer
        codes 0..G-1 with the static `n_groups=G` (a dict of G's with several factors).
      n_quad: points per random-effect dimension of adaptive Gauss-Hermite quadrature (one factor);
        1 is the Laplace approximation.
      cov: "hessian" (exact observed information of the marginal lnL), or with one factor "opg",
        "sandwich" (A^-1 (sum_g s_g s_g') A^-1 from the per-group marginal scores s_g), "cluster"
        (the sandwich times G/(G-1)).
      method: "newton" (default) or "bhhh" (one factor). Both take the box `lower`/`upper`.
      lower, upper: {top-level key of init: bound (scalar or array)}: the box theta is kept in
        (projected Newton); e.g. `lower={"sigma": 0.0}` lets a variance reach exactly zero.
      weights: (N,) row weights w_i (frequency weights on the conditional log-density).
      fixed, max_iter, tol, names, throw: as for `jm.fit`.

    Returns a `MixedResult` (a FitResult): summary(), wald_test, lr_test, delta_method,
    profile_ci, jax.vmap over data sets and `ranef()` work on it. An LR test of a variance at 0
    (the model without the random effect) is on the boundary: its null distribution is
    (1/2) chi2(0) + (1/2) chi2(1) for one variance (Self & Liang 1987), so halve the chi2(1)
    p-value; `lr_test` reports the plain chi-square.
    """
    entry = check_method(method)
    if entry.curvature not in ("hessian", "opg"):
        raise ValueError(f"fit_mixed takes method='newton' or 'bhhh', got {method!r}")
    if not (isinstance(n_quad, int) and not isinstance(n_quad, bool) and n_quad >= 1):
        raise ValueError(f"n_quad must be a positive int, got {n_quad!r}")
    if isinstance(max_iter, bool) or not (isinstance(max_iter, int) and max_iter >= 0):
        raise ValueError(f"max_iter must be a non-negative int, got {max_iter!r}")
    keyed = isinstance(groups, Mapping)
    factors = tuple(sorted(groups)) if keyed else (_factor_name(groups),)
    if keyed:
        _check_keyed(factors, re_init, "re_init")
        _check_keyed(factors, re_logpdf, "re_logpdf")
        re_logpdfs = tuple(re_logpdf[f] for f in factors)
        re_inits = tuple(re_init[f] for f in factors)
    else:
        if isinstance(re_logpdf, Mapping) or not callable(re_logpdf):
            raise TypeError("with one grouping factor, re_logpdf must be one function")
        re_logpdfs, re_inits = (re_logpdf,), (re_init,)
    single = len(factors) == 1
    has = {"groups": True, "expected": False, "independent_groups": single}
    check_kind(MIXED_KINDS, cov, has=has)
    if entry.curvature == "opg" and not single:
        raise ValueError("method='bhhh' needs independent groups: one grouping factor")
    if n_quad > 1 and not single:
        raise ValueError(
            "adaptive quadrature (n_quad > 1) needs one grouping factor (as lme4's nAGQ > 1); "
            "crossed or nested factors use the Laplace approximation, n_quad=1"
        )
    is_traced = traced(init, data, groups, weights)
    with float64_scope(init, data, groups, weights):
        dtype = jnp.dtype(jnp.result_type(float))
        tol = default_tol(dtype) if tol is None else float(tol)
        init, free, labels = prepare_init(init, fixed, dtype, names)
        param_names = parameter_names(init, labels)
        leaves, treedef = jax.tree.flatten(init)
        theta0 = jnp.concatenate([jnp.ravel(jnp.asarray(x)) for x in leaves])
        spec = ParamSpec(treedef, tuple(tuple(np.shape(x)) for x in leaves))
        lo, hi = _box(init, lower, upper, dtype, is_traced, theta0)
        data, n = prepare_data(data, dtype, is_traced)
        w = prepare_weights(weights, n, dtype, is_traced)
        group_list = [groups[f] for f in factors] if keyed else [groups]
        sizes = n_groups if isinstance(n_groups, Mapping) else {factors[0]: n_groups}
        codes, counts, label_list = [], [], []
        for f, g in zip(factors, group_list, strict=True):
            c, count, lab = _codes(f, g, sizes.get(f), n, keyed)
            codes.append(c)
            counts.append(count)
            label_list.append(lab)
        re_specs, re_flat, re_names = [], [], []
        for f, r in zip(factors, re_inits, strict=True):
            r = jax.tree.map(lambda x: jnp.asarray(x, dtype), r)
            rl, rt = jax.tree.flatten(r)
            if not rl:
                raise ValueError(f"re_init for {f!r} has no random effects")
            re_specs.append(ParamSpec(rt, tuple(tuple(np.shape(x)) for x in rl)))
            re_flat.append(jnp.concatenate([jnp.ravel(x) for x in rl]))
            re_names.append(parameter_names(r))
        qs = tuple(int(x.shape[0]) for x in re_flat)
        if n_quad > 1 and n_quad ** qs[0] > _MAX_NODES:
            raise ValueError(
                f"n_quad={n_quad} with {qs[0]} random effects per group needs "
                f"{n_quad ** qs[0]} quadrature points per group (more than {_MAX_NODES}); "
                "use fewer points or the Laplace approximation"
            )
        sizes_q = [q * g for q, g in zip(qs, counts, strict=True)]
        model = Model(
            logpdf=logpdf,
            re_logpdf=re_logpdfs,
            factors=tuple(
                Factor(f, s, q, g) for f, s, q, g in zip(factors, re_specs, qs, counts, strict=True)
            ),
            theta_spec=spec,
            keyed=keyed,
            primary=int(np.argmax(sizes_q)),
            n_quad=n_quad,
        )
        _check_logpdfs(model, init, re_inits, data)
        b0 = tuple(
            jnp.broadcast_to(x, (g, x.shape[0])) for x, g in zip(re_flat, counts, strict=True)
        )
        mixed = MixedSpec(factors, qs, tuple(counts), tuple(re_names), n_quad, tuple(re_specs))
        problem = MixedProblem(
            logpdf=logpdf, spec=spec, names=param_names, data=data, weights=w, groups=None,
            n_groups=0, weight_kind="frequency", expected=None, method=entry.name, cov=cov,
            max_iter=max_iter, tol=tol, layout=_NO_LAYOUT, n_rows=n, dtype=dtype,
            compute_dtype=None, model=model, mixed=mixed, codes=tuple(codes),
            labels=None if is_traced else tuple(label_list), lower=lo, upper=hi, b0=b0,
        )  # fmt: skip
        res = problem.run(theta0, free)
    return finish(res, problem, is_traced, throw, "fit_mixed")


class _Layout(NamedTuple):
    host: Any = None


_NO_LAYOUT = _Layout()


def _factor_name(groups) -> str:
    name = getattr(groups, "name", None)
    return str(name) if isinstance(name, str) and name else SINGLE


def _check_keyed(factors, value, what: str) -> None:
    if not isinstance(value, Mapping) or sorted(value) != list(factors):
        got = sorted(value) if isinstance(value, Mapping) else type(value).__name__
        raise ValueError(
            f"with groups given as a dict of factors {list(factors)}, {what} must be a dict "
            f"with the same keys; got {got}"
        )


def _codes(name, labels, n_groups, n, keyed):
    """((N,) codes 0..G-1, G, labels) of one factor; traced codes need a static G."""
    where = f"groups[{name!r}]" if keyed else "groups"
    if traced(labels):
        g = jnp.asarray(labels)
        if not jnp.issubdtype(g.dtype, jnp.integer) or n_groups is None:
            raise ValueError(
                f"under jit/vmap, {where} must be integer codes 0..G-1 and n_groups=G given "
                "(a static int, or a dict of them with several factors)"
            )
        if g.shape != (n,):
            raise ValueError(f"{where} must have shape (N,) = ({n},), got {g.shape}")
        return g.astype(jnp.int32), int(n_groups), None
    codes, unique = factorize_labels(labels, n, where)
    g = len(unique)
    if n_groups is not None and n_groups != g:
        raise ValueError(f"n_groups={n_groups} for {name!r}, but {where} holds {g} distinct labels")
    if g < 2:
        raise ValueError(f"{where} has one level: a random effect needs at least 2 groups")
    return jnp.asarray(codes), g, unique


def _box(init, lower, upper, dtype, is_traced, theta0):
    """Flat (lower, upper) bounds from {top-level key: bound}, checked against init."""
    out = []
    for bound, fill, what in ((lower, -math.inf, "lower"), (upper, math.inf, "upper")):
        bound = dict(bound or {})
        if bound and not isinstance(init, dict):
            raise TypeError(f"{what}= names top-level keys of init, so init must be a dict")
        unknown = [key for key in bound if key not in init]
        if unknown:
            raise KeyError(f"{what} names {unknown}, which are not keys of init ({list(init)})")
        tree = (
            {key: jnp.full(jnp.shape(v), fill, dtype) for key, v in init.items()}
            if isinstance(init, dict)
            else jax.tree.map(lambda v, fill=fill: jnp.full(jnp.shape(v), fill, dtype), init)
        )
        for key, value in bound.items():
            try:
                tree[key] = jnp.broadcast_to(jnp.asarray(value, dtype), jnp.shape(init[key]))
            except ValueError as e:
                raise ValueError(
                    f"{what}[{key!r}] does not broadcast to init[{key!r}]'s shape "
                    f"{jnp.shape(init[key])}"
                ) from e
        out.append(jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)]))
    lo, hi = out
    if not is_traced:
        bad = np.flatnonzero(
            (np.asarray(theta0) < np.asarray(lo)) | (np.asarray(theta0) > np.asarray(hi))
        )
        if bad.size:
            names = parameter_names(init)
            raise ValueError(
                f"init is outside its bounds for {', '.join(names[i] for i in bad[:5])}; start "
                "inside [lower, upper]"
            )
    return lo, hi


def _check_logpdfs(model: Model, init, re_inits, data) -> None:
    """Trace logpdf and re_logpdf on shapes: scalars for one row and one group, or a clear error."""
    obs = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), data)
    b_row = (
        re_inits[0]
        if not model.keyed
        else dict(zip((f.name for f in model.factors), re_inits, strict=True))
    )
    checks = [("logpdf(theta, b, obs)", model.logpdf, (init, b_row, obs), "ONE row")]
    for fac, fn, r in zip(model.factors, model.re_logpdf, re_inits, strict=True):
        what = "re_logpdf(theta, b)" if not model.keyed else f"re_logpdf[{fac.name!r}](theta, b)"
        checks.append((what, fn, (init, r), "one group's effects"))
    for what, fn, args, unit in checks:
        try:
            out = jax.eval_shape(fn, *args)
        except Exception as e:
            raise type(e)(f"{what} failed when traced: {e}") from e
        if getattr(out, "shape", None) != ():
            raise ValueError(
                f"{what} must return a scalar for {unit}, got {getattr(out, 'shape', type(out))}"
            )
