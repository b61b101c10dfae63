"""bootstrap(): the bootstrap distribution of theta_hat, every replication refitted in one program.

For r = 1..R a replication data set is drawn and theta*_r = argmax lnL(theta; data*_r) is refitted,
warm-started at theta_hat, through ONE compiled program (`_refits`: jit(vmap(draw -> fit))):

    pairs       rows drawn with replacement: the refit maximises sum_i c_ri w_i l_i(theta), where
                c_ri counts how often row i was drawn (frequency weights, so every replication has
                the shapes of the original data)                      R `boot(d, stat, R)`
    cluster     whole clusters drawn with replacement: c_ri = count of row i's cluster
    parametric  data*_r = simulate(key_r, theta_hat) (as in `jm.monte_carlo`)
                                                                    R `boot(d, stat, R, sim = "parametric")`
    score       no refits (Kline and Santos 2012): theta*_r = theta_hat + sum_i v_ri L_i, with
                L_i = A^-1 w_i u_i (A = -H at theta_hat) and v_ri iid multipliers of mean 0 and
                variance 1 (Rademacher by default), one per row or, with clusters, per cluster

Replication r draws with `jax.random.fold_in(key, r)` (the draws do not depend on the batch size or
on R); `indices=` (R, N) [or (R, G)] replays given resample indices instead (R `boot.array(b,
indices = TRUE) - 1`). A refit that does not succeed is counted by status and left out of every
summary; when more than `max_failed` of the replications done so far failed, the bootstrap stops
with an error that says how many failed and why.

The influence values that the BCa acceleration needs, L_i (per row; per cluster for the cluster
kind), are by default the infinitesimal jackknife of the MLE, L_i = A^-1 w_i u_i (exact for a smooth
M-estimator; R `empinf(type = "inf")` approximates it by numerical derivatives; `L = estfun(m) %*%
bread(m) / n` in R's sandwich package), or with `influence="jackknife"` the leave-one-out refits,
L_i = (m - 1)(theta_hat - theta_hat_(-i)) (R `empinf(type = "jack")`). The acceleration is scale-free.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._bootresult import BootstrapResult
from ._bounds import _derivatives, flat_forward, flat_inverse
from ._inputs import explain_trace_error, prepare_groups
from ._montecarlo import _as_key, _replication_keys
from ._refits import ProblemKey, batch_size_for, failure_lines, run_batches
from ._results import FitResult
from ._scope import traced
from ._status import Status

PyTree = Any
KINDS = ("pairs", "cluster", "parametric", "score")
INFLUENCE = ("infinitesimal", "jackknife")
DEFAULT_REPS = 2000
# A failure share above this after at least `_MIN_DONE` replications stops the bootstrap.
MAX_FAILED = 0.5
_MIN_DONE = 20


def _rademacher(key, n, dtype):
    return jax.random.rademacher(key, (n,), dtype)


def _mammen(key, n, dtype):
    """Mammen's two-point weights: -(s-1)/2 w.p. (s+1)/(2s), (s+1)/2 otherwise, s = sqrt 5."""
    s = np.sqrt(5.0)
    low = jax.random.bernoulli(key, (s + 1) / (2 * s), (n,))
    return jnp.where(low, -(s - 1) / 2, (s + 1) / 2).astype(dtype)


def _normal(key, n, dtype):
    return jax.random.normal(key, (n,), dtype)


WILD = {"rademacher": _rademacher, "mammen": _mammen, "normal": _normal}


def bootstrap(
    res: FitResult,
    n_boot: int | None = None,
    key=0,
    kind: str = "pairs",
    *,
    groups=None,
    simulate: Callable[[jax.Array, PyTree], PyTree] | None = None,
    indices=None,
    influence: str = "infinitesimal",
    wild: str = "rademacher",
    batch_size: int | None = None,
    progress: bool = True,
    max_failed: float = MAX_FAILED,
) -> BootstrapResult:
    """The bootstrap distribution of the estimates of a fitted model (see the module docstring).

    Args:
      res: a converged host-side fit (`jm.fit`, `jm.glm`, `jm.fit_transformed`, ...) holding its
        model and data (`res.problem`).
      n_boot: replications R (default 2000, or the rows of `indices`).
      key: a JAX key or an int seed; replication r uses `jax.random.fold_in(key, r)`.
      kind: "pairs" | "cluster" | "parametric" | "score".
      groups: cluster labels (N,) for kind="cluster" (default: the fit's own `groups`); with
        kind="score", one multiplier per cluster (default: the fit's clusters, if it has them).
      simulate: `simulate(key, theta) -> data` for kind="parametric": one data set with the
        structure and shapes of the data the fit was given (`res.problem.data`), drawn at the
        parameters `theta` (shaped like `res.params`); written in JAX.
      indices: (R, N) row indices (pairs) or (R, G) cluster indices (cluster), 0-based, replayed
        instead of random draws (R `boot.array(b, indices = TRUE) - 1`).
      influence: "infinitesimal" (default, A^-1 w_i u_i) or "jackknife" (one refit per row or
        cluster left out): the influence values behind the BCa acceleration.
      wild: the multipliers of kind="score": "rademacher" (+-1), "mammen", "normal".
      batch_size: replications per compiled call (default: sized to the data).
      progress: a tqdm progress bar over the batches (with the failures so far).
      max_failed: stop with an error once more than this share of the replications failed.

    Returns a `BootstrapResult`: `.se`, `.ci(method, level, g=None)`, `.apply(g)`, `.summary()`,
    `.to_frame()`, `.plot()`. Equals R `boot::boot` + `boot.ci(type = c("perc", "basic", "bca"))`
    on the same replications (BCa with `L =` the same influence values).
    """
    problem = _check(res, kind, simulate, indices, influence, wild, max_failed)
    batch_size_for(1, 1, batch_size)  # a bad batch_size is refused before any work
    n_boot = _n_boot(n_boot, indices)
    key = _as_key(key)
    with jax.enable_x64(problem.dtype == jnp.float64):
        units, n_units = _units(res, problem, kind, groups)
        t0 = np.asarray(res.coef)
        rows = _row_influence(res, problem)
        if influence == "jackknife":
            L = _jackknife(res, problem, units, n_units, rows, batch_size)
        else:
            L = rows if units is None else _per_unit(rows, units, n_units)
        if kind == "score":
            reps = _multiplier(key, n_boot, jnp.asarray(L), jnp.asarray(t0), wild, batch_size,
                               progress)  # fmt: skip
            out = {"coef": reps, "status": np.zeros(n_boot, np.int32),
                   "n_iter": np.zeros(n_boot, np.int32)}  # fmt: skip
        elif kind == "parametric":
            out = _parametric(res, problem, key, n_boot, simulate, batch_size, progress, max_failed)
        else:
            if indices is None:
                args, prepare = (
                    _replication_keys(key, jnp.arange(n_boot)),
                    partial(_drawn, n_units=n_units),
                )
            else:
                args, prepare = _check_indices(indices, n_units, kind), _given
            out = _refit_all(res, problem, args, units, n_units, rows, prepare, batch_size, progress,
                             max_failed, kind)  # fmt: skip
    return BootstrapResult(
        estimate=t0,
        replicates=np.asarray(out["coef"]),
        status=np.asarray(out["status"]),
        n_iter=np.asarray(out["n_iter"]),
        influence=np.asarray(L),
        fit_cov=np.asarray(res.cov),
        free=np.asarray(res.free),
        names=res.names,
        params_def=_params_def(res.params),
        kind=kind,
        detail=_detail(kind, n_units, units is not None, wild, influence),
        cov_type=res.cov_type,
    )


# ------------------------------------------------------------------------ host-side checks


def _check(res, kind, simulate, indices, influence, wild, max_failed):
    if not isinstance(res, FitResult):
        raise TypeError(f"bootstrap takes a fitted result (jm.fit, jm.glm), got {type(res)}")
    if traced(res.loglik) or np.ndim(res.status):
        raise ValueError(
            "bootstrap refits the model, so it needs one host-side fit with its data; this result "
            "is a batch or a traced value: take one fit, res[i], and jm.attach its data"
        )
    problem = res.problem  # raises, saying how to give the result its data back
    if kind not in KINDS:
        raise ValueError(f"unknown bootstrap kind {kind!r}; choose one of {KINDS}")
    if not bool(res.converged):
        raise ValueError(f"bootstrap needs a converged fit to start from; this one: {res.message}")
    if problem.layout.host is not None or problem.layout.mesh is not None:
        raise ValueError(
            "bootstrap refits on one device; this fit streams its data from the host or shards "
            "them over devices: fit the data in device memory (without stream=/devices=) first"
        )
    if kind == "parametric" and not callable(simulate):
        raise ValueError('kind="parametric" needs simulate=, a function simulate(key, theta)')
    if kind != "parametric" and simulate is not None:
        raise ValueError(f'simulate= is for kind="parametric", not kind={kind!r}')
    if indices is not None and kind not in ("pairs", "cluster"):
        raise ValueError(f'indices= replays resamples of kind "pairs" or "cluster", not {kind!r}')
    if influence not in INFLUENCE:
        raise ValueError(f"unknown influence {influence!r}; choose one of {INFLUENCE}")
    if wild not in WILD:
        raise ValueError(f"unknown wild= multipliers {wild!r}; choose one of {tuple(WILD)}")
    if not (isinstance(max_failed, (int, float)) and 0.0 <= max_failed <= 1.0):
        raise ValueError(f"max_failed must be a share between 0 and 1, got {max_failed!r}")
    if kind == "score" and not np.isfinite(np.asarray(res.cov)).all():
        raise ValueError(
            "the score bootstrap needs the inverse information A^-1, but this fit's covariance is "
            f"not finite ({res.message})"
        )
    return problem


def _n_boot(n_boot, indices) -> int:
    if indices is not None:
        rows = int(np.shape(indices)[0]) if np.ndim(indices) == 2 else -1
        if rows < 1:
            raise ValueError(
                f"indices must be an (R, N) array of row indices, got {np.shape(indices)}"
            )
        if n_boot is not None and n_boot != rows:
            raise ValueError(f"n_boot={n_boot} but indices holds {rows} replications")
        return rows
    n_boot = DEFAULT_REPS if n_boot is None else n_boot
    if isinstance(n_boot, bool) or not (isinstance(n_boot, (int, np.integer)) and n_boot >= 2):
        raise ValueError(f"n_boot must be an int >= 2, got {n_boot!r}")
    return int(n_boot)


def _units(res, problem, kind, groups):
    """(cluster code of every row or None, number of resampling units: rows or clusters)."""
    clustered = kind == "cluster" or (kind == "score" and (groups is not None or
                                                           problem.groups is not None))  # fmt: skip
    if not clustered:
        if groups is not None:
            raise ValueError(f'groups= is for kind="cluster" or "score", not kind={kind!r}')
        return None, problem.n_rows
    if groups is None:
        if problem.groups is None:
            raise ValueError(
                'kind="cluster" resamples clusters: pass groups= (N labels), or fit with groups='
            )
        return problem.groups, problem.n_groups
    codes, n_groups = prepare_groups(groups, None, problem.n_rows, False)
    return codes, n_groups


def _start(res, problem):
    """theta_hat as the fit program optimises it (the unconstrained u of a transformed fit)."""
    if problem.transforms is None:
        return res.coef
    return flat_inverse(problem.transforms.flat_bounds(res.params), res.coef)


def _natural(problem, res, coef):
    """Replications back on the natural scale of a transformed fit."""
    if problem.transforms is None:
        return coef
    bounds = problem.transforms.flat_bounds(res.params)
    return np.asarray(jax.jit(jax.vmap(partial(flat_forward, bounds)))(jnp.asarray(coef)))


def _params_def(params):
    leaves, treedef = jax.tree.flatten(params)
    return treedef, tuple(np.shape(x) for x in leaves)


def _detail(kind, n_units, clustered, wild, influence):
    unit = f"{n_units} clusters" if clustered else f"{n_units} rows"
    what = {"pairs": "rows resampled", "cluster": "clusters resampled",
            "parametric": "data simulated at theta_hat",
            "score": f"score multipliers ({wild})"}[kind]  # fmt: skip
    return f"{what}, {unit}; BCa influence: {influence}"


# ------------------------------------------------------------------------ influence values


def _row_influence(res, problem) -> np.ndarray:
    """(N, k) infinitesimal-jackknife values L_i = A^-1 w_i u_i at theta_hat, zero for held
    parameters (the natural scale of a transformed fit)."""
    key = ProblemKey(problem)
    free = np.asarray(res.free)
    w = problem.weights
    scores = _row_scores(jnp.asarray(_start(res, problem)), problem.data, key=key)
    if problem.transforms is not None:  # scores in x: d l / d x = (d l / d u) (du/dx)
        scores = scores * _du_dx(problem, res)
    scores = scores if w is None else scores * w[:, None]
    A = np.asarray(res.information)[np.ix_(free, free)]
    L = np.zeros((problem.n_rows, len(free)))
    L[:, free] = np.linalg.solve(A, np.asarray(scores)[:, free].T).T
    return L


def _per_unit(rows, units, n_units) -> np.ndarray:
    return np.asarray(jax.ops.segment_sum(jnp.asarray(rows), units, num_segments=n_units))


def _du_dx(problem, res):
    return _derivatives(problem.transforms.flat_bounds(res.params), res.coef)[0]


@partial(jax.jit, static_argnames=("key",))
def _row_scores(theta, data, *, key: ProblemKey):
    """u_i = d l_i / d theta at theta, (N, k), chunk by chunk."""

    def one(obs):
        return jax.grad(lambda t: key.logpdf(key.spec.unravel(t), obs))(theta)

    chunk = min(key.layout.chunk_size or 4096, key.n_rows)
    return jax.lax.map(one, data, batch_size=chunk).astype(theta.dtype)


def _jackknife(res, problem, units, n_units, rows, batch_size) -> np.ndarray:
    """L_j = (m - 1)(theta_hat - theta_hat_(-j)), R `empinf(type = "jack")` (`usual.jack`)."""
    drops = jnp.arange(n_units, dtype=jnp.int32)  # all units once, unit j left out
    prepare = partial(_leave_out, n_units=n_units)
    out = _refit_all(res, problem, drops, units, n_units, rows, prepare, batch_size, False, 1.0,
                     "jackknife")  # fmt: skip
    bad = out["status"] != Status.SUCCESSFUL
    if bad.any():
        raise ValueError(
            f"the jackknife refits failed for {int(bad.sum())} of {n_units} units left out:\n"
            + "\n".join(failure_lines(out["status"], "units"))
            + '\nuse influence="infinitesimal"'
        )
    return (n_units - 1) * (np.asarray(res.coef)[None, :] - out["coef"])


# ------------------------------------------------------------------------ replications
#
# Resampling replications (pairs, cluster, the jackknife) all enter ONE compiled refit program
# as (indices of the units drawn, a unit left out or -1): the fit maximises sum_i c_i w_i l_i with
# c_i the count of row i's unit. The indices are made outside it, per batch (drawn from keys,
# given, or every unit once), so the three share that program.


def resample_indices(key, n_units: int):
    """The (n_units,) indices of one pairs/cluster resample drawn with `key` (int32, 0-based)."""
    return jax.random.randint(key, (n_units,), 0, n_units, dtype=jnp.int32)


@partial(jax.jit, static_argnames="n_units")
def _drawn(keys, *, n_units):
    idx = jax.vmap(resample_indices, in_axes=(0, None))(keys, n_units)
    return idx, jnp.full(keys.shape[0], -1, jnp.int32)


@jax.jit
def _given(idx):
    return idx, jnp.full(idx.shape[0], -1, jnp.int32)


@partial(jax.jit, static_argnames="n_units")
def _leave_out(drops, *, n_units):
    every = jnp.broadcast_to(jnp.arange(n_units, dtype=jnp.int32), (drops.shape[0], n_units))
    return every, drops


@dataclasses.dataclass(frozen=True)
class _Counts:
    """Refit inputs of one resample: frequency weights c_i w_i, c_i the count of row i's unit, and
    the start theta_hat + sum_i c_i L_i: one Newton step of the resample's lnL from theta_hat with
    the full sample's information (sum_i w_i u_i = 0 there), the score bootstrap's replication. It
    saves the refit about one iteration; where lnL is not finite there, the start is theta_hat."""

    n_units: int
    logpdf: Callable
    unravel: Callable

    def __call__(self, arg, shared):
        idx, drop = arg
        theta_hat, L, data, weights, units = shared
        counts = jnp.zeros(self.n_units, theta_hat.dtype).at[idx].add(1.0)
        counts = jnp.where(jnp.arange(self.n_units) == drop, 0.0, counts)
        c = counts[units]
        w = c if weights is None else c * weights
        step = theta_hat + c @ L
        ll = jnp.sum(w * jax.vmap(self.logpdf, in_axes=(None, 0))(self.unravel(step), data))
        return jnp.where(jnp.isfinite(ll), step, theta_hat), data, w, None


def _check_indices(indices, n_units, kind):
    idx = np.asarray(indices)
    if idx.shape[1:] != (n_units,) or not np.issubdtype(idx.dtype, np.integer):
        what = "clusters" if kind == "cluster" else "rows"
        raise ValueError(
            f"indices must be an (R, {n_units}) integer array of {what} (0-based), got "
            f"{idx.shape} {idx.dtype}"
        )
    if idx.min() < 0 or idx.max() >= n_units:
        raise ValueError(f"indices must lie in 0..{n_units - 1} (0-based; R's are 1-based)")
    return jnp.asarray(idx, jnp.int32)


def _refit_all(res, problem, args, units, n_units, rows, prepare, batch_size, progress,
               max_failed, kind):  # fmt: skip
    units = jnp.arange(problem.n_rows, dtype=jnp.int32) if units is None else units
    L = rows if problem.transforms is None else rows * np.asarray(_du_dx(problem, res))
    shared = (_start(res, problem), jnp.asarray(L), problem.data, problem.weights, units)
    draw = _Counts(n_units, problem.logpdf, problem.spec.unravel)
    return _run(res, problem, args, shared, draw, prepare, batch_size, progress, max_failed, kind)


@dataclasses.dataclass(frozen=True)
class _Simulate:
    """A parametric replication: data = simulate(key, theta_hat), in the fit's dtypes."""

    simulate: Callable
    dtypes: tuple

    def __call__(self, key, shared):
        theta0, params, weights = shared
        data = self.simulate(key, params)
        leaves, treedef = jax.tree.flatten(data)
        cast = [jnp.asarray(x).astype(d) for x, d in zip(leaves, self.dtypes, strict=True)]
        return theta0, jax.tree.unflatten(treedef, cast), weights, None


def _parametric(res, problem, key, n_boot, simulate, batch_size, progress, max_failed):
    _check_simulate(simulate, key, res.params, problem.data)
    dtypes = tuple(x.dtype for x in jax.tree.leaves(problem.data))
    keys = _replication_keys(key, jnp.arange(n_boot))
    shared = (_start(res, problem), res.params, problem.weights)
    return _run(res, problem, keys, shared, _Simulate(simulate, dtypes), None, batch_size,
                progress, max_failed, "parametric")  # fmt: skip


def _check_simulate(simulate, key, params, data):
    try:
        out = jax.eval_shape(simulate, key, params)
    except Exception as e:
        explain_trace_error(e, "simulate(key, theta) at theta = theta_hat")
        raise
    shapes = [x.shape for x in jax.tree.leaves(data)]
    got = [x.shape for x in jax.tree.leaves(out)]
    if jax.tree.structure(out) != jax.tree.structure(data) or got != shapes:
        raise ValueError(
            "simulate(key, theta) must return data with the structure and shapes of the data the "
            f"fit was given (res.problem.data): the fit has {jax.tree.structure(data)} with "
            f"shapes {shapes}, simulate returned {jax.tree.structure(out)} with shapes {got}"
        )


def _run(res, problem, args, shared, draw, prepare, batch_size, progress, max_failed, kind):
    """Every replication through the one refit program (held cluster codes dropped: the refits
    need estimates only), stopping early when most fail; estimates on the natural scale."""
    key = ProblemKey(problem, groups=None, n_groups=0, cov="hessian")
    n_reps = len(jax.tree.leaves(args)[0])
    size = batch_size_for(n_reps, 8 * problem.n_rows * (len(res.free) + 2), batch_size)

    def check(done, status):
        failed = int(np.sum(status != Status.SUCCESSFUL))
        if done >= min(_MIN_DONE, n_reps) and failed > max_failed * done:
            raise RuntimeError(
                f"bootstrap stopped: {failed} of the first {done} {kind} replications failed "
                f"(more than max_failed = {max_failed:g}):\n"
                + "\n".join(failure_lines(status))
                + "\nthe estimates are not stable under resampling; the partial replications "
                "are in this exception's .partial"
            )

    out = run_batches(args, shared, key=key, free=res.free, draw=draw, batch_size=size,
                      progress=progress, desc=f"bootstrap ({kind})", check=check,
                      prepare=prepare)  # fmt: skip
    out["coef"] = _natural(problem, res, out["coef"])
    return out


@partial(jax.jit, static_argnames=("wild",))
def _multiplier_batch(keys, L, t0, *, wild):
    v = jax.vmap(lambda k: WILD[wild](k, L.shape[0], L.dtype))(keys)
    return t0 + v @ L


def _multiplier(key, n_boot, L, t0, wild, batch_size, progress):
    """theta*_r = theta_hat + v_r' L for every replication (the score bootstrap), in batches."""
    from tqdm.auto import tqdm

    keys = _replication_keys(key, jnp.arange(n_boot))
    size = batch_size_for(n_boot, 8 * L.shape[0], batch_size)
    pad = -n_boot % size
    keys = jnp.concatenate([keys, jnp.repeat(keys[-1:], pad, 0)]) if pad else keys
    out = []
    with tqdm(total=n_boot, desc="bootstrap (score)", disable=not progress, leave=False) as bar:
        for b in range(0, n_boot, size):
            out.append(np.asarray(_multiplier_batch(keys[b : b + size], L, t0, wild=wild)))
            bar.update(min(size, n_boot - b))
    return np.concatenate(out)[:n_boot]
