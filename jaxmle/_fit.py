"""fit(): validate on the host, then one compiled program: maximise, then covariance and status.

Tier-1 errors (shapes, options, NaN in data, a non-scalar log-density, -inf at the start values) are
raised here, before or instead of any fitting work, naming the leaf, row or parameter. Under an outer
`jit`/`vmap` the data are tracers and Python cannot look at their values: those checks are skipped and
the outcome is carried in `FitResult.status` instead.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from functools import partial, wraps
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._accumulate import HostData, Layout, auto_chunk_size, n_devices, place, platform_of
from ._bounds import Transforms, flat_inverse
from ._covariance import KINDS, NEEDS, Pieces, check_kind, covariance, psd_inverse
from ._inputs import (
    check_logpdf,
    prepare_data,
    prepare_groups,
    prepare_init,
    prepare_weights,
    raise_bad_start,
    raise_nonfinite_data,
)
from ._objective import Batch, Objective
from ._results import FitResult, embed_block, parameter_names, replace, with_handles
from ._scope import float64_scope, traced
from ._solvers import METHODS, Method, check_method, equilibrated_eigh, maximize
from ._status import Status

PyTree = Any
WEIGHT_KINDS = ("frequency", "sampling")
# A final Newton step longer than this fraction of |theta| means the iterates are still travelling:
# at a maximum that exists the step is ~sqrt(tol) standard errors, far below it.
_LONG_STEP = 1e-3


class ParamSpec(NamedTuple):
    """Static description of the parameter pytree: rebuilds it from the flat vector inside jit."""

    treedef: Any
    shapes: tuple[tuple[int, ...], ...]

    def unravel(self, flat):
        out, start = [], 0
        for shape in self.shapes:
            size = math.prod(shape)
            out.append(flat[start : start + size].reshape(shape))
            start += size
        return jax.tree.unflatten(self.treedef, out)


def fit(
    logpdf: Callable[[PyTree, PyTree], jax.Array],
    init: PyTree,
    data: PyTree,
    *,
    method: str = "newton",
    cov: str = "hessian",
    groups=None,
    n_groups: int | None = None,
    weights=None,
    weight_kind: str = "frequency",
    fixed: dict | None = None,
    expected: tuple[Callable, Callable] | None = None,
    max_iter: int = 100,
    tol: float | None = None,
    chunk_size: int | None = None,
    devices=None,
    stream: bool = False,
    dtype=None,
    names: dict | None = None,
    throw: bool = False,
) -> FitResult:
    """Maximum-likelihood fit of `sum_i w_i logpdf(theta, obs_i)`.

    Args:
      logpdf: `logpdf(theta, obs) -> scalar`, the log-density of ONE observation, written in JAX;
        `theta` has the structure of `init`, `obs` is one row of `data` (each leaf indexed on axis 0).
      init: start values, any pytree of floats. Matrices are ordered as `ravel_pytree(init)`; the
        names in the table come from the pytree paths (`b0`, `b[0]`, ...).
      data: any pytree of arrays sharing the leading axis N (numpy, jax or pandas columns).
      method: "newton" (safeguarded Newton-Raphson, default), "fisher" (scoring with the expected
        information; needs `expected`), "bhhh", or "bfgs".
      cov: "hessian" | "expected" | "opg" | "sandwich" | "cluster" (see `_covariance`); every kind
        can be recomputed later from the result, `res.with_cov(kind)`.
      groups: (N,) cluster ids, any integer or string labels; factorised to 0..G-1 on the host.
        Under `jit`/`vmap` pass integer codes 0..G-1 and the static `n_groups=G`.
      weights: (N,) non-negative observation weights w_i. `weight_kind="frequency"` (Stata fweights:
        meat = sum w u u', N = sum w) or "sampling" (pweights: meat = sum w^2 u u', N = rows).
      fixed: {top-level key of init: value}; those parameters are held at the value (a restricted fit,
        shown as fixed in the table; `score` and `information` still cover the full vector).
      expected: `(predict, fisher)` for models that map theta to the parameters eta_i of a known
        distribution: predict(theta, obs) -> eta_i (scalar or (m,)), fisher(eta_i, obs) -> its
        Fisher information (scalar or m x m). Gives I(theta) = sum_i w_i J_i' F(eta_i) J_i for
        `method="fisher"` and `cov="expected"`; the families module builds it for you.
      max_iter: cap on accepted iterations.
      tol: convergence when the scaled gradient U'M^-1 U (~2 x the lnL still to gain) < tol;
        default 1e-12 in float64 (estimates within ~1e-6 standard errors of the maximum; Newton usually
        stops far inside) and 1e-6 in float32.
      chunk_size: rows per chunk (per device) of the sums over observations; None picks ~16 MiB
        working sets.
      devices: shard host data over these devices (a list, or a count of `jax.devices()`), each
        summing its rows, one all-reduce per pass; rows are padded with zero weight to a multiple of
        the device count. Data already placed with `jax.device_put(data, NamedSharding(mesh,
        P("obs")))` are fitted where they lie without this option.
      stream: keep the data in host (numpy) memory and copy one chunk at a time to the device on
        every pass, for data larger than device memory (a GPU's); the weights and cluster codes
        (N-vectors) stay on the device. Same results as the in-memory fit.
      dtype: "float64" (default, whatever the global JAX setting), or "float32": data and the
        per-chunk log-densities and derivatives in float32 (half the memory traffic; the GPU path),
        sums across chunks, the solves and the results in float64.
      names: labels for the entries of array parameters, {top-level key of init: names}, e.g.
        `names={"b": ["age", "income"]}`: `summary()`, `to_frame()` and `wald_test` strings then
        use them. A pandas Series as an init leaf is labelled by its index. Names must be unique.
      throw: raise if the fit does not succeed (under `jit`/`vmap`, via `equinox.error_if`).

    Returns a `FitResult`; under `jax.vmap` a batched one with its own status for every fit.
    """
    entry = check_method(method)
    if expected is None and (entry.curvature == "expected" or cov == "expected"):
        # a families Model (or a logpdf made with families.expected) carries its information
        expected = getattr(logpdf, "expected", None)
    has = {"groups": groups is not None, "expected": expected is not None}
    check_kind(KINDS, cov, has=has)
    for need in entry.needs:
        if not has[need]:
            raise ValueError(f"method={method!r} needs {NEEDS[need]}")
    if weight_kind not in WEIGHT_KINDS:
        raise ValueError(f"unknown weight_kind {weight_kind!r}; choose one of {WEIGHT_KINDS}")
    if isinstance(max_iter, bool) or not (isinstance(max_iter, int) and max_iter >= 0):
        raise ValueError(f"max_iter must be a non-negative int, got {max_iter!r}")
    dtype = jnp.dtype("float64" if dtype is None else dtype)
    if dtype not in (jnp.dtype("float64"), jnp.dtype("float32")):
        raise ValueError(f"dtype must be float64 or float32, got {dtype}")
    if tol is not None and not (
        isinstance(tol, (int, float)) and not isinstance(tol, bool) and 0 < tol < math.inf
    ):
        raise ValueError(f"tol must be a positive finite number, got {tol!r}")
    is_traced = traced(init, data, weights, groups)
    with float64_scope(init, data, weights, groups):
        # under an outer jit/vmap with JAX's 64-bit mode off, the inputs arrive in float32: the fit
        # computes in float32 and its defaults (tol, line-search slack) follow
        solve_dtype = jnp.dtype(jnp.result_type(float))
        dtype = min(dtype, solve_dtype, key=lambda d: d.itemsize)
        tol = default_tol(dtype) if tol is None else float(tol)
        return _fit(
            logpdf, init, data, groups, n_groups, weights, weight_kind, fixed, expected, entry,
            cov, max_iter, tol, chunk_size, devices, stream, dtype, solve_dtype, names, throw,
            is_traced,
        )  # fmt: skip


def default_tol(dtype) -> float:
    """Convergence tolerance on the scaled gradient for the dtype the fit computes in: ~2 x the
    lnL still to gain, far below what moves an estimate by a visible fraction of a standard error
    (1e-12 in float64; 1e-6 in float32, whose lnL is rounded at ~1e-7 relative)."""
    return 1e-12 if jnp.dtype(dtype) == jnp.float64 else 1e-6


def _fit(
    logpdf, init, data, groups, n_groups, weights, weight_kind, fixed, expected, method, cov,
    max_iter, tol, chunk_size, devices, stream, dtype, solve_dtype, labels, throw, is_traced,
):  # fmt: skip
    init, free, labels = prepare_init(init, fixed, solve_dtype, labels)
    names = parameter_names(init, labels)
    leaves, treedef = jax.tree.flatten(init)
    xp = np if all(isinstance(x, np.ndarray) for x in leaves) else jnp  # numpy: no eager compiles
    theta0 = xp.concatenate([xp.ravel(x) for x in leaves])  # ravel_pytree's order
    spec = ParamSpec(treedef, tuple(tuple(np.shape(x)) for x in leaves))
    if stream and (is_traced or devices is not None):
        raise ValueError(
            "stream=True streams host data to one device: not under jit, not with devices="
        )
    data, n = prepare_data(data, dtype, is_traced, on_host=stream)
    weights = prepare_weights(weights, n, solve_dtype, is_traced)
    groups, n_groups = prepare_groups(groups, n_groups, n, is_traced)
    check_logpdf(logpdf, init, data)
    if not (chunk_size is None or (isinstance(chunk_size, int) and chunk_size > 0)):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    if stream:
        layout = Layout(chunk_size, host=HostData(data))
    else:
        data, weights, groups, layout = place(
            data, weights, groups, devices, n, chunk_size, is_traced
        )
    if layout.chunk_size is None:
        local = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(
                (x.shape[0] // n_devices(layout), *x.shape[1:]), x.dtype
            ),
            data,
        )
        layout = layout._replace(chunk_size=auto_chunk_size(local, sum(free), platform_of(data)))

    problem = Problem(
        logpdf=logpdf, spec=spec, names=names, data=data, weights=weights, groups=groups,
        n_groups=n_groups, weight_kind=weight_kind, expected=expected, method=method.name,
        cov=cov, max_iter=max_iter, tol=tol, layout=layout, n_rows=n,
        dtype=solve_dtype, compute_dtype=None if dtype == solve_dtype else dtype,
    )  # fmt: skip
    res = _run(problem, theta0, free)
    if not is_traced:  # a host fit carries how it was made, for profiles and refits
        res = with_handles(res, _problem=problem)
    if not is_traced and int(res.status) in (Status.NONFINITE_START, Status.NONFINITE):
        # NaN/inf in the data shows up as a non-finite lnL or score; checking afterwards, only
        # when it matters, spares every healthy fit a pass over the data and a host round-trip
        raise_nonfinite_data(data, n)
    if not is_traced and int(res.status) == Status.NONFINITE_START:
        raise_bad_start(logpdf, spec, theta0, data, n)
    if throw:
        if is_traced:
            return eqx.error_if(res, ~res.converged, "jaxmle.fit did not succeed (see res.status)")
        if not bool(res.converged):
            raise RuntimeError(f"jaxmle.fit: {res.message}")
    return res


@dataclasses.dataclass(frozen=True, eq=False)
class Problem:
    """What a host-side fit was made from, carried beside its result (`res.problem`): the model,
    the validated data where the fit placed them, and the options. `refit` re-runs the same compiled
    program from it (profile likelihood, score tests); `transforms` is set by `fit_transformed`,
    whose fits run on the unconstrained scale."""

    logpdf: Callable
    spec: ParamSpec
    names: tuple[str, ...]
    data: PyTree
    weights: jax.Array | None
    groups: jax.Array | None
    n_groups: int
    weight_kind: str
    expected: tuple[Callable, Callable] | None
    method: str
    cov: str
    max_iter: int
    tol: float
    layout: Layout
    n_rows: int
    dtype: Any
    compute_dtype: Any
    transforms: Transforms | None = None

    def replace(self, **changes) -> Problem:
        return dataclasses.replace(self, **changes)

    def run(self, theta0, free) -> FitResult:
        """The fit's compiled program from theta0 (flat) with `free` parameters (a subclass of
        Problem, such as `fit_groups`' or `fit_mixed`'s, runs its own)."""
        return _run_fit(self, theta0, free)

    @property
    def box(self) -> tuple | None:
        """(lower, upper) flat bounds the fit keeps theta in, or None (profiles stop at them)."""
        return None

    @property
    def device_data(self):
        """The data as the compiled program takes them (None when streamed from the host)."""
        return None if self.layout.host is not None else self.data


def _run(problem: Problem, theta0, free) -> FitResult:
    return problem.run(theta0, free)


def _run_fit(problem: Problem, theta0, free) -> FitResult:
    c = problem
    return _fit_compiled(
        theta0, c.device_data, c.weights, c.groups, logpdf=c.logpdf, spec=c.spec, names=c.names,
        free=free, method=METHODS[c.method], cov=c.cov, max_iter=c.max_iter, tol=c.tol,
        layout=c.layout, n_rows=c.n_rows, n_groups=c.n_groups, weight_kind=c.weight_kind,
        compute_dtype=c.compute_dtype, expected=c.expected,
    )  # fmt: skip


def refit(res: FitResult, theta0=None, free=None, **options) -> FitResult:
    """Fit the same model and data again: other start values `theta0` (flat, ravel order), other
    parameters held (`free`, a tuple of bools over the flat vector; held ones stay at theta0), or
    other `options` (method, cov, max_iter, tol). One compiled program per (free, options): a
    profile over many values of one parameter compiles once. It works in the parameters the program
    optimises: for a `fit_transformed` result, the unconstrained u (theta0 and the returned fit).
    """
    problem = res.problem.replace(**options) if options else res.problem
    if theta0 is None and problem.transforms is not None:
        theta0 = flat_inverse(problem.transforms.flat_bounds(res.params), res.coef)
    theta0 = res.coef if theta0 is None else theta0
    free = res.free if free is None else tuple(bool(f) for f in free)
    with jax.enable_x64(problem.dtype == jnp.float64):
        out = _run(problem, jnp.asarray(theta0, problem.dtype), free)
    return with_handles(out, _problem=problem)


# lnL recomputed at theta_hat on the data given to `attach` must equal the fit's to rounding
ATTACH_RTOL = 1e-9


def attach(res: FitResult, logpdf, data, **fit_options) -> FitResult:
    """Give a result its model and data back, so that it can refit (profiles, score tests).

    A fit taken out of a vmapped batch (`batched[17]`) or returned through `jit` holds no data. With
    the log-density, that fit's data and the options it was fitted with (weights, groups, ...),
    `attach` validates them as `fit` does and checks that they reproduce the fit's lnL at its
    estimate (else the data are not the ones it was fitted to) before it returns the result with
    its `problem`.
    """
    if np.ndim(res.status):
        raise ValueError("attach takes one fit; index the batch first (res[i])")
    if res.method != fit_options.pop("method", res.method):
        raise ValueError("attach: method= differs from the fit's")
    fit_options.setdefault("cov", res.cov_type)
    max_iter = fit_options.pop("max_iter", 100)
    with jax.enable_x64(True):
        params = jax.tree.map(np.asarray, res.params)
        check = fit(logpdf, params, data, method=res.method, max_iter=0, **fit_options)
        if check.names != res.names:
            raise ValueError("attach: the parameters of this log-density differ from the fit's")
        a, b = float(check.loglik), float(res.loglik)
    # a fit made in float32 (under vmap with 64-bit mode off) has lnL rounded at its precision
    rtol = max(ATTACH_RTOL, 100 * float(jnp.finfo(res.loglik.dtype).eps))
    if not abs(a - b) <= rtol * max(1.0, abs(b)):
        raise ValueError(
            f"attach: these data give lnL = {a:.12g} at the fit's estimate, but the fit has "
            f"{b:.12g}: they are not the data (or options) it was fitted to"
        )
    return with_handles(replace(res), _problem=check.problem.replace(max_iter=max_iter))


def _full_precision(program):
    """Trace `program` with every product at full precision: on GPUs XLA's default for float32 is TF32
    (a 10-bit mantissa), which leaves lnL and U too noisy for Newton to converge. Precision is fixed
    when the program is traced, so the context is entered there."""

    @wraps(program)
    def traced(*args, **kwargs):
        with jax.default_matmul_precision("highest"):
            return program(*args, **kwargs)

    return traced


@partial(
    jax.jit,
    static_argnames=(
        "logpdf",
        "spec",
        "names",
        "free",
        "method",
        "cov",
        "max_iter",
        "tol",
        "layout",
        "n_rows",
        "compute_dtype",
        "n_groups",
        "weight_kind",
        "expected",
    ),
)
@_full_precision
def _fit_compiled(
    theta0,
    data,
    weights,
    groups,
    *,
    logpdf,
    spec,
    names,
    free,
    method: Method,
    cov,
    max_iter,
    tol,
    layout,
    n_rows,
    n_groups,
    weight_kind,
    expected,
    compute_dtype,
) -> FitResult:
    batch = Batch(data, weights, groups)
    unravel = spec.unravel
    if compute_dtype is not None:  # float32 log-densities and derivatives, float64 sums and solves

        def unravel(flat):
            return jax.tree.map(lambda x: x.astype(compute_dtype), spec.unravel(flat))

    obj = Objective(logpdf, unravel, None, batch, layout, n_groups, weight_kind, expected)
    n_obs = jnp.sum(weights) if (weights is not None and weight_kind == "frequency") else n_rows
    bad_groups = (
        jnp.asarray(False) if groups is None else jnp.any((groups < 0) | (groups >= n_groups))
    )
    return solve(
        obj, theta0, free=free, spec=spec, names=names, method=method, cov=cov,
        max_iter=max_iter, tol=tol, n_obs=n_obs, bad_groups=bad_groups, expected=expected,
        compute_dtype=compute_dtype,
    )  # fmt: skip


def solve(
    obj, theta0, *, free, spec, names, method, cov, max_iter, tol, n_obs, bad_groups, expected,
    compute_dtype,
) -> FitResult:  # fmt: skip
    """Maximise, then the covariance, status and result, for any objective with `Objective`'s
    passes (`terms`, `newton`, `fisher`, `scores`, and `_replace(embed=...)`): `fit`'s, or the
    sum over size buckets of `fit_groups`. Traced inside the caller's compiled program."""
    free_idx = np.flatnonzero(free)
    all_free = len(free_idx) == len(free)

    def embed(theta_free):
        return theta_free if all_free else theta0.at[free_idx].set(theta_free)

    obj = obj._replace(embed=embed)
    st = maximize(
        obj.terms(method.curvature),
        theta0[free_idx],
        method=method,
        max_iter=max_iter,
        tol=tol,
        initial_matrix=lambda t: obj.newton(t).matrix,
        compute_dtype=compute_dtype,
    )

    theta_hat = embed(st.theta)
    full = obj._replace(embed=lambda t: t)
    reuse = all_free and method.curvature == "hessian"
    info = st.matrix if reuse else full.newton(theta_hat).matrix
    info_free = info[free_idx][:, free_idx]
    probe, may_be_separated = _separation_probe(st, info_free)
    sc = full.scores(theta_hat, embed(probe))
    if expected is None:
        expected_info = jnp.full_like(info, jnp.nan)
    elif method.curvature == "expected" and all_free:
        expected_info = st.matrix
    else:
        expected_info = full.fisher(theta_hat).matrix

    n_obs = jnp.asarray(n_obs, theta0.dtype)
    pieces = Pieces(
        info_free,
        sc.opg[free_idx][:, free_idx],
        sc.meat[free_idx][:, free_idx],
        sc.score_groups[:, free_idx],
        expected_info[free_idx][:, free_idx],
        n_obs,
    )
    # one eigen-decomposition of the information serves the status and every bread (XLA's eigh is
    # costly to compile); Newton's loop has it already for its final point
    info_eig = st.eig if reuse else equilibrated_eigh(info_free)
    cov_free, cov_status = covariance(KINDS[cov], pieces, information_eig=info_eig)
    _, info_status = psd_inverse(info_free, info_eig)
    separated = (
        may_be_separated & jnp.isfinite(sc.loglik_probe) & (sc.loglik_probe > st.loglik - 1.0)
    )

    status = jnp.select(
        [
            st.failed_start,
            ~jnp.isfinite(st.loglik) | ~jnp.isfinite(st.decrement),
            bad_groups,
            st.failed_search,
            (st.decrement > tol) & ~st.at_floor,
            separated,
            info_status != Status.SUCCESSFUL,
            cov_status != Status.SUCCESSFUL,
        ],
        [
            Status.NONFINITE_START,
            Status.NONFINITE,
            Status.BAD_GROUPS,
            Status.LINE_SEARCH_FAILED,
            Status.MAX_ITER,
            Status.SEPARATION,
            info_status,
            cov_status,
        ],
        Status.SUCCESSFUL,
    ).astype(jnp.int32)

    cov_full = embed_block(cov_free, free)
    cov_full = jnp.where(bad_groups & (cov == "cluster"), jnp.nan, cov_full)
    se = jnp.sqrt(jnp.diagonal(cov_full))
    return FitResult(
        params=spec.unravel(theta_hat),
        se=spec.unravel(se),
        cov=cov_full,
        loglik=st.loglik,
        score=sc.score,
        information=info,
        expected_information=expected_info,
        opg=sc.opg,
        meat=sc.meat,
        score_groups=sc.score_groups,
        n_obs=n_obs,
        n_iter=st.n_iter,
        n_damped=st.n_damped,
        scaled_gradient=st.decrement,
        status=status,
        names=names,
        free=free,
        method=method.name,
        cov_type=cov,
    )


def _separation_probe(st, info):
    """(probe point, candidate): is lnL still rising along a last search direction that is long?

    In (quasi-)complete separation the iterates run off to infinity along a direction v in which
    the information vanishes: the next step d stays long (relative to theta) and lnL keeps rising
    along it. The probe is theta + 4u, u = d / sqrt(d'I d), four end-of-fit standard errors along
    d: at a genuine maximum lnL falls there by ~8 (its quadratic model); when the maximum is not
    attained it does not fall. Requiring a long d keeps an exactly flat direction (collinearity,
    where d is rounding noise) out: that one is reported as a singular information matrix.
    """
    d = st.direction
    long_step = jnp.max(jnp.abs(d)) > _LONG_STEP * jnp.maximum(jnp.max(jnp.abs(st.theta)), 1.0)
    u = d / jnp.sqrt(jnp.abs(d @ info @ d))
    candidate = long_step & jnp.all(jnp.isfinite(u))
    return jnp.where(candidate, st.theta + 4.0 * u, st.theta), candidate
