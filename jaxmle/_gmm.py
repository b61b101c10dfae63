"""gmm(): the generalised method of moments, one-step, efficient two-step and iterated (Hansen 1982).

    g_i(theta)   the m moment conditions of observation i (E g_i(theta_0) = 0), m >= k
    gbar         = sum_i w_i g_i / n,  n = sum_i w_i;   G = d gbar / d theta'   (m x k)
    S(theta)     = sum_i w_i g_i g_i' / n, or sum_g s_g s_g' / n over clusters (s_g = sum_{i in g}
                   w_i g_i); centred (g_i - gbar) with center=True (R gmm's centeredVcov = TRUE)
    theta_hat    = argmin Q(theta) = n gbar' W gbar

    one-step     W = I, or the `weight_matrix` given
    two-step     theta_1 with the first-step W, then W = S(theta_1)^-1
    iterated     W = S(theta_t)^-1 until theta stops moving (a fixed point; R gmm type="iterative",
                 linearmodels IVGMM iter_limit large)

Covariance kinds (`res.with_cov(kind)`), at theta_hat with S = S(theta_hat):
    robust     (G'WG)^-1 G'W S W G (G'WG)^-1 / n       linearmodels IVGMM cov_type="robust"; R gmm's
                                                       vcov for one-step (ident / fixed W); Stata gmm
    efficient  (G' S^-1 G)^-1 / n                      R gmm vcov after twoStep / iterative
The two agree at the iterated fixed point. Hansen's J = n gbar' W gbar with the W of the last step
for two-step and iterated (R `specTest`, linearmodels `j_stat`), n gbar' S^-1 gbar for one-step (R
`specTest` with wmatrix="ident"); chi2 with m - k degrees of freedom.

Each minimisation is Newton's method on Q/2 with its exact Hessian n G'WG + sum_j (W gbar)_j
d^2 (n gbar_j) / d theta d theta' (autodiff; one pass over the data per evaluation), through
`_solvers.maximize` (line search, eigenvalue damping). W is scaled by m / tr(W S) at the stage's start,
so its convergence criterion is in units of standard errors whatever the scale of the moments.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.linalg import solve_triangular

from ._accumulate import Layout, auto_chunk_size
from ._covariance import CovKind, check_kind, covariance, psd_inverse
from ._fit import default_tol, settle_throw
from ._inputs import prepare_data, prepare_groups, prepare_init, prepare_weights
from ._moments import VectorSums, flat_fn, flat_spec
from ._objective import Batch, Terms
from ._results import FitResult, result_class, static
from ._scope import float64_scope, traced
from ._solvers import METHODS, maximize
from ._status import Status
from ._tables import head_lines, table_lines
from ._testing import chi2_sf

PyTree = Any
WEIGHTINGS = ("identity", "one-step", "two-step", "iterated")
# iterated GMM stops when the last step moved theta by less than this (in squared standard errors)
_ITERATED_TOL = 1e-14


class GMMPieces(NamedTuple):
    """The covariances are formed from factors, not from (G'WG)^-1 (n G'WSWG) (G'WG)^-1: with
    unscaled moments (an identity W and a regressor in the thousands) G'WG has a condition number
    near 1e13 and that product loses most digits; R gmm's T S T' keeps them."""

    information: jax.Array  # n G'WG
    influence: jax.Array  # T = (G'WG)^-1 G'W (k x m), by QR of chol(W)' G
    moment_cov: jax.Array  # S(theta_hat)
    efficient_cov: jax.Array  # (G'S^-1G)^-1 / n, by QR of chol(S)^-1 G
    score_groups: jax.Array
    n_obs: jax.Array


def _robust(p, bread):
    _, status = bread
    t = p.influence
    return t @ p.moment_cov @ t.T / p.n_obs, status


def _efficient(p, bread):
    ok = jnp.all(jnp.isfinite(p.efficient_cov))
    return p.efficient_cov, jnp.where(ok, Status.SUCCESSFUL, Status.SINGULAR_WEIGHT)


GMM_KINDS: Mapping[str, CovKind] = types.MappingProxyType(
    {
        k.name: k
        for k in (
            CovKind("robust", "robust (G'WG)^-1 G'WSWG (G'WG)^-1 / n", _robust),
            CovKind("efficient", "efficient (G'S^-1G)^-1 / n (R gmm)", _efficient),
        )
    }
)


@result_class
class GMMResult(FitResult):
    """A GMM fit: `params`, `se`, `cov` as any `FitResult` (summary, `wald_test`, `delta_method`).

    j_stat, j_df, j_pvalue   Hansen's test of the over-identifying restrictions (df = m - k)
    moments_mean             gbar at theta_hat (m,)
    moment_cov               S(theta_hat) (m x m)
    weight_matrix            the W of the last step (m x m)
    information              n G'WG; `meat` n G'WSWG; `influence` (G'WG)^-1 G'W (k x m)
    efficient_cov            (G'S^-1G)^-1 / n
    n_steps                  weighting steps taken (1 one-step, 2 two-step, iterated: until fixed)
    `loglik` is NaN; `score` holds the gradient n G'W gbar of Q/2 at theta_hat.
    """

    j_stat: jax.Array
    j_df: jax.Array
    j_pvalue: jax.Array
    moments_mean: jax.Array
    moment_cov: jax.Array
    weight_matrix: jax.Array
    influence: jax.Array
    efficient_cov: jax.Array
    n_steps: jax.Array
    weighting: str = static()

    cov_kinds: ClassVar[Mapping[str, CovKind]] = GMM_KINDS

    def pieces(self) -> GMMPieces:
        return GMMPieces(
            self.information, self.influence, self.moment_cov, self.efficient_cov,
            self.score_groups, self.n_obs,
        )  # fmt: skip

    def available(self) -> dict[str, bool]:
        return {"groups": self.score_groups.shape[-2] > 0, "expected": False}

    def head(self) -> list[tuple[str, str]]:
        m = self.moments_mean.shape[-1]
        return [
            ("Estimator", f"GMM, {self.weighting}, {int(self.n_steps)} step(s)"),
            ("Covariance", self.cov_label()),
            ("N", f"{float(self.n_obs):.10g}"),
            ("Moments", f"{m} for {self.n_params} parameters"),
            (
                "Hansen's J",
                f"{float(self.j_stat):.6g} on {int(self.j_df)} df, P > J = "
                f"{float(self.j_pvalue):.4g}",
            ),
            ("Status", self.message),
        ]

    def summary(self, level: float = 0.95) -> str:
        self._require_single("summary")
        lines = head_lines("Generalized method of moments (jaxmle)", self.head())
        lines += table_lines(self.names, self.table(level), level)
        return "\n".join(lines)


def gmm(
    moments: Callable[[PyTree, PyTree], PyTree],
    init: PyTree,
    data: PyTree,
    weighting: str = "two-step",
    groups=None,
    n_groups: int | None = None,
    weights=None,
    *,
    weight_matrix=None,
    center: bool = False,
    cov: str = "robust",
    max_iter: int = 100,
    max_steps: int = 100,
    tol: float | None = None,
    chunk_size: int | None = None,
    names: dict | None = None,
    throw: bool = False,
) -> GMMResult:
    """GMM estimate of theta from E g(theta, obs) = 0 with m >= k moments.

    Args:
      moments: `moments(theta, obs) -> (m,) array` (or a pytree of arrays), the moment conditions
        of ONE observation, written in JAX.
      init: start values (any pytree of floats).
      data: a pytree of arrays sharing the leading axis N.
      weighting: "two-step" (default: first step with `weight_matrix` or I, then S(theta_1)^-1),
        "iterated", "identity" (one step with W = I), or "one-step" (one step with
        `weight_matrix`).
      groups: (N,) cluster labels: S sums the cluster sums (cluster-robust weighting and covariance).
      weights: (N,) frequency weights.
      weight_matrix: (m, m) symmetric positive definite W for the one step or the first step (2SLS's
        first step is W = (Z'Z/n)^-1 for moments z_i (y_i - x_i'b)).
      center: centre the moments in S (R gmm's default `centeredVcov = TRUE`; linearmodels and
        Stata do not).
      cov: "robust" (default) or "efficient" (R gmm's after two-step / iterated).
      max_iter: Newton iterations per minimisation; max_steps: weighting updates when iterated.

    Equals R `gmm::gmm(g, x, t0, type = "twoStep" | "iterative", wmatrix = "optimal" | "ident",
    vcov = "MDS", centeredVcov = center)` and Python `linearmodels.IVGMM(...).fit(iter_limit = 2 |
    large, initial_weight = W)` for linear IV moments.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; choose one of {WEIGHTINGS}")
    if weighting == "identity" and weight_matrix is not None:
        raise ValueError("weighting='identity' uses W = I; for a given W use weighting='one-step'")
    if weighting == "one-step" and weight_matrix is None:
        raise ValueError("weighting='one-step' needs weight_matrix= (an m x m matrix)")
    check_kind(GMM_KINDS, cov, has={"groups": groups is not None})
    for what, value in (("max_iter", max_iter), ("max_steps", max_steps)):
        if isinstance(value, bool) or not (isinstance(value, int) and value >= 1):
            raise ValueError(f"{what} must be a positive int, got {value!r}")
    if tol is not None and not (isinstance(tol, (int, float)) and 0 < tol < math.inf):
        raise ValueError(f"tol must be a positive finite number, got {tol!r}")
    is_traced = traced(init, data, weights, groups, weight_matrix)
    with float64_scope(init, data, weights, groups, weight_matrix):
        dtype = jnp.dtype(jnp.result_type(float))
        init, _, labels = prepare_init(init, None, dtype, names)
        spec, theta0, names_ = flat_spec(init, labels)
        data, n = prepare_data(data, dtype, is_traced)
        weights = prepare_weights(weights, n, dtype, is_traced)
        groups, n_groups = prepare_groups(groups, n_groups, n, is_traced)
        m = _moment_count(moments, init, data)
        k = int(np.size(theta0))
        if m < k:
            raise ValueError(
                f"more parameters ({k}) than moment conditions ({m}): theta is not identified; "
                "GMM needs at least as many moments as parameters"
            )
        w0 = _check_weight_matrix(weight_matrix, m, dtype, is_traced)
        if not (chunk_size is None or (isinstance(chunk_size, int) and chunk_size > 0)):
            raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
        layout = Layout(chunk_size or auto_chunk_size(data, m * (k + 1)))
        res = _gmm_compiled(
            theta0, data, weights, groups, w0, moments=moments, spec=spec, names=names_, m=m,
            layout=layout, n_groups=n_groups, weighting=weighting, center=bool(center), cov=cov,
            max_iter=max_iter, max_steps=max_steps,
            tol=default_tol(dtype) if tol is None else float(tol), n_rows=n,
        )  # fmt: skip
    return settle_throw(res, throw, is_traced, "jaxmle.gmm")


def _least_squares(root, g):
    """(G'WG)^-1 G'W for W = root' root, by the QR decomposition of root G."""
    q, r = jnp.linalg.qr(root @ g)
    return solve_triangular(r, q.T @ root, lower=False)


def _moment_count(moments, init, data) -> int:
    obs = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), data)
    try:
        out = jax.eval_shape(moments, init, obs)
    except Exception as e:
        raise type(e)(f"moments(theta, obs) failed on one observation: {e}") from e
    leaves = jax.tree.leaves(out)
    if not leaves or not all(jnp.issubdtype(x.dtype, jnp.floating) for x in leaves):
        raise TypeError("moments(theta, obs) must return a float array (or pytree of them)")
    return sum(math.prod(x.shape) for x in leaves)


def _check_weight_matrix(w, m, dtype, is_traced):
    if w is None:
        return jnp.eye(m, dtype=dtype)
    w = jnp.asarray(np.asarray(w) if not isinstance(w, jax.Array) else w, dtype)
    if w.shape != (m, m):
        raise ValueError(f"weight_matrix must be {m} x {m} (one row per moment), got {w.shape}")
    if not is_traced:
        wn = np.asarray(w)
        if not np.isfinite(wn).all() or not np.allclose(wn, wn.T, rtol=1e-10, atol=0):
            raise ValueError("weight_matrix must be finite and symmetric")
        eig = np.linalg.eigvalsh(wn)
        if eig.min() <= 1e-12 * max(eig.max(), 0.0):
            raise ValueError(
                f"weight_matrix is singular or not positive definite (eigenvalues from "
                f"{eig.min():.3g} to {eig.max():.3g}): Q = n gbar' W gbar would not identify theta"
            )
    return w


@partial(
    jax.jit,
    static_argnames=(
        "moments", "spec", "names", "m", "layout", "n_groups", "weighting", "center", "cov",
        "max_iter", "max_steps", "tol", "n_rows",
    ),
)  # fmt: skip
def _gmm_compiled(
    theta0, data, weights, groups, w0, *, moments, spec, names, m, layout, n_groups, weighting,
    center, cov, max_iter, max_steps, tol, n_rows,
) -> GMMResult:  # fmt: skip
    k = theta0.shape[0]
    dt = theta0.dtype
    batch = Batch(data, weights, groups)
    sums = VectorSums(flat_fn(moments, spec), batch, layout, n_groups, "frequency", m)
    n = jnp.sum(weights) if weights is not None else jnp.asarray(n_rows, dt)

    def moment_cov(theta):
        total, outer, sg = sums.outer(theta)
        gbar = total / n
        if groups is None:
            s = outer / n
            return s - jnp.outer(gbar, gbar) if center else s
        if center:
            size = jax.ops.segment_sum(
                jnp.ones(groups.shape[0], dt) if weights is None else weights,
                groups,
                num_segments=n_groups,
            )
            sg = sg - size[:, None] * gbar[None, :]
        return sg.T @ sg / n

    def stage(theta_start, w):
        scale = jnp.trace(w @ moment_cov(theta_start)) / m
        wn = w / jnp.where(scale > 0, scale, 1.0)

        def evaluate(t) -> Terms:
            total, jac, curv = sums.value_jacobian(t, curvature=True)
            w_gbar = wn @ total / n
            hess = jac.T @ wn @ jac / n + jnp.einsum("j,jkl->kl", w_gbar, curv)
            return Terms(-0.5 * total @ w_gbar, -jac.T @ w_gbar, hess)

        return maximize(
            evaluate, theta_start, method=METHODS["newton"], max_iter=max_iter, tol=tol, min_iter=1
        )

    def inverse(s):
        inv, status = psd_inverse(s)
        return inv, status != Status.SUCCESSFUL

    st = stage(theta0, w0)
    w, singular, n_steps = w0, jnp.asarray(False), jnp.asarray(1)
    if weighting == "two-step":
        w, singular = inverse(moment_cov(st.theta))
        st = stage(st.theta, w)
        n_steps = jnp.asarray(2)
    elif weighting == "iterated":

        def body(carry):
            st, _, _, steps, _ = carry
            w, singular = inverse(moment_cov(st.theta))
            new = stage(st.theta, w)
            d = new.theta - st.theta
            return new, w, singular, steps + 1, d @ new.matrix @ d

        def cond(carry):
            _, _, singular, steps, moved = carry
            return (steps < max_steps + 1) & (moved > _ITERATED_TOL) & ~singular

        init = (st, w0, singular, n_steps, jnp.asarray(jnp.inf, dt))
        st, w, singular, n_steps, _ = lax.while_loop(cond, body, init)
        n_steps = n_steps - 1

    theta = st.theta
    total, jac = sums.value_jacobian(theta)
    gbar, g = total / n, jac / n
    s_hat = moment_cov(theta)
    s_inv, s_singular = inverse(s_hat)
    wg = w @ g
    information = n * g.T @ wg
    meat = n * wg.T @ s_hat @ wg
    influence = _least_squares(jnp.linalg.cholesky(w).T, g)
    root_s = jnp.linalg.cholesky(s_hat)
    r_s = jnp.linalg.qr(solve_triangular(root_s, g, lower=True), mode="r")
    r_inv = solve_triangular(r_s, jnp.eye(k, dtype=dt), lower=False)
    efficient_cov = r_inv @ r_inv.T / n
    pieces = GMMPieces(information, influence, s_hat, efficient_cov, jnp.zeros((0, k), dt), n)
    cov_matrix, cov_status = covariance(GMM_KINDS[cov], pieces)
    efficient_weighting = weighting in ("two-step", "iterated")
    j_weight = w if efficient_weighting else s_inv
    j_stat = n * gbar @ j_weight @ gbar
    j_df = m - k
    status = jnp.select(
        [
            singular | s_singular,
            st.failed_start,
            ~jnp.isfinite(st.loglik) | ~jnp.isfinite(st.decrement),
            st.failed_search,
            (st.decrement > tol) & ~st.at_floor,
            cov_status != Status.SUCCESSFUL,
        ],
        [
            Status.SINGULAR_WEIGHT,
            Status.NONFINITE_START,
            Status.NONFINITE,
            Status.LINE_SEARCH_FAILED,
            Status.MAX_ITER,
            cov_status,
        ],
        Status.SUCCESSFUL,
    ).astype(jnp.int32)
    nan_kk = jnp.full((k, k), jnp.nan, dt)
    return GMMResult(
        params=spec.unravel(theta),
        se=spec.unravel(jnp.sqrt(jnp.diagonal(cov_matrix))),
        cov=cov_matrix,
        loglik=jnp.asarray(jnp.nan, dt),
        score=n * wg.T @ gbar,
        information=information,
        expected_information=nan_kk,
        opg=nan_kk,
        meat=meat,
        score_groups=jnp.zeros((0, k), dt),
        n_obs=n,
        n_iter=st.n_iter,
        n_damped=st.n_damped,
        start_rows=jnp.asarray(0, jnp.int32),
        scaled_gradient=st.decrement,
        status=status,
        j_stat=j_stat,
        j_df=jnp.asarray(j_df),
        j_pvalue=chi2_sf(j_stat, max(j_df, 1)) if j_df > 0 else jnp.asarray(jnp.nan, dt),
        moments_mean=gbar,
        moment_cov=s_hat,
        weight_matrix=w,
        influence=influence,
        efficient_cov=efficient_cov,
        n_steps=n_steps,
        names=names,
        free=(True,) * k,
        method="newton",
        cov_type=cov,
        weighting=weighting,
    )
