"""monte_carlo(): simulate -> fit -> summarise, in compiled batches of replications.

For r = 1..R: data_r = simulate(key_r, theta_0), theta_hat_r = argmax lnL(theta; data_r), with the
standard errors of every requested covariance kind. Over the successful fits (status 0; the others
are counted and listed, never dropped silently), for parameter j:

    bias_j = mean_r theta_hat_rj - theta_0j            Monte Carlo s.e. sd_j / sqrt(R)
    sd_j   = sd_r theta_hat_rj  (divisor R - 1)        the spread the standard errors should match
    se_j(kind) = mean_r se_rj(kind),    rmse_j = sqrt(mean_r (theta_hat_rj - theta_0j)^2)
    coverage_j(kind) = mean_r 1{|theta_hat_rj - theta_0j| <= z_{(1+level)/2} se_rj(kind)}
                                                       Monte Carlo s.e. sqrt(c (1 - c) / R)
    Wald, joint:  (theta_hat_r - theta_0)' V_r^-1 (theta_hat_r - theta_0) ~ chi2(k)
    with `fixed` (q held parameters): LR = 2 (lnL_r - lnL_r^restricted) ~ chi2(q), and the Wald
    test of the same restriction, (theta_hat_rR - r)' [V_r,RR]^-1 (theta_hat_rR - r) ~ chi2(q)

Replication r draws with `jax.random.fold_in(key, r)`: its data depend neither on the batch size
nor on R (a longer study with the same key repeats the replications of a shorter one). Batches run
through ONE compiled program, `jit(vmap(simulate -> fit -> covariances -> statistics))`, split over
the devices when there are several; the last batch is padded with copies of the final key and the
padding dropped. Simulated data live only inside that program.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ._covariance import KINDS, check_kind
from ._fit import fit as _fit
from ._inputs import explain_trace_error, is_trace_error
from ._mcresult import MonteCarloResult
from ._results import parameter_names
from ._solvers import check_method
from ._status import Status
from ._testing import quadratic_form

PyTree = Any

# Replications per batch on CPU: enough data per call to amortise dispatch, few enough that a batch's
# data stay in cache across the Newton iterations. Measured on logit data sets of 48 KB (2-core
# EPYC, 512 KB L2 per core): 160 CPU-us per fit in batches of 16-32, 177 at 64, 345 at 2,048.
_CPU_BATCH_BYTES = 2**20
_ACCELERATOR_BATCH_BYTES = 256 * 2**20  # wide batches keep an accelerator busy; memory caps them
_MAX_BATCH = 4096
_MEMORY_SHARE = 0.5  # one batch may use at most this share of the memory free at the start


# ----------------------------------------------------------------------------------- the study


class _Model(NamedTuple):
    """Everything static about one replication: the compiled program is keyed on it."""

    simulate: Callable
    logpdf: Callable
    covs: tuple[str, ...]
    fixed_keys: tuple[str, ...]
    restricted_idx: tuple[int, ...]
    groups: Any
    fit_options: tuple  # sorted (name, value) pairs passed to jm.fit


def monte_carlo(
    simulate: Callable[[jax.Array, PyTree], PyTree],
    logpdf: Callable[[PyTree, PyTree], jax.Array],
    theta_true: PyTree,
    n_reps: int,
    key,
    *,
    init: PyTree = None,
    covs: Sequence[str] | None = None,
    fixed: dict | Sequence[str] | None = None,
    level: float = 0.95,
    method: str = "newton",
    expected: tuple[Callable, Callable] | None = None,
    groups: str | Callable | None = None,
    n_groups: int | None = None,
    max_iter: int = 100,
    tol: float | None = None,
    chunk_size: int | None = None,
    batch_size: int | None = None,
    devices: Sequence[jax.Device] | None = None,
    progress: bool = True,
    dtype=None,
) -> MonteCarloResult:
    """Simulate `n_reps` data sets from theta_true, fit each by ML, record what a study needs.

    Args:
      simulate: `simulate(key, theta) -> data`: one data set (a pytree whose leaves share the
        leading axis N) drawn with the JAX key at the parameters `theta` (shaped like theta_true);
        written in JAX, since it is traced, vmapped and compiled.
      logpdf: the log-density of ONE observation, as for `jm.fit`.
      theta_true: the true parameters (a pytree; a dict when `fixed` is used).
      n_reps: the number of replications R.
      key: a JAX key (`jax.random.key(seed)`) or an int seed; replication r uses
        `jax.random.fold_in(key, r)`, whatever the batch size or R.
      init: start values of every fit (default theta_true).
      covs: the covariance kinds whose standard errors, coverage and Wald tests are recorded;
        default hessian, opg, sandwich, plus expected (given `expected`), cluster (given `groups`).
      fixed: a restriction to test by likelihood ratio and by Wald: `{key: value}` over top-level
        keys of theta_true, or a list of keys held at their true values (then the rejection
        rates are the tests' sizes; other values give their power).
      level: the nominal coverage of the intervals; the tests run at size 1 - level.
      method, expected, max_iter, tol, chunk_size, dtype: as for `jm.fit`.
      groups, n_groups: cluster codes for cov="cluster": a top-level key of the simulated data or
        `groups(data) -> (N,)` integer codes 0..G-1, and the static number of clusters G.
      batch_size: replications per compiled call. Default: ~4 MiB of simulated data per batch on
        CPU (cache-sized), ~256 MiB on an accelerator, shrunk if one batch would need more than
        half the free memory; a batch_size you give that would is refused (MemoryError naming
        one that fits) before any work.
      devices: where the batches run (default: every local device); with several, each batch is
        split over them in one SPMD program. On CPU, to use every core this way, start Python with
        XLA_FLAGS=--xla_force_host_platform_device_count=<cores> set before JAX is imported.
      progress: a tqdm progress bar over the batches (it shows the failed fits so far).

    Returns a `MonteCarloResult` of per-replication estimates, SEs, test statistics and statuses;
    `summary()`, `to_frame()`, `plot_distributions()` and `plot_coverage()` present them.
    """
    dtype = jnp.dtype("float64" if dtype is None else dtype)
    if dtype not in (jnp.dtype("float64"), jnp.dtype("float32")):
        raise ValueError(f"dtype must be float64 or float32, got {dtype}")
    if not callable(simulate) or not callable(logpdf):
        raise TypeError(
            "simulate and logpdf must be functions: simulate(key, theta), logpdf(theta, obs)"
        )
    if isinstance(n_reps, bool) or not (isinstance(n_reps, int | np.integer) and n_reps >= 1):
        raise ValueError(f"n_reps must be a positive int, got {n_reps!r}")
    if batch_size is not None and not (
        isinstance(batch_size, int | np.integer) and batch_size >= 1
    ):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level!r}")
    check_method(method)
    if groups is not None and not (isinstance(n_groups, int) and n_groups >= 2):
        raise ValueError("groups= needs n_groups=G, the static number of clusters (an int >= 2)")
    covs = _check_covs(covs, expected, groups)
    devices = _check_devices(devices)
    with jax.enable_x64(True) if dtype == jnp.float64 else nullcontext():
        theta_true = jax.tree.map(lambda x: jnp.asarray(x, dtype), theta_true)
        init = theta_true if init is None else jax.tree.map(lambda x: jnp.asarray(x, dtype), init)
        if jax.tree.structure(init) != jax.tree.structure(theta_true) or any(
            jnp.shape(a) != jnp.shape(b)
            for a, b in zip(jax.tree.leaves(init), jax.tree.leaves(theta_true), strict=True)
        ):
            raise ValueError("init must have the structure and leaf shapes of theta_true")
        fixed_values, restricted_idx = _restriction(fixed, theta_true, dtype)
        key = _as_key(key)
        data_shape = _check_model(simulate, logpdf, theta_true, key, groups)
        options = dict(
            method=method, n_groups=n_groups, expected=expected, max_iter=max_iter, tol=tol,
            chunk_size=chunk_size, dtype=dtype.name,
        )  # fmt: skip
        model = _Model(
            simulate, logpdf, covs, tuple(fixed_values), restricted_idx, groups,
            tuple(sorted(options.items())),
        )  # fmt: skip
        auto = batch_size is None
        batch_size = _batch_size(batch_size, n_reps, data_shape, len(devices))
        stacked = _run(model, key, int(n_reps), batch_size, auto, devices, progress,
                       (theta_true, init, fixed_values))  # fmt: skip
        names = parameter_names(theta_true)
        return MonteCarloResult(
            theta_true=np.asarray(ravel_pytree(theta_true)[0]),
            **stacked,
            names=names,
            covs=covs,
            restricted=tuple(names[i] for i in restricted_idx),
            level=float(level),
        )


def _run(model, key, n_reps, batch_size, auto, devices, progress, args) -> dict:
    """Run every batch through one compiled program; per-replication host arrays, padding dropped.

    An automatic batch size that would need too much memory is shrunk (one recompilation); a
    batch size given by the caller is refused instead, with one that fits.
    """
    from tqdm.auto import tqdm

    place = _placement(devices)
    args = jax.device_put(args, place(replicated=True))
    all_keys = _replication_keys(key, jnp.arange(n_reps))
    while True:
        n_batches = -(-n_reps // batch_size)
        keys = all_keys
        if n_batches * batch_size > n_reps:  # pad with copies of the final key; dropped below
            pad = jnp.repeat(keys[-1:], n_batches * batch_size - n_reps, axis=0)
            keys = jnp.concatenate([keys, pad])
        batch0 = jax.device_put(keys[:batch_size], place())
        compiled, fits, why = _compile(model, batch0, args, devices)
        if fits >= batch_size:
            break
        if not auto or batch_size == len(devices):
            raise MemoryError(
                f"one batch of {batch_size} replications needs {why}; pass "
                f"batch_size={max(fits, 1)} or less"
            )
        batch_size = max(fits // len(devices), 1) * len(devices)

    def launch(b):
        return compiled(jax.device_put(keys[b * batch_size : (b + 1) * batch_size], place()), *args)

    outs, n_failed = [], 0
    with tqdm(
        total=n_reps, desc="monte_carlo", unit="fit", disable=not progress, leave=False
    ) as bar:
        pending = launch(0)
        for b in range(n_batches):
            current = pending
            if b + 1 < n_batches:  # keep the device busy while the host reads this batch back
                pending = launch(b + 1)
            outs.append(jax.device_get(current))
            real = min(batch_size, n_reps - b * batch_size)
            n_failed += int(np.sum(outs[-1]["status"][:real] != Status.SUCCESSFUL))
            bar.update(real)
            bar.set_postfix(failed=n_failed, refresh=False)
    return jax.tree.map(lambda *xs: np.concatenate(xs)[:n_reps], *outs)


_replication_keys = jax.jit(jax.vmap(jax.random.fold_in, in_axes=(None, 0)))


@partial(jax.jit, static_argnames=("model",))
def _batch(keys, theta_true, init, fixed_values, *, model: _Model):
    return jax.vmap(_replicate, in_axes=(0, None, None, None, None))(
        keys, theta_true, init, fixed_values, model
    )


def _replicate(key, theta_true, init, fixed_values, model: _Model) -> dict:
    """One replication: simulate, fit, every covariance kind, and the test statistics."""
    data = model.simulate(key, theta_true)
    options = dict(model.fit_options, groups=_group_codes(model.groups, data))
    res = _fit(model.logpdf, init, data, cov=model.covs[0], **options)
    est = ravel_pytree(res.params)[0]
    cov = {c: res.cov if c == model.covs[0] else res.covariance(c) for c in model.covs}
    diff = est - ravel_pytree(theta_true)[0]
    out = {
        "estimates": est,
        "se": {c: jnp.sqrt(jnp.diagonal(v)) for c, v in cov.items()},
        "wald": {c: quadratic_form(diff, v) for c, v in cov.items()},
        "loglik": res.loglik,
        "n_iter": res.n_iter,
        "status": res.status,
    }
    if not model.fixed_keys:
        nan = jnp.full((), jnp.nan, est.dtype)
        no_test = {"lr": nan, "wald_restriction": dict.fromkeys(cov, nan)}
        return out | no_test | {"restricted_status": jnp.zeros_like(res.status)}
    held = {**init, **fixed_values}
    restricted = _fit(model.logpdf, held, data, cov="hessian", fixed=fixed_values, **options)
    idx = np.asarray(model.restricted_idx)
    r = est[idx] - ravel_pytree({**theta_true, **fixed_values})[0][idx]
    return out | {
        "lr": 2.0 * (res.loglik - restricted.loglik),
        "wald_restriction": {c: quadratic_form(r, v[idx][:, idx]) for c, v in cov.items()},
        "restricted_status": restricted.status,
    }


# ------------------------------------------------------------------------- host-side checks


def _check_covs(covs, expected, groups) -> tuple[str, ...]:
    if covs is None:
        extra = ("expected",) * (expected is not None) + ("cluster",) * (groups is not None)
        return ("hessian", "opg", "sandwich", *extra)
    covs = (covs,) if isinstance(covs, str) else tuple(covs)
    if not covs or len(set(covs)) != len(covs):
        raise ValueError(f"covs must name distinct kinds from {tuple(KINDS)}; got {covs}")
    for c in covs:
        check_kind(KINDS, c, has={"groups": groups is not None, "expected": expected is not None})
    return covs


def _check_devices(devices) -> list:
    if devices is None:
        return jax.local_devices()
    devices = [devices] if isinstance(devices, jax.Device) else list(devices)
    if not devices or not all(isinstance(d, jax.Device) for d in devices):
        raise TypeError(f"devices must be a list of jax devices (jax.devices()), got {devices!r}")
    return devices


def _restriction(fixed, theta_true, dtype):
    """({key: value}, flat ravel-order indices of the held parameters)."""
    if fixed is None:
        return {}, ()
    if not isinstance(theta_true, dict):
        raise TypeError("fixed= names top-level keys of theta_true, so theta_true must be a dict")
    fixed = {fixed: None} if isinstance(fixed, str) else fixed
    fixed = fixed if isinstance(fixed, dict) else dict.fromkeys(fixed)
    unknown = [k for k in fixed if k not in theta_true]
    if unknown:
        raise KeyError(f"fixed names {unknown}, not keys of theta_true ({list(theta_true)})")
    if len(fixed) == len(theta_true):
        raise ValueError("fixed holds every parameter: the restricted model has nothing to fit")
    values = {}
    for k, v in sorted(fixed.items()):
        shape = jnp.shape(theta_true[k])
        try:
            values[k] = jnp.broadcast_to(
                jnp.asarray(theta_true[k] if v is None else v, dtype), shape
            )
        except (ValueError, TypeError) as e:
            raise ValueError(
                f"fixed[{k!r}] does not broadcast to theta_true[{k!r}]'s shape {shape}"
            ) from e
    mask = {
        k: jax.tree.map(lambda x, h=k in fixed: jnp.full(jnp.shape(x), h), v)
        for k, v in theta_true.items()
    }
    return values, tuple(int(i) for i in np.flatnonzero(np.asarray(ravel_pytree(mask)[0])))


def _as_key(key):
    if isinstance(key, int | np.integer) and not isinstance(key, bool):
        return jax.random.key(int(key))
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"key must be ONE key, got a key array of shape {key.shape}")
        return key
    if isinstance(key, jax.Array | np.ndarray) and key.shape == (2,) and key.dtype == np.uint32:
        return jax.random.wrap_key_data(jnp.asarray(key))  # a legacy jax.random.PRNGKey
    raise TypeError(f"key must be a JAX key (jax.random.key(seed)) or an int seed, got {key!r}")


def _check_model(simulate, logpdf, theta_true, key, groups):
    """Trace simulate and logpdf on shapes only, and say what does not fit before any work."""
    try:
        data = jax.eval_shape(simulate, key, theta_true)
    except Exception as e:
        explain_trace_error(e, "simulate(key, theta) at theta = theta_true")
        raise
    flat = jax.tree_util.tree_flatten_with_path(data)[0]
    shapes = {"data" + jax.tree_util.keystr(p): x.shape for p, x in flat}
    described = ", ".join(f"{k} {v}" for k, v in shapes.items())
    if not flat:
        raise ValueError("simulate(key, theta) returned no arrays; it must return the data pytree")
    if any(len(s) == 0 for s in shapes.values()) or len({s[0] for s in shapes.values()}) > 1:
        raise ValueError(
            f"simulate must return leaves sharing the leading observation axis N; got {described}"
        )
    for p, x in flat:
        if not (jnp.issubdtype(x.dtype, jnp.number) or jnp.issubdtype(x.dtype, jnp.bool_)):
            raise TypeError(f"simulate returned data{jax.tree_util.keystr(p)} of dtype {x.dtype}")
    row = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), data)
    try:
        out = jax.eval_shape(logpdf, theta_true, row)
    except Exception as e:
        if is_trace_error(e):
            explain_trace_error(e, "logpdf(theta, obs) on one row of the simulated data")
            raise
        raise ValueError(
            f"the simulated data do not fit the log-density: simulate returned {described}, and "
            f"logpdf(theta, obs) failed on one row of it: {e}"
        ) from e
    if getattr(out, "shape", None) != ():
        raise ValueError(
            f"logpdf(theta, obs) must return a scalar for ONE observation; on one row of the "
            f"simulated data ({described}) it returned {getattr(out, 'shape', type(out))}"
        )
    if groups is not None:
        n = next(iter(shapes.values()))[0]
        try:
            g = jax.eval_shape(lambda d: _group_codes(groups, d), data)
        except Exception as e:
            raise ValueError(f"groups={groups!r} is not in the simulated data ({described})") from e
        if g.shape != (n,) or not jnp.issubdtype(g.dtype, jnp.integer):
            raise ValueError(
                f"groups must give ({n},) integer codes 0..G-1, got {g.shape} {g.dtype}"
            )
    return data


def _group_codes(groups, data):
    if groups is None:
        return None
    return groups(data) if callable(groups) else data[groups]


# ------------------------------------------------------------------- batches, devices, memory


def _batch_size(batch_size, n_reps, data_shape, n_devices) -> int:
    """Replications per batch: given, or cache/memory-sized; a multiple of the device count."""
    if batch_size is None:
        rep_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(data_shape))
        target = _CPU_BATCH_BYTES if jax.default_backend() == "cpu" else _ACCELERATOR_BATCH_BYTES
        size = min(int(np.clip(target // max(rep_bytes, 1), 8, _MAX_BATCH)) * n_devices, n_reps)
        batch_size = -(-n_reps // -(-n_reps // size))  # even batches: little padding at the end
    return -(-min(int(batch_size), n_reps) // n_devices) * n_devices


def _placement(devices):
    """place(replicated=False) -> where a batch goes (split over the devices) or a constant."""
    if len(devices) == 1:
        return lambda replicated=False: devices[0]
    mesh = jax.sharding.Mesh(np.asarray(devices), ("rep",))
    spec = jax.sharding.PartitionSpec
    return lambda replicated=False: jax.sharding.NamedSharding(
        mesh, spec() if replicated else spec("rep")
    )


def _compile(model: _Model, keys, args, devices):
    """(the batch program compiled, the largest batch whose memory fits the free share, why)."""
    compiled = _batch.lower(keys, *args, model=model).compile()
    need, free = _program_bytes(compiled), _available_bytes(devices[0])
    size = keys.shape[0]
    if need is None or free is None or need <= _MEMORY_SHARE * free:
        return compiled, size, ""
    gib = need / 2**30, free / 2**30
    why = (
        f"~{gib[0]:.3g} GiB per device, more than {_MEMORY_SHARE:.0%} of the {gib[1]:.3g} GiB free"
    )
    return compiled, int(size * _MEMORY_SHARE * free / need), why


def _program_bytes(compiled) -> int | None:
    try:
        m = compiled.memory_analysis()
    except Exception:  # not every backend reports it
        return None
    parts = ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes")
    return None if m is None else int(sum(getattr(m, p, 0) or 0 for p in parts))


def _available_bytes(device) -> int | None:
    """Free memory: the accelerator's statistics, or the host's MemAvailable."""
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        limit = stats.get("bytes_limit")
        return None if limit is None else int(limit) - int(stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
