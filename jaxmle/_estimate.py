"""estimate(): M-estimation, theta_hat solving sum_i w_i psi_i(theta) = 0, with the sandwich covariance.

    psi_i(theta)   the estimating function of observation i (a pytree shaped like theta)
    Psi(theta)   = sum_i w_i psi_i(theta)
    A            = -sum_i w_i d psi_i / d theta'      (k x k; not symmetric in general)
    B            = sum_i c_i psi_i psi_i'             (c_i = w_i, or w_i^2 for sampling weights), or
                   sum_g s_g s_g', s_g = sum_{i in g} w_i psi_i, when clusters are given
    sandwich     A^-1 B A^-T                          R `geex::m_estimate(...)@vcov` (Stefanski and
                                                      Boos 2002); for psi = a score, `fit`'s HC0
                                                      sandwich, and `sandwich::sandwich(m)`

The root is found by Newton's method with the autodiff Jacobian J = dPsi/dtheta' = -A, damped by
Deuflhard's affine-invariant monotonicity test, steps measured in standard errors (`_roots`).

Fay's bias-corrected sandwich (geex `correct_by(fay_bias_correction, b = 0.75)`) is computed from
the per-unit Jacobians:

    A^-1 B_bc A^-T,  B_bc = sum_u H_u psi_u psi_u' H_u,  H_u = diag((1 - min(b, [A_u A^-1]_jj))^-1/2)

with A_u = -d psi_u / d theta' of one unit (an observation, or a cluster's sum).
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from ._accumulate import Layout, auto_chunk_size
from ._covariance import KINDS, RCOND, CovKind, Pieces, check_kind, covariance, sandwich
from ._fit import default_tol, settle_throw
from ._inputs import prepare_data, prepare_groups, prepare_init, prepare_weights
from ._moments import VectorSums, flat_fn, flat_spec
from ._objective import Batch
from ._results import FitResult, embed_block, result_class, static
from ._roots import solve_roots
from ._scope import float64_scope, traced
from ._status import Status
from ._tables import head_lines, table_lines

PyTree = Any
FAY_B = 0.75  # geex's default bound on the leverage in Fay's correction


def general_inverse(a):
    """(A^-1, status) of a square matrix that need not be symmetric, through the SVD of the
    row- and column-equilibrated R A C; NaN and SINGULAR_JACOBIAN when its smallest singular value
    is below RCOND times its largest."""
    r = 1.0 / jnp.sqrt(jnp.maximum(jnp.sum(a * a, axis=1), jnp.finfo(a.dtype).tiny))
    c = 1.0 / jnp.sqrt(jnp.maximum(jnp.sum(a * a, axis=0), jnp.finfo(a.dtype).tiny))
    u, s, vt = jnp.linalg.svd(r[:, None] * a * c[None, :])
    ok = (s[-1] > RCOND * s[0]) & jnp.all(jnp.isfinite(s))
    inv = c[:, None] * ((vt.T / jnp.where(ok, s, 1.0)) @ u.T) * r[None, :]
    status = jnp.where(ok, Status.SUCCESSFUL, Status.SINGULAR_JACOBIAN)
    return jnp.where(ok, inv, jnp.nan), status


@partial(
    jax.tree_util.register_dataclass,
    data_fields=[
        *(f.name for f in dataclasses.fields(Pieces) if f.name not in ("clusters", "n_coef")),
        "fay_meat",
    ],
    meta_fields=["clusters", "n_coef"],
)
@dataclasses.dataclass(frozen=True)
class EstimatePieces(Pieces):
    """`Pieces` of an M-estimate (free block, at theta_hat): `information` is A = -sum_i w_i
    d psi_i / d theta' (not symmetric), `opg` sum_i w_i psi_i psi_i', `meat` B over the units
    (observations, or clusters); `fay_meat` B_bc of Fay's correction."""

    fay_meat: jax.Array | None = None


def _fay(p, bread):
    return sandwich(bread, p.fay_meat)


ESTIMATE_KINDS: Mapping[str, CovKind] = types.MappingProxyType(
    {
        "sandwich": dataclasses.replace(
            KINDS["sandwich"], label="sandwich A^-1 B A^-T (HC0; B over clusters when given)"
        ),
        "cluster": KINDS["cluster"],
        "fay": CovKind("fay", "Fay's bias-corrected sandwich (geex fay_bias_correction)", _fay),
    }
)


@result_class
class EstimateResult(FitResult):
    """An M-estimate: `params`, `se`, `cov` as any `FitResult` (summary, `wald_test`,
    `delta_method`, vmap). `information` holds A = -sum_i w_i dpsi_i/dtheta' (not symmetric),
    `score` the estimating equations Psi at theta_hat, `meat` B over the units (observations, or
    clusters when fitted with groups), `fay_meat` Fay's bias-corrected B (bound `fay_b`);
    `scaled_gradient` is the last Newton step's squared length in standard errors (~0 at a root).
    `loglik` is NaN: there is none.
    """

    fay_meat: jax.Array
    fay_b: float = static()

    cov_kinds: ClassVar[Mapping[str, CovKind]] = ESTIMATE_KINDS
    bread_inverse: ClassVar[Any] = staticmethod(general_inverse)

    def pieces(self) -> EstimatePieces:
        base = super().pieces()
        mask = np.asarray(self.free)
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
        return EstimatePieces(**fields, fay_meat=self.fay_meat[..., mask, :][..., :, mask])

    def head(self) -> list[tuple[str, str]]:
        n_groups = self.score_groups.shape[-2]
        return [
            ("Estimator", f"M-estimation, Newton, {int(self.n_iter)} iterations"),
            ("Covariance", self.cov_label()),
            ("N", f"{float(self.n_obs):.10g}"),
            ("Parameters", f"{self.n_params}"),
            *([("Clusters", f"{n_groups}")] if n_groups else []),
            ("Status", f"{self.message} (last step {float(self.scaled_gradient):.2e} SE^2)"),
        ]

    def summary(self, level: float = 0.95) -> str:
        """Estimates, sandwich standard errors, z, P>|z|, CI; N, clusters, status."""
        self._require_single("summary")
        lines = head_lines("M-estimation (jaxmle)", self.head())
        lines += table_lines(self.names, self.table(level), level)
        return "\n".join(lines)


def estimate(
    psi: Callable[[PyTree, PyTree], PyTree],
    init: PyTree,
    data: PyTree,
    groups=None,
    n_groups: int | None = None,
    weights=None,
    *,
    weight_kind: str = "frequency",
    cov: str = "sandwich",
    fay_b: float = FAY_B,
    max_iter: int = 100,
    tol: float | None = None,
    chunk_size: int | None = None,
    names: dict | None = None,
    throw: bool = False,
) -> EstimateResult:
    """M-estimation: theta_hat solving sum_i w_i psi(theta, obs_i) = 0; covariance A^-1 B A^-T.

    Args:
      psi: `psi(theta, obs) -> pytree shaped like theta`, the estimating function of ONE
        observation, written in JAX. `jax.grad(logpdf)` gives the MLE with `fit`'s sandwich.
      init: start values (any pytree of floats); names in the table come from its paths.
      data: a pytree of arrays sharing the leading axis N.
      groups: (N,) cluster labels: B is then the sum over clusters of the cluster sums (the
        clusters are geex's units). Under jit/vmap, integer codes 0..G-1 and `n_groups=G`.
      weights: (N,) non-negative weights; "frequency" (B = sum w psi psi') or "sampling"
        (B = sum w^2 psi psi').
      cov: "sandwich" (default, geex's), "cluster" (x G/(G-1); needs groups) or "fay" (Fay's
        bias correction with bound `fay_b`, geex `fay_bias_correction`); every kind is available
        afterwards with `res.with_cov(kind)`.
      tol: convergence when the Newton step, in standard errors, has squared length < tol
        (default 1e-12).
      max_iter, chunk_size, names, throw: as `jaxmle.fit`.

    Equals R `geex::m_estimate(estFUN, data, units, root_control, compute_roots = TRUE)`:
    `roots(m)` and `vcov(m)` (`correct_by(fay_bias_correction, b)` for "fay").
    """
    check_kind(ESTIMATE_KINDS, cov, has={"groups": groups is not None})
    if weight_kind not in ("frequency", "sampling"):
        raise ValueError(f"unknown weight_kind {weight_kind!r}; choose frequency or sampling")
    if isinstance(max_iter, bool) or not (isinstance(max_iter, int) and max_iter >= 0):
        raise ValueError(f"max_iter must be a non-negative int, got {max_iter!r}")
    if not (isinstance(fay_b, (int, float)) and 0.0 < fay_b < 1.0):
        raise ValueError(f"fay_b must lie strictly between 0 and 1, got {fay_b!r}")
    if tol is not None and not (isinstance(tol, (int, float)) and 0 < tol < math.inf):
        raise ValueError(f"tol must be a positive finite number, got {tol!r}")
    is_traced = traced(init, data, weights, groups)
    with float64_scope(init, data, weights, groups):
        dtype = jnp.dtype(jnp.result_type(float))
        init, free, labels = prepare_init(init, None, dtype, names)
        spec, theta0, names_ = flat_spec(init, labels)
        data, n = prepare_data(data, dtype, is_traced)
        weights = prepare_weights(weights, n, dtype, is_traced)
        groups, n_groups = prepare_groups(groups, n_groups, n, is_traced)
        check_like_theta(psi, init, data, "psi")
        if not (chunk_size is None or (isinstance(chunk_size, int) and chunk_size > 0)):
            raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
        layout = Layout(chunk_size or auto_chunk_size(data, 2 * len(free)))
        res = _estimate_compiled(
            theta0, data, weights, groups, psi=psi, spec=spec, names=names_, layout=layout,
            n_groups=n_groups, weight_kind=weight_kind, cov=cov, fay_b=float(fay_b),
            max_iter=max_iter, tol=default_tol(dtype) if tol is None else float(tol), n_rows=n,
        )  # fmt: skip
    return settle_throw(res, throw, is_traced, "jaxmle.estimate")


def check_like_theta(fn, init, data, what):
    """Raise unless fn(theta, obs) returns a pytree with theta's structure and leaf shapes."""
    obs = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), data)
    try:
        out = jax.eval_shape(fn, init, obs)
    except Exception as e:
        raise type(e)(f"{what}(theta, obs) failed on one observation: {e}") from e
    want = jax.tree.map(np.shape, init)
    got = jax.tree.map(lambda x: getattr(x, "shape", None), out)
    if jax.tree.structure(out) != jax.tree.structure(init) or got != want:
        raise ValueError(
            f"{what}(theta, obs) must return a pytree shaped like theta (one estimating "
            f"equation per parameter): theta is {want}, {what} returned {got}"
        )


@partial(
    jax.jit,
    static_argnames=(
        "psi", "spec", "names", "layout", "n_groups", "weight_kind", "cov", "fay_b", "max_iter",
        "tol", "n_rows",
    ),
)  # fmt: skip
def _estimate_compiled(
    theta0, data, weights, groups, *, psi, spec, names, layout, n_groups, weight_kind, cov,
    fay_b, max_iter, tol, n_rows,
) -> EstimateResult:  # fmt: skip
    k = theta0.shape[0]
    sums = VectorSums(
        flat_fn(psi, spec), Batch(data, weights, groups), layout, n_groups, weight_kind, k
    )

    def evaluate(t):
        value, jac, outer, sg = sums.value_jacobian_outer(t)
        return value, jac, sg.T @ sg if groups is not None else outer

    st = solve_roots(evaluate, theta0, max_iter=max_iter, tol=tol)
    theta = st.theta
    value, jac = st.value, st.jac
    a = -jac
    _, outer, score_groups = sums.outer(theta)
    meat = score_groups.T @ score_groups if groups is not None else outer
    ainv, a_status = general_inverse(a)
    fay_meat = _fay_meat(sums, theta, ainv, score_groups, fay_b, weight_kind)
    n_obs = jnp.sum(weights) if (weights is not None and weight_kind == "frequency") else n_rows
    n_obs = jnp.asarray(n_obs, theta0.dtype)
    nan = jnp.full((k, k), jnp.nan, a.dtype)
    pieces = EstimatePieces(a, outer, meat, score_groups, nan, n_obs, fay_meat=fay_meat)
    cov_matrix, cov_status = covariance(ESTIMATE_KINDS[cov], pieces, inverse=general_inverse)
    bad_groups = (
        jnp.asarray(False) if groups is None else jnp.any((groups < 0) | (groups >= n_groups))
    )
    finite = jnp.all(jnp.isfinite(st.value)) & jnp.all(jnp.isfinite(st.jac))
    status = jnp.select(
        [
            st.failed_start,
            finite & (a_status != Status.SUCCESSFUL),
            ~finite | ~jnp.isfinite(st.decrement),
            bad_groups,
            st.failed_search,
            st.decrement > tol,
            cov_status != Status.SUCCESSFUL,
        ],
        [
            Status.NONFINITE_START,
            a_status,
            Status.NONFINITE,
            Status.BAD_GROUPS,
            Status.LINE_SEARCH_FAILED,
            Status.MAX_ITER,
            cov_status,
        ],
        Status.SUCCESSFUL,
    ).astype(jnp.int32)
    free = (True,) * k
    return EstimateResult(
        params=spec.unravel(theta),
        se=spec.unravel(jnp.sqrt(jnp.diagonal(cov_matrix))),
        cov=embed_block(cov_matrix, free),
        loglik=jnp.asarray(jnp.nan, theta.dtype),
        score=value,
        information=a,
        expected_information=pieces.expected,
        opg=outer,
        meat=meat,
        score_groups=score_groups,
        n_obs=n_obs,
        n_iter=st.n_iter,
        n_damped=jnp.asarray(0),
        start_rows=jnp.asarray(0, jnp.int32),
        scaled_gradient=st.decrement,
        status=status,
        fay_meat=fay_meat,
        names=names,
        free=free,
        method="newton",
        cov_type=cov,
        fay_b=fay_b,
    )


def _fay_meat(sums: VectorSums, theta, ainv, score_groups, b, weight_kind):
    """B_bc = sum_u H_u psi_u psi_u' H_u, H_u = diag((1 - min(b, [A_u A^-1]_jj))^-1/2) (geex).

    Units are clusters when given (A_g = -sum_{i in g} w_i J_i, psi_g = s_g), else observations:
    a frequency weight w_i stands for w_i copies of the unit (A_u = -J_i, weight w_i in the sum), a
    sampling weight scales the unit (A_u = -w_i J_i, psi_u = w_i psi_i).
    """

    def factor(a_units):  # (u, k, k) -> (u, k): (1 - min(b, diag(A_u A^-1)))^-1/2
        lev = jnp.einsum("ujl,lj->uj", a_units, ainv)
        return 1.0 / jnp.sqrt(1.0 - jnp.minimum(b, lev))

    if sums.batch.groups is not None:
        a_groups = -sums.unit_jacobians(theta, None)
        h = factor(a_groups) * score_groups
        return h.T @ h

    def per_row(f, jac, w, mask):
        if w is None:
            scale, count = jnp.ones_like(mask), mask
        elif weight_kind == "sampling":
            scale, count = w, mask
        else:
            scale, count = jnp.ones_like(mask), mask * w
        hf = factor(-jac * scale[:, None, None]) * f * scale[:, None]
        return (hf * count[:, None]).T @ hf

    return sums.unit_jacobians(theta, per_row)
