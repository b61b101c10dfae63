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

from ._accumulate import (
    HostData,
    Layout,
    auto_chunk_size,
    leading_length,
    n_devices,
    place,
    platform_of,
)
from ._bounds import Transforms, flat_inverse
from ._covariance import KINDS, NEEDS, Pieces, check_kind, covariance, needs_rows, psd_inverse
from ._dependence import prepare_clusters, prepare_time
from ._fixed_effects import IndexSpec, check_index_data, check_rows, make_index_spec
from ._inputs import (
    check_logpdf,
    prepare_data,
    prepare_init,
    prepare_weights,
    raise_bad_start,
    raise_nonfinite_data,
)
from ._many import DENSE_LIMIT, default_block, fit_program
from ._objective import Batch, Objective
from ._perobs import observation_rows, select_of
from ._results import FitResult, embed_block, parameter_names, replace, with_handles
from ._scope import float64_scope, traced
from ._solvers import METHODS, Method, check_method, equilibrated_eigh, maximize
from ._status import Status
from ._subset import block_indices, subset_of

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
    cov_options: dict | None = None,
    groups=None,
    n_groups: int | None = None,
    time=None,
    weights=None,
    weight_kind: str = "frequency",
    fixed: dict | None = None,
    expected: tuple[Callable, Callable] | None = None,
    max_iter: int = 100,
    tol: float | None = None,
    chunk_size: int | None = None,
    subsample_start: float | None = None,
    devices=None,
    stream: bool = False,
    dtype=None,
    names: dict | None = None,
    throw: bool = False,
    se_for: list[str] | None = None,
    index: dict[str, str] | None = None,
) -> FitResult:
    """Maximum-likelihood fit of `sum_i w_i logpdf(theta, obs_i)`.

    Args:
      logpdf: `logpdf(theta, obs) -> scalar`, the log-density of ONE observation, written in JAX;
        `theta` has the structure of `init`, `obs` is one row of `data` (each leaf indexed on axis 0).
      init: start values, any pytree of floats. Matrices are ordered as `ravel_pytree(init)`; the
        names in the table come from the pytree paths (`b0`, `b[0]`, ...).
      data: any pytree of arrays sharing the leading axis N (numpy, jax or pandas columns).
      method: "newton" (safeguarded Newton-Raphson, default), "fisher" (scoring with the expected
        information; needs `expected`), "bhhh", "bfgs", or, for many parameters, "lbfgs" (optax's
        L-BFGS with its zoom line search) and "newton-cg" (truncated Newton: CG on Hessian-vector
        products), which never form a k x k matrix.
      cov: "hessian" | "expected" | "opg" | "sandwich" (= "HC0") | "HC1" | "cluster" | "HAC" (see
        `_covariance`); every kind can be recomputed later from the result,
        `res.with_cov(kind, **options)`.
      cov_options: the kind's options, e.g. `{"lags": 4}` for "HAC", `{"multi0": True}` for
        "cluster" (`res.with_cov("HAC", lags=4)` after the fit takes the same).
      groups: (N,) cluster ids, any integer or string labels; factorised to 0..G-1 on the host.
        Under `jit`/`vmap` pass integer codes 0..G-1 and the static `n_groups=G`. A mapping
        `{"firm": f, "year": t}` of (N,) labels clusters multi-way (host only): cov="cluster" is
        then Cameron-Gelbach-Miller's.
      time: (N,) times of the rows (numbers or datetimes, one row per period) for cov="HAC": the
        HAC sums run over the rows sorted by time; `np.arange(N)` when they are in order already.
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
      subsample_start: fraction of the rows (every 1/f-th row) fitted first, inside the same compiled
        program, to choose where the full-data solve starts: from there Newton needs 2-3
        full-data iterations instead of 5-6. The result is the same maximum at the same `tol`; if
        the subsample fit fails, or the full data's lnL is not finite at its estimate, the solve
        starts from `init`. None (default): 2% of the rows when N >= 250,000 (at least
        max(5,000, 50 k) rows), else off; 0 turns it off (a non-concave lnL whose start you chose
        with care: the subsample's maximum may lie near another mode). Not with `stream=True` or
        method="bfgs" (off by default there). `res.start_rows` (and `summary()`'s "Start" line)
        says how many rows chose the start (0: the solve started at `init`); `res.n_iter` counts
        the full-data iterations only. `refit` starts at its theta0, without a subsample.
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
      se_for: top-level keys of init whose standard errors are wanted (the others' are NaN): the
        covariance is computed, and stored, for that block only (a `SubsetResult`), by conjugate-
        gradient solves with Hessian-vector products when the parameters are many. Kinds
        "hessian", "sandwich" and "cluster". Needed by "lbfgs"/"newton-cg" beyond 500 parameters.
      index: {top-level key of init: data column}: `theta[key]` is a vector of effects of which
        row i uses only the entry `theta[key][obs[column]]` (fixed effects; integer codes
        0..G-1). The fit then eliminates them (Newton with a Schur complement, as fixest
        concentrates them out), drops levels whose outcome is constant, holds one reference level
        per connected component of two additive sets at 0, and reports the other parameters'
        covariance (see README, "Many parameters").

    Returns a `FitResult` (a `SubsetResult` with se_for, index, "lbfgs" or "newton-cg"); under
    `jax.vmap` a batched one with its own status for every fit.
    """
    entry = check_method(method)
    driver = entry.driver if index is None else entry.indexed
    if driver is None:
        takes = tuple(m.name for m in METHODS.values() if m.indexed)
        raise ValueError(f"method={method!r} does not take index=; use one of {takes}")
    subset = driver != "dense" or se_for is not None or index is not None
    if subset and cov in ("opg", "expected"):
        raise ValueError(
            f"cov={cov!r} needs the full k x k {cov} matrix; with se_for, index or a Hessian-free "
            "method choose 'hessian', 'sandwich' or 'cluster'"
        )
    if expected is None and (entry.curvature == "expected" or cov == "expected"):
        # a families Model (or a logpdf made with families.expected) carries its information
        expected = getattr(logpdf, "expected", None)
    has = {"groups": groups is not None, "expected": expected is not None, "rows": True,
           "time": time is not None and not (weights is not None and weight_kind == "frequency"),
           "hat": expected is not None}  # fmt: skip
    cov_options = dict(cov_options or {})
    check_kind(KINDS, cov, has=has, options=cov_options)
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
    if subsample_start is not None and not (
        isinstance(subsample_start, (int, float))
        and not isinstance(subsample_start, bool)
        and 0 <= subsample_start <= 0.5
    ):
        raise ValueError(
            f"subsample_start must be None or a fraction in [0, 0.5], got {subsample_start!r}"
        )
    if subsample_start and (stream or entry.quasi):
        raise ValueError(
            "subsample_start needs the rows on the device and a method with a curvature matrix "
            f"(newton, fisher, bhhh): not with stream=True or method={method!r}"
        )
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
            cov, max_iter, tol, chunk_size, subsample_start, devices, stream, dtype, solve_dtype,
            names, throw, is_traced, time=time, cov_options=tuple(sorted(cov_options.items())),
            many=(driver, se_for, index) if subset else None,
        )  # fmt: skip


def default_tol(dtype) -> float:
    """Convergence tolerance on the scaled gradient for the dtype the fit computes in: ~2 x the
    lnL still to gain, far below what moves an estimate by a visible fraction of a standard error
    (1e-12 in float64; 1e-6 in float32, whose lnL is rounded at ~1e-7 relative)."""
    return 1e-12 if jnp.dtype(dtype) == jnp.float64 else 1e-6


def _fit(
    logpdf, init, data, groups, n_groups, weights, weight_kind, fixed, expected, method, cov,
    max_iter, tol, chunk_size, subsample_start, devices, stream, dtype, solve_dtype, labels, throw,
    is_traced, *, time=None, cov_options=(), many=None,
):  # fmt: skip
    raw_init = init
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
    groups, n_groups, clusters = prepare_clusters(groups, n_groups, n, is_traced)
    order = prepare_time(time, n, is_traced)
    driver, block, index, k_work = "dense", None, None, sum(free)
    if many is not None:
        driver, se_for, index = many
        if index is not None:
            if stream or devices is not None:
                raise ValueError("index= runs on one device with the data in memory")
            index = make_index_spec(index, init, free, spec)
            check_index_data(index, data)
            k_work = len(index.b_free) + index.m
        elif driver != "dense":
            k_work = min(sum(free), 32)
        block = (
            default_block(index, free) if se_for is None else block_indices(raw_init, se_for, free)
        )
        if index is not None and set(block) & set(index.effect_index().tolist()):
            raise ValueError(
                "se_for names an indexed key: its effects are concentrated out and have no "
                "standard errors here (fit without index= for the effects' covariance)"
            )
        if driver != "dense" and index is None and len(block) > DENSE_LIMIT:
            raise ValueError(
                f"standard errors for {len(block)} parameters would need a "
                f"{len(block)} x {len(block)} covariance; name the parameters of interest with "
                "se_for=[top-level keys of init]"
            )
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
        layout = layout._replace(chunk_size=auto_chunk_size(local, k_work, platform_of(data)))
    if index is not None and not is_traced:
        check_rows(logpdf, index, spec, names, np.asarray(theta0), data)

    problem = Problem(
        logpdf=logpdf, spec=spec, names=names, data=data, weights=weights, groups=groups,
        n_groups=n_groups, weight_kind=weight_kind, expected=expected, method=method.name,
        cov=cov, max_iter=max_iter, tol=tol, subsample_start=subsample_start, layout=layout, n_rows=n,
        dtype=solve_dtype, compute_dtype=None if dtype == solve_dtype else dtype,
        clusters=clusters, order=order, cov_options=cov_options,
        driver=driver, block=block, index=index,
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
    return settle_throw(res, throw, is_traced, "jaxmle.fit")


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
    subsample_start: float | None = None  # see `fit`; None: automatic
    clusters: tuple[tuple[str, int], ...] = ()  # multi-way: (name, G) of each stacked clustering
    order: jax.Array | None = None  # the rows sorted by `time=` (HAC)
    cov_options: tuple = ()
    driver: str = "dense"  # the loop (`Method.driver`, or `.indexed` under index=)
    block: tuple[int, ...] | None = None  # flat indices of the covariance block (SubsetResult)
    index: IndexSpec | None = None

    def replace(self, **changes) -> Problem:
        return dataclasses.replace(self, **changes)

    def run(self, theta0, free, warm: bool = False) -> FitResult:
        """The fit's compiled program from theta0 (flat) with `free` parameters (a subclass of
        Problem, such as `fit_groups`' or `fit_mixed`'s, runs its own); `warm`: theta0 was chosen
        with care (a refit: no subsample start)."""
        return _run_fit(self, theta0, free, warm)

    @property
    def box(self) -> tuple | None:
        """(lower, upper) flat bounds the fit keeps theta in, or None (profiles stop at them)."""
        return None

    @property
    def device_data(self):
        """The data as the compiled program takes them (None when streamed from the host)."""
        return None if self.layout.host is not None else self.data


def _run(problem: Problem, theta0, free, warm: bool = False) -> FitResult:
    """Run the compiled fit; `warm`: theta0 was chosen with care (a refit), no subsample start."""
    return problem.run(theta0, free, warm=warm)


def _run_fit(problem: Problem, theta0, free, warm: bool = False) -> FitResult:
    c = problem
    index = None if c.index is None else c.index.with_free(free)
    block = None if c.block is None else tuple(i for i in c.block if free[i])
    if c.driver != "dense":
        return fit_program(
            theta0, c.device_data, c.weights, c.groups, logpdf=c.logpdf, spec=c.spec,
            names=c.names, free=free, method=c.method, driver=c.driver, cov=c.cov,
            max_iter=c.max_iter, tol=c.tol, layout=c.layout, n_rows=c.n_rows,
            n_groups=c.n_groups, weight_kind=c.weight_kind, compute_dtype=c.compute_dtype,
            block=block, index=index, dense_cov=sum(free) <= DENSE_LIMIT,
        )  # fmt: skip
    method = METHODS[c.method]
    stride = 1
    if c.layout.host is None and not method.quasi and c.max_iter > 0 and not warm:
        stride = subsample_stride(c.n_rows, sum(free), c.subsample_start)
    res = _fit_compiled(
        theta0, c.device_data, c.weights, c.groups, c.order, logpdf=c.logpdf, spec=c.spec,
        names=c.names, free=free, method=method, cov=c.cov, max_iter=c.max_iter,
        tol=c.tol, layout=c.layout, n_rows=c.n_rows, n_groups=c.n_groups,
        weight_kind=c.weight_kind, compute_dtype=c.compute_dtype, expected=c.expected,
        clusters=c.clusters, cov_options=c.cov_options, stride=stride,
    )  # fmt: skip
    return res if block is None else subset_of(res, block)


# The automatic subsample start (see `fit`): 2% of the rows, at least this many and 50 per parameter
# (enough for the subsample's estimate to lie within a few of its standard errors of the maximum),
# and only where it leaves at least 1 row in `_AUTO_MIN_STRIDE` (below that its passes cost more than
# the full-data iterations they save). Measured in benchmarks/RESULTS.md.
_AUTO_FRACTION = 0.02
_AUTO_MIN_ROWS = 5_000
_AUTO_ROWS_PER_PARAM = 50
_AUTO_MIN_STRIDE = 50


def subsample_stride(n_rows: int, k: int, fraction: float | None) -> int:
    """Every how-many-th row the start's subsample takes (1: no subsample start)."""
    if fraction is None:
        rows = max(_AUTO_FRACTION * n_rows, _AUTO_MIN_ROWS, _AUTO_ROWS_PER_PARAM * k)
        stride = int(n_rows // rows)
        return stride if stride >= _AUTO_MIN_STRIDE else 1
    return max(1, round(1 / fraction)) if fraction > 0 else 1


def finish(res: FitResult, problem: Problem, is_traced: bool, throw: bool, who: str) -> FitResult:
    """The end of a fit entry point built on `Problem.run` (fit_groups, fit_mixed): the refit
    handle on a host-side result, and `throw=True` as an error (under jit, `eqx.error_if`)."""
    if not is_traced:
        res = with_handles(res, _problem=problem)
    return settle_throw(res, throw, is_traced, f"jaxmle.{who}")


def refit(res: FitResult, theta0=None, free=None, **options) -> FitResult:
    """Fit the same model and data again: other start values `theta0` (flat, ravel order), other
    parameters held (`free`, a tuple of bools over the flat vector; held ones stay at theta0), or
    other `options` (method, cov, max_iter, tol). One compiled program per (free, options): a
    profile over many values of one parameter compiles once. It works in the parameters the program
    optimises: for a `fit_transformed` result, the unconstrained u (theta0 and the returned fit).
    A refit starts at theta0 itself (the fit's estimate or the caller's choice): no subsample start.
    """
    if "cov" in options and "cov_options" not in options:
        options["cov_options"] = ()  # the fit's kind options belong to its own kind
    problem = res.problem.replace(**options) if options else res.problem
    if theta0 is None and problem.transforms is not None:
        theta0 = flat_inverse(problem.transforms.flat_bounds(res.params), res.coef)
    theta0 = res.coef if theta0 is None else theta0
    free = res.free if free is None else tuple(bool(f) for f in free)
    with jax.enable_x64(problem.dtype == jnp.float64):
        out = _run(problem, jnp.asarray(theta0, problem.dtype), free, warm=True)
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
        "stride",
        "clusters",
        "cov_options",
    ),
)
@_full_precision
def _fit_compiled(
    theta0,
    data,
    weights,
    groups,
    order,
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
    stride,
    clusters,
    cov_options,
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
    sub_rows = 0
    if stride > 1:
        per_device = leading_length(data) // n_devices(layout)
        sub_rows = n_devices(layout) * -(-per_device // stride)
    return solve(
        obj, theta0, free=free, spec=spec, names=names, method=method, cov=cov,
        max_iter=max_iter, tol=tol, n_obs=n_obs, bad_groups=bad_groups, expected=expected,
        compute_dtype=compute_dtype, stride=stride, sub_rows=sub_rows, clusters=clusters,
        cov_options=cov_options, order=order,
    )  # fmt: skip


def solve(
    obj, theta0, *, free, spec, names, method, cov, max_iter, tol, n_obs, bad_groups, expected,
    compute_dtype, stride=1, sub_rows=0, clusters=(), cov_options=(), order=None,
) -> FitResult:  # fmt: skip
    """Maximise, then the covariance, status and result, for any objective with `Objective`'s
    passes (`terms`, `newton`, `fisher`, `scores`, and `_replace(embed=...)`): `fit`'s, or the
    sum over size buckets of `fit_groups`. Traced inside the caller's compiled program.
    `stride > 1`: a fit to every stride-th row (`sub_rows` rows) chooses the start."""
    free_idx = np.flatnonzero(free)
    all_free = len(free_idx) == len(free)

    def embed(theta_free):
        return theta_free if all_free else theta0.at[free_idx].set(theta_free)

    obj = obj._replace(embed=embed)
    start = theta0[free_idx]
    if stride > 1:  # a fit to every stride-th row chooses the start (see `fit`, subsample_start)
        sub = obj._replace(layout=obj.layout._replace(stride=stride))
        st0 = maximize(
            sub.terms(method.curvature), start, method=method, max_iter=max_iter, tol=tol,
            compute_dtype=compute_dtype,
        )  # fmt: skip
        sub_ok = _converged(st0, tol) & ~_long_step(st0)
        start = jnp.where(sub_ok, st0.theta, start)
    st = maximize(
        obj.terms(method.curvature),
        start,
        method=method,
        max_iter=max_iter,
        tol=tol,
        initial_matrix=lambda t: obj.newton(t).matrix,
        compute_dtype=compute_dtype,
        fallback=theta0[free_idx] if stride > 1 else None,
    )

    # the subsample's estimate was the start: it converged, and lnL was finite there
    start_rows = jnp.where(sub_ok & ~st.restarted, sub_rows, 0) if stride > 1 else jnp.asarray(0)
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
        clusters=tuple(g for _, g in clusters),
    )
    entry = KINDS[cov]
    if needs_rows(entry):  # per-observation terms, only for a kind that needs them
        select = select_of(names, free)
        pieces = pieces._replace(rows=observation_rows(full, theta_hat, free_idx, order, select))
    # one eigen-decomposition of the information serves the status and every bread (XLA's eigh is
    # costly to compile); Newton's loop has it already for its final point
    info_eig = st.eig if reuse else equilibrated_eigh(info_free)
    cov_free, cov_status = covariance(entry, pieces, info_eig, **dict(cov_options))
    _, info_status = psd_inverse(info_free, info_eig)
    separated = (
        may_be_separated & jnp.isfinite(sc.loglik_probe) & (sc.loglik_probe > st.loglik - 1.0)
    )

    status = fit_status(
        st, tol, separated=separated, bad_groups=bad_groups, info_status=info_status,
        cov_status=cov_status,
    )  # fmt: skip

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
        start_rows=start_rows.astype(jnp.int32),
        scaled_gradient=st.decrement,
        status=status,
        names=names,
        free=free,
        method=method.name,
        cov_type=cov,
        cov_options=cov_options,
        clusters=clusters,
    )


def fit_status(st, tol, *, separated, info_status, bad_groups=False, cov_status=None):
    """The fit's `Status`: the first condition that holds names it (a chain of wheres: jnp.select's
    index arithmetic asks for int64 and warns when JAX's 64-bit flag is off under the user's vmap).
    One place for every program that ends in `maximize` (fit, fit_groups, the bootstrap's refits)."""
    checks = [
        (st.failed_start, Status.NONFINITE_START),
        (~jnp.isfinite(st.loglik) | ~jnp.isfinite(st.decrement), Status.NONFINITE),
        (bad_groups, Status.BAD_GROUPS),
        (st.failed_search, Status.LINE_SEARCH_FAILED),
        (~_converged(st, tol), Status.MAX_ITER),
        (separated, Status.SEPARATION),
        (info_status != Status.SUCCESSFUL, info_status),
    ]
    if cov_status is not None:
        checks.append((cov_status != Status.SUCCESSFUL, cov_status))
    status = jnp.asarray(Status.SUCCESSFUL, jnp.int32)
    for condition, code in reversed(checks):
        status = jnp.where(condition, jnp.asarray(code).astype(jnp.int32), status)
    return status


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
    u = d / jnp.sqrt(jnp.abs(d @ info @ d))
    candidate = _long_step(st) & jnp.all(jnp.isfinite(u))
    return jnp.where(candidate, st.theta + 4.0 * u, st.theta), candidate


def _long_step(st):
    """Is the last Newton step long relative to theta (iterates still travelling)?"""
    d = st.direction
    return jnp.max(jnp.abs(d)) > _LONG_STEP * jnp.maximum(jnp.max(jnp.abs(st.theta)), 1.0)


def _converged(st, tol):
    """The loop stopped at a maximum: scaled gradient below tol, or at lnL's rounding floor."""
    ok = ~st.failed_start & ~st.failed_search & jnp.isfinite(st.loglik) & jnp.isfinite(st.decrement)
    return ok & ((st.decrement <= tol) | st.at_floor)


def settle_throw(res, throw: bool, is_traced: bool, who: str):
    """`throw=True`: a failed fit raises (on the host) or becomes `eqx.error_if` (under a trace)."""
    if throw:
        if is_traced:
            return eqx.error_if(res, ~res.converged, f"{who} did not succeed (see res.status)")
        if not bool(res.converged):
            raise RuntimeError(f"{who}: {res.message}")
    return res
