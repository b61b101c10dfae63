"""monte_carlo(): simulate -> fit -> summarise, in compiled batches of replications.

For r = 1..R: data_r = simulate(key_r, theta_0), theta_hat_r = argmax lnL(theta; data_r), with a
standard error of every requested covariance kind. Over the successful fits (status 0; failures are
counted and listed, never dropped silently):

    bias_j     = mean_r(theta_hat_rj) - theta_0j          Monte Carlo s.e. sd_j / sqrt(R)
    sd_j       = sd_r(theta_hat_rj)  (R - 1 divisor)      the sampling spread the SEs should match
    se_j(kind) = mean_r(se_rj(kind))
    rmse_j     = sqrt(mean_r((theta_hat_rj - theta_0j)^2))
    coverage_j(kind) = mean_r 1{|theta_hat_rj - theta_0j| <= z_{(1+level)/2} se_rj(kind)}
                                                          Monte Carlo s.e. sqrt(c (1 - c) / R)
    Wald (joint)  W_r = (theta_hat_r - theta_0)' V_r^-1 (theta_hat_r - theta_0)  ~ chi2(k)
    LR (given `fixed`)  2 (lnL_r - lnL_r^restricted) ~ chi2(q), and the Wald test of the same q
                        restrictions, (theta_hat_R - r)' [V_RR]^-1 (theta_hat_R - r)

Keys are split once, `jax.random.split(key, R)`, so replication r sees the same data whatever the
batch size. Batches of `batch_size` replications run through ONE compiled program
(`jit(vmap(simulate -> fit -> covariances -> tests))`); the last batch is padded with copies of its
final key and the padding dropped. The data of a batch live only inside that program.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from functools import partial
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ._covariance import KINDS
from ._fit import METHODS
from ._fit import fit as _fit
from ._results import MESSAGES, Status, parameter_names

PyTree = Any

# Replications per batch on CPU: enough simulated data per batch to amortise the per-call dispatch,
# little enough that a batch's data stay in the last-level cache across the Newton iterations
# (measured: a batch of ~64 logit data sets of 48 KB fits 2x faster than one of 1,000).
_CPU_BATCH_BYTES = 4 * 2**20
# On an accelerator wider batches keep the device busy; memory decides the cap.
_ACCELERATOR_BATCH_BYTES = 256 * 2**20
_MAX_BATCH = 4096
# A batch may use at most this share of the memory that is free when the study starts.
_MEMORY_SHARE = 0.5


# ----------------------------------------------------------------------------------- results


class MonteCarloResult(eqx.Module):
    """Per-replication outcomes of a Monte Carlo study; summaries are computed on the host.

    Arrays have a leading axis R (replications, in key order). Parameters are flat, in
    `ravel_pytree(theta_true)` order with names `names`. `se`, `wald` and `wald_restriction` are
    dicts over the covariance kinds `covs`. A fit that did not succeed keeps its numbers (NaN where
    none exist) and its `status`; summaries leave it out and say how many.
    """

    theta_true: jax.Array  # (k,)
    estimates: jax.Array  # (R, k)
    se: dict[str, jax.Array]  # kind -> (R, k)
    wald: dict[str, jax.Array]  # kind -> (R,), joint Wald statistic of theta = theta_true, df k
    loglik: jax.Array  # (R,)
    n_iter: jax.Array  # (R,)
    status: jax.Array  # (R,) int32, a `Status`
    lr: jax.Array  # (R,) LR statistic of the restriction (NaN without `fixed`)
    wald_restriction: dict[str, jax.Array]  # kind -> (R,), df q (NaN without `fixed`)
    restricted_status: jax.Array  # (R,) status of the restricted fit (0 without `fixed`)
    names: tuple[str, ...] = eqx.field(static=True)
    covs: tuple[str, ...] = eqx.field(static=True)
    restricted: tuple[str, ...] = eqx.field(static=True)  # names of the parameters held by `fixed`
    level: float = eqx.field(static=True)

    # ---- counts ----
    @property
    def n_reps(self) -> int:
        return int(np.shape(self.status)[0])

    @property
    def converged(self) -> np.ndarray:
        """(R,) bool: the fit succeeded (status 0); only these enter the summaries."""
        return np.asarray(self.status) == Status.SUCCESSFUL

    @property
    def n_failed(self) -> int:
        return int(np.sum(~self.converged))

    def failures(self) -> dict[str, np.ndarray]:
        """{status message: replication indices} of the fits that did not succeed."""
        status = np.asarray(self.status)
        return {
            MESSAGES[Status(int(code))]: np.flatnonzero(status == code)
            for code in np.unique(status)
            if code != Status.SUCCESSFUL
        }

    # ---- per-parameter summaries over the successful fits ----
    def _ok(self) -> tuple[np.ndarray, np.ndarray]:
        ok = self.converged
        return np.asarray(self.estimates)[ok], np.asarray(self.theta_true)

    def bias(self) -> np.ndarray:
        est, true = self._ok()
        return est.mean(axis=0) - true

    def sd(self) -> np.ndarray:
        """Standard deviation of the estimates across replications (divisor R - 1)."""
        est, _ = self._ok()
        return est.std(axis=0, ddof=1) if len(est) > 1 else np.full(est.shape[1], np.nan)

    def rmse(self) -> np.ndarray:
        est, true = self._ok()
        return np.sqrt(np.mean((est - true) ** 2, axis=0))

    def mean_se(self, kind: str) -> np.ndarray:
        """Mean standard error of `kind` over the successful fits with a finite one."""
        se = np.asarray(self._kind(kind, self.se))[self.converged]
        return np.nanmean(np.where(np.isfinite(se), se, np.nan), axis=0) if len(se) else se.sum(0)

    def coverage(self, kind: str, level: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(share of Wald intervals theta_hat -/+ z se(kind) that contain theta_true, count used).

        Fits whose standard error of this kind is not finite are left out of both numbers.
        """
        level = self.level if level is None else level
        z = statistics.NormalDist().inv_cdf(0.5 + level / 2.0)
        est, true = self._ok()
        se = np.asarray(self._kind(kind, self.se))[self.converged]
        usable = np.isfinite(se)
        covered = (np.abs(est - true) <= z * se) & usable
        n = usable.sum(axis=0)
        return covered.sum(axis=0) / np.maximum(n, 1), n

    def rejection_rates(self, alpha: float | None = None) -> dict[str, tuple[float, int]]:
        """{test: (share of p-values below alpha, replications used)} at size alpha (1 - level).

        Tests: `wald[kind]` (joint, theta = theta_true, df k), and with `fixed`: `lr` and
        `wald_restriction[kind]` (df q). Per-parameter Wald tests reject exactly when the interval
        of `coverage` misses, so their rate is 1 - coverage at level 1 - alpha.
        """
        alpha = 1.0 - self.level if alpha is None else alpha
        k, q = len(self.names), len(self.restricted)
        out = {}
        for kind in self.covs:
            out[f"wald[{kind}]"] = _reject(self.wald[kind], k, alpha, self.converged)
        if q:
            both = self.converged & (np.asarray(self.restricted_status) == Status.SUCCESSFUL)
            out["lr"] = _reject(self.lr, q, alpha, both)
            for kind in self.covs:
                out[f"wald_restriction[{kind}]"] = _reject(
                    self.wald_restriction[kind], q, alpha, self.converged
                )
        return out

    def _kind(self, kind: str, table: dict) -> jax.Array:
        if kind not in table:
            raise ValueError(f"this study computed covariance kinds {self.covs}, not {kind!r}")
        return table[kind]

    # ---- presentation ----
    def to_frame(self, level: float | None = None):
        """One row per parameter: true, mean, bias, bias_mcse, sd, rmse, se_<kind>, coverage_<kind>."""
        import pandas as pd

        est, _ = self._ok()
        n_ok = max(len(est), 1)
        cols = {
            "true": np.asarray(self.theta_true),
            "mean": self.bias() + np.asarray(self.theta_true),
            "bias": self.bias(),
            "bias_mcse": self.sd() / math.sqrt(n_ok),
            "sd": self.sd(),
            "rmse": self.rmse(),
        }
        for kind in self.covs:
            cols[f"se_{kind}"] = self.mean_se(kind)
        for kind in self.covs:
            cols[f"coverage_{kind}"] = self.coverage(kind, level)[0]
        return pd.DataFrame(cols, index=pd.Index(self.names, name="parameter"))

    def summary(self, level: float | None = None) -> str:
        """Tables of bias, sd against mean SE, coverage per covariance kind, and test sizes."""
        level = self.level if level is None else level
        n_ok = int(self.converged.sum())
        width = max(10, *(len(n) for n in self.names)) + 1
        lines = [
            f"Monte Carlo study (jaxmle): {self.n_reps} replications, {n_ok} fits succeeded, "
            f"{self.n_failed} failed (left out of every summary)"
        ]
        for message, idx in self.failures().items():
            shown = ", ".join(map(str, idx[:8])) + (", ..." if len(idx) > 8 else "")
            lines.append(f"  {len(idx)} x {message}: replications {shown}")
        if n_ok == 0:
            return "\n".join(lines)

        bias, sd, rmse = self.bias(), self.sd(), self.rmse()
        mcse = sd / math.sqrt(n_ok)
        head = f"{'':<{width}}{'true':>11}{'mean':>11}{'bias':>11}{'(mcse)':>10}{'sd':>11}"
        head += f"{'rmse':>11}"
        rule = "-" * len(head)
        lines += ["", "Estimates", rule, head, rule]
        for j, name in enumerate(self.names):
            lines.append(
                f"{name:<{width}}{float(self.theta_true[j]):>11.4g}"
                f"{float(self.theta_true[j]) + bias[j]:>11.4g}{bias[j]:>11.3g}"
                f"{f'({mcse[j]:.2g})':>10}{sd[j]:>11.4g}{rmse[j]:>11.4g}"
            )
        kinds = self.covs
        colw = max(11, *(len(k) + 2 for k in kinds))

        head = f"{'':<{width}}{'sd':>{colw}}" + "".join(f"{k:>{colw}}" for k in kinds)
        rule = "-" * len(head)
        lines += ["", "Standard deviation of the estimates against the mean standard error", rule]
        lines += [head, rule]
        se = {k: self.mean_se(k) for k in kinds}
        for j, name in enumerate(self.names):
            lines.append(
                f"{name:<{width}}{sd[j]:>{colw}.4g}"
                + "".join(f"{se[k][j]:>{colw}.4g}" for k in kinds)
            )

        cov = {k: self.coverage(k, level) for k in kinds}
        band = 1.96 * math.sqrt(level * (1 - level) / n_ok)
        head = f"{'':<{width}}" + "".join(f"{k:>{colw}}" for k in kinds)
        rule = "-" * max(len(head), 40)
        lines += [
            "",
            f"Coverage of {level:.3g} Wald intervals (Monte Carlo 95% band: "
            f"{level - band:.3f} to {level + band:.3f})",
            rule,
            head,
            rule,
        ]
        for j, name in enumerate(self.names):
            lines.append(f"{name:<{width}}" + "".join(f"{cov[k][0][j]:>{colw}.3f}" for k in kinds))
        short = [k for k in kinds if (cov[k][1] < n_ok).any()]
        for k in short:
            lines.append(f"  {k}: {n_ok - int(cov[k][1].min())} successful fits had no finite SE")

        alpha = 1 - level
        lines += ["", f"Rejection rates at size {alpha:.3g}", "-" * 40]
        names = {
            "lr": f"LR, {', '.join(self.restricted)} (df {len(self.restricted)})",
        }
        for test, (rate, used) in self.rejection_rates(alpha).items():
            label = names.get(test)
            if label is None and test.startswith("wald["):
                label = f"Wald theta = theta_true, {test[5:-1]} (df {len(self.names)})"
            elif label is None:
                label = f"Wald, restriction, {test[17:-1]} (df {len(self.restricted)})"
            extra = f"  ({used} replications)" if used != n_ok else ""
            lines.append(f"  {label:<52}{rate:>7.3f}{extra}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    # ---- plots (matplotlib, optional) ----
    def plot_distributions(self, kind: str | None = None, bins: int = 40):
        """Histogram of each estimate with its asymptotic normal N(theta_0j, mean_r se_rj(kind)^2).

        Returns a matplotlib `Figure` (one panel per parameter).
        """
        Figure = _figure_class()
        kind = self.covs[0] if kind is None else kind
        est, true = self._ok()
        se = np.asarray(self._kind(kind, self.se))[self.converged]
        k = len(self.names)
        ncols = min(k, 4)
        nrows = -(-k // ncols)
        fig = Figure(figsize=(3.2 * ncols, 2.6 * nrows), layout="constrained")
        axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
        for j, ax in enumerate(axes):
            if j >= k:
                ax.set_visible(False)
                continue
            ax.hist(est[:, j], bins=bins, density=True, color="0.75", label="estimates")
            sd = math.sqrt(np.nanmean(se[:, j] ** 2)) if len(se) else np.nan
            lo, hi = ax.get_xlim()
            grid = np.linspace(min(lo, true[j] - 4 * sd), max(hi, true[j] + 4 * sd), 200)
            ax.plot(grid, _normal_pdf(grid, true[j], sd), color="C0", label=f"N(true, se_{kind}²)")
            ax.axvline(true[j], color="k", lw=0.8)
            ax.set_title(self.names[j])
        axes[0].legend(fontsize="small")
        fig.suptitle(f"Sampling distributions ({int(self.converged.sum())} fits)")
        return fig

    def plot_coverage(self, level: float | None = None):
        """Coverage of each parameter's Wald interval per covariance kind, with the binomial band.

        The band is level -/+ 1.96 sqrt(level (1 - level) / R_ok): where coverage would fall in 95%
        of studies if the intervals had exactly the nominal level. Returns a matplotlib `Figure`.
        """
        Figure = _figure_class()
        level = self.level if level is None else level
        n_ok = max(int(self.converged.sum()), 1)
        band = 1.96 * math.sqrt(level * (1 - level) / n_ok)
        k = len(self.names)
        fig = Figure(figsize=(max(4.0, 0.7 * k + 2), 3.2), layout="constrained")
        ax = fig.subplots()
        ax.axhspan(level - band, level + band, color="0.9", label="Monte Carlo band")
        ax.axhline(level, color="k", lw=0.8)
        offsets = np.linspace(-0.25, 0.25, len(self.covs)) if len(self.covs) > 1 else [0.0]
        for off, kind in zip(offsets, self.covs, strict=True):
            ax.plot(np.arange(k) + off, self.coverage(kind, level)[0], "o", label=kind)
        ax.set_xticks(np.arange(k), self.names, rotation=45 if k > 6 else 0)
        ax.set_ylabel(f"coverage of {level:.3g} intervals")
        ax.legend(fontsize="small", ncols=min(len(self.covs) + 1, 4))
        return fig


def _reject(stat, df: int, alpha: float, use: np.ndarray) -> tuple[float, int]:
    stat = np.asarray(stat)[use]
    stat = stat[np.isfinite(stat)]
    if stat.size == 0:
        return float("nan"), 0
    with jax.enable_x64(True):
        p = np.asarray(jax.scipy.special.gammaincc(df / 2.0, jnp.asarray(stat, jnp.float64) / 2.0))
    return float(np.mean(p < alpha)), int(stat.size)


def _normal_pdf(x, mean, sd):
    return np.exp(-0.5 * ((x - mean) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "plots need matplotlib: pip install 'jaxmle[plot]' (or matplotlib)"
        ) from e
    return Figure


# ----------------------------------------------------------------------------------- the study


class _Model(NamedTuple):
    """Static description of one replication: everything that shapes the compiled program."""

    simulate: Callable
    logpdf: Callable
    covs: tuple[str, ...]
    fixed_keys: tuple[str, ...]
    restricted_idx: tuple[int, ...]
    groups: Any
    n_groups: int | None
    method: str
    expected: Any
    max_iter: int
    tol: float | None
    chunk_size: int | None
    dtype: str


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
    """Simulate `n_reps` data sets from theta_true, fit each by ML, and keep what a study needs.

    Args:
      simulate: `simulate(key, theta) -> data`, one data set (a pytree whose leaves share the
        leading axis N) drawn with the JAX key from the parameters `theta` (shaped like
        theta_true), written in JAX (it is traced, vmapped and compiled).
      logpdf: the log-density of ONE observation, as for `jm.fit`.
      theta_true: the true parameters (pytree); estimates are compared with it.
      n_reps: number of replications R.
      key: a JAX key (`jax.random.key(seed)`) or an int seed; replication r uses
        `jax.random.split(key, R)[r]`, whatever the batch size.
      init: start values for every fit (default theta_true).
      covs: covariance kinds whose standard errors, coverage and Wald tests are recorded. Default:
        hessian, opg, sandwich, plus expected (with `expected`) and cluster (with `groups`).
      fixed: a restriction to test by likelihood ratio and Wald: `{key: value}` for top-level keys
        of theta_true, or a list of keys held at their theta_true values (H0 true: the rejection
        rate is the size; other values give the power).
      level: nominal coverage of the intervals; the tests run at size 1 - level.
      method, expected, max_iter, tol, chunk_size, dtype: as for `jm.fit`.
      groups: cluster codes for cov="cluster": a top-level key of the simulated data, or
        `groups(data) -> (N,)` integer codes 0..G-1; needs the static `n_groups=G`.
      batch_size: replications per compiled call. Default: on CPU ~4 MiB of simulated data per
        batch (cache-sized), on an accelerator ~256 MiB; refused (MemoryError, with a size that
        fits) when one batch would need more than half the free memory.
      devices: where batches run (default: every local device). With several, each batch is
        split over them, one compiled SPMD program. On CPU, to use every core, start Python with
        XLA_FLAGS=--xla_force_host_platform_device_count=<cores> (set before JAX is imported).
      progress: show a tqdm progress bar over batches.

    Returns a `MonteCarloResult` with the per-replication estimates, SEs, test statistics and
    statuses; `summary()`, `to_frame()`, `plot_distributions()` and `plot_coverage()` present it.
    """
    dtype = jnp.dtype("float64" if dtype is None else dtype)
    if dtype not in (jnp.dtype("float64"), jnp.dtype("float32")):
        raise ValueError(f"dtype must be float64 or float32, got {dtype}")
    scope = jax.enable_x64(True) if dtype == jnp.float64 else nullcontext()
    with scope:
        return _monte_carlo(
            simulate, logpdf, theta_true, n_reps, key, init, covs, fixed, level, method,
            expected, groups, n_groups, max_iter, tol, chunk_size, batch_size, devices, progress,
            dtype,
        )  # fmt: skip


def _monte_carlo(
    simulate,
    logpdf,
    theta_true,
    n_reps,
    key,
    init,
    covs,
    fixed,
    level,
    method,
    expected,
    groups,
    n_groups,
    max_iter,
    tol,
    chunk_size,
    batch_size,
    devices,
    progress,
    dtype,
):
    # ---- tier-1 checks: options, shapes, and simulate against logpdf, before any work ----
    if not callable(simulate) or not callable(logpdf):
        raise TypeError(
            "simulate and logpdf must be functions: simulate(key, theta), logpdf(theta, obs)"
        )
    if not (isinstance(n_reps, int | np.integer) and n_reps >= 1):
        raise ValueError(f"n_reps must be a positive int, got {n_reps!r}")
    n_reps = int(n_reps)
    if batch_size is not None and not (
        isinstance(batch_size, int | np.integer) and batch_size >= 1
    ):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    if groups is not None and not (isinstance(n_groups, int) and n_groups >= 2):
        raise ValueError(
            "groups= needs the static number of clusters n_groups=G (an int >= 2); the codes "
            "must be integers 0..G-1"
        )
    covs = _choose_covs(covs, expected, groups)
    theta_true = jax.tree.map(lambda x: jnp.asarray(x, dtype), theta_true)
    names = parameter_names(theta_true)
    init = theta_true if init is None else jax.tree.map(lambda x: jnp.asarray(x, dtype), init)
    if jax.tree.structure(init) != jax.tree.structure(theta_true) or any(
        jnp.shape(a) != jnp.shape(b)
        for a, b in zip(jax.tree.leaves(init), jax.tree.leaves(theta_true), strict=True)
    ):
        raise ValueError("init must have the structure and shapes of theta_true")
    fixed_values, restricted_idx = _restriction(fixed, theta_true, dtype)
    key = _as_key(key)
    data_shape = _check_model(simulate, logpdf, theta_true, key, groups)

    model = _Model(
        simulate=simulate, logpdf=logpdf, covs=covs, fixed_keys=tuple(fixed_values),
        restricted_idx=restricted_idx, groups=groups, n_groups=n_groups, method=method,
        expected=expected, max_iter=max_iter, tol=tol, chunk_size=chunk_size, dtype=dtype.name,
    )  # fmt: skip
    devices = _devices(devices)
    batch_size = _batch_size(batch_size, n_reps, data_shape, len(devices))
    n_batches = -(-n_reps // batch_size)
    keys = jax.random.split(key, n_reps)
    pad = n_batches * batch_size - n_reps
    if pad:  # copies of the final key; their replications are dropped below
        keys = jnp.concatenate([keys, jnp.repeat(keys[-1:], pad, axis=0)])
    place = _placement(devices)
    args = jax.device_put((theta_true, init, fixed_values), place(replicated=True))
    compiled = _compile(model, jax.device_put(keys[:batch_size], place()), args, devices)

    from tqdm.auto import tqdm

    def launch(b):
        return compiled(jax.device_put(keys[b * batch_size : (b + 1) * batch_size], place()), *args)

    outs, n_failed = [], 0
    with tqdm(
        total=n_reps, desc="monte_carlo", unit="rep", disable=not progress, leave=False
    ) as bar:
        # one batch in flight ahead of the one being read back: host work overlaps device work
        pending = launch(0)
        for b in range(n_batches):
            current = pending
            if b + 1 < n_batches:
                pending = launch(b + 1)
            host = jax.device_get(current)
            outs.append(host)
            n_failed += int(np.sum(host["status"][: n_reps - b * batch_size] != 0))
            bar.update(min(batch_size, n_reps - b * batch_size))
            bar.set_postfix(failed=n_failed, refresh=False)
    stacked = jax.tree.map(lambda *xs: np.concatenate(xs)[:n_reps], *outs)
    return MonteCarloResult(
        theta_true=np.asarray(ravel_pytree(theta_true)[0]),
        **stacked,
        names=names,
        covs=covs,
        restricted=tuple(names[i] for i in restricted_idx),
        level=float(level),
    )


def _choose_covs(covs, expected, groups) -> tuple[str, ...]:
    if covs is None:
        covs = ("hessian", "opg", "sandwich")
        covs += ("expected",) * (expected is not None) + ("cluster",) * (groups is not None)
        return covs
    covs = (covs,) if isinstance(covs, str) else tuple(covs)
    if not covs:
        raise ValueError("covs is empty: name at least one covariance kind")
    for kind in covs:
        if kind not in KINDS:
            raise ValueError(f"unknown covariance kind {kind!r}; choose from {KINDS}")
    if "cluster" in covs and groups is None:
        raise ValueError("covs includes 'cluster': pass groups=<data key or function> and n_groups")
    if "expected" in covs and expected is None:
        raise ValueError("covs includes 'expected': pass expected=(predict, fisher)")
    if len(set(covs)) != len(covs):
        raise ValueError(f"covs names a kind twice: {covs}")
    return covs


def _restriction(fixed, theta_true, dtype):
    """({key: value}, flat indices of the held parameters in ravel order)."""
    if fixed is None:
        return {}, ()
    if not isinstance(theta_true, dict):
        raise TypeError("fixed= names top-level keys of theta_true, so theta_true must be a dict")
    if isinstance(fixed, str):
        fixed = [fixed]
    keys = list(fixed)
    unknown = [k for k in keys if k not in theta_true]
    if unknown:
        raise KeyError(
            f"fixed names {unknown}, which are not keys of theta_true ({list(theta_true)})"
        )
    if not isinstance(fixed, dict):
        fixed = {k: theta_true[k] for k in keys}
    if len(fixed) == len(theta_true):
        raise ValueError("fixed holds every parameter: the restricted model has nothing to fit")
    values = {}
    for k, v in fixed.items():
        shape = jnp.shape(theta_true[k])
        try:
            values[k] = jnp.broadcast_to(jnp.asarray(v, dtype), shape)
        except (ValueError, TypeError) as e:
            raise ValueError(
                f"fixed[{k!r}] = {v!r} does not broadcast to the shape {shape} of theta_true[{k!r}]"
            ) from e
    mask = {
        k: jax.tree.map(lambda x, held=(k in fixed): jnp.full(jnp.shape(x), held), v)
        for k, v in theta_true.items()
    }
    flat_mask = np.asarray(ravel_pytree(mask)[0]).astype(bool)
    return dict(sorted(values.items())), tuple(int(i) for i in np.flatnonzero(flat_mask))


def _as_key(key):
    if isinstance(key, int | np.integer):
        return jax.random.key(int(key))
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(
                f"key must be ONE key (shape ()), got a key array of shape {key.shape}"
            )
        return key
    if isinstance(key, jax.Array | np.ndarray) and key.shape == (2,) and key.dtype == np.uint32:
        return jax.random.wrap_key_data(jnp.asarray(key))  # a legacy jax.random.PRNGKey
    raise TypeError(f"key must be a JAX key (jax.random.key(seed)) or an int seed, got {key!r}")


def _leaf_name(path) -> str:
    return "data" + jax.tree_util.keystr(path) if path else "data"


def _check_model(simulate, logpdf, theta_true, key, groups):
    """Trace simulate and logpdf on shapes only; say what does not fit, before any work."""
    try:
        data = jax.eval_shape(simulate, key, theta_true)
    except Exception as e:
        raise type(e)(
            f"simulate(key, theta) failed when traced with theta = theta_true: {e}"
        ) from e
    flat = jax.tree_util.tree_flatten_with_path(data)[0]
    if not flat:
        raise ValueError("simulate(key, theta) returned no arrays; it must return the data pytree")
    shapes = {_leaf_name(p): tuple(x.shape) for p, x in flat}
    described = ", ".join(f"{k}: {v}" for k, v in shapes.items())
    if any(len(s) == 0 for s in shapes.values()):
        raise ValueError(
            f"simulate returned a scalar leaf ({described}); every data leaf needs the leading "
            "observation axis N"
        )
    if len({s[0] for s in shapes.values()}) > 1:
        raise ValueError(f"simulate returned leaves of different lengths N: {described}")
    for p, x in flat:
        if not (jnp.issubdtype(x.dtype, jnp.number) or jnp.issubdtype(x.dtype, jnp.bool_)):
            raise TypeError(
                f"simulate returned {_leaf_name(p)} of dtype {x.dtype}; data must be numeric"
            )
    obs = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), data)
    try:
        out = jax.eval_shape(logpdf, theta_true, obs)
    except Exception as e:
        raise ValueError(
            f"the simulated data do not fit the log-density: simulate returned {described}, and "
            f"logpdf(theta, obs) failed on one row of it: {e}"
        ) from e
    if getattr(out, "shape", None) != ():
        raise ValueError(
            f"logpdf(theta, obs) must return a scalar for ONE observation; on one row of the "
            f"simulated data ({described}) it returned shape {getattr(out, 'shape', type(out))}"
        )
    if groups is not None:
        try:
            g = jax.eval_shape(_group_codes, groups, data)
        except Exception as e:
            raise ValueError(
                f"groups={groups!r} could not be taken from the simulated data ({described}): {e}"
            ) from e
        n = next(iter(shapes.values()))[0]
        if g.shape != (n,) or not jnp.issubdtype(g.dtype, jnp.integer):
            raise ValueError(
                f"groups must give (N,) = ({n},) integer codes 0..G-1; got shape {g.shape}, dtype {g.dtype}"
            )
    return data


def _group_codes(groups, data):
    if groups is None:
        return None
    return groups(data) if callable(groups) else data[groups]


def _available_bytes(device) -> int | None:
    """Free memory of the device: accelerator statistics, else the host's MemAvailable."""
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
        return None
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


def _devices(devices) -> list:
    if devices is None:
        return jax.local_devices()
    devices = [devices] if isinstance(devices, jax.Device) else list(devices)
    if not devices or not all(isinstance(d, jax.Device) for d in devices):
        raise TypeError(f"devices must be jax devices (e.g. jax.devices()), got {devices!r}")
    return devices


def _placement(devices):
    """place(replicated=False): the sharding of a batch (split over devices) or of a constant."""
    if len(devices) == 1:
        return lambda replicated=False: devices[0]
    mesh = jax.sharding.Mesh(np.asarray(devices), ("rep",))
    spec = jax.sharding.PartitionSpec

    def place(replicated=False):
        return jax.sharding.NamedSharding(mesh, spec() if replicated else spec("rep"))

    return place


def _batch_size(batch_size, n_reps, data_shape, n_devices) -> int:
    """Replications per batch: given, or cache/memory-sized; a multiple of the device count."""
    if batch_size is None:
        rep_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(data_shape))
        target = _CPU_BATCH_BYTES if jax.default_backend() == "cpu" else _ACCELERATOR_BATCH_BYTES
        size = int(np.clip(target // max(rep_bytes, 1), 8, _MAX_BATCH)) * n_devices
        size = min(size, n_reps)
        # spread the replications evenly, so the padding of the last batch is small
        batch_size = -(-n_reps // -(-n_reps // size))
    else:
        batch_size = min(int(batch_size), n_reps)
    return -(-batch_size // n_devices) * n_devices


def _compile(model: _Model, keys, args, devices):
    """The batch program, compiled once; refuses a batch that would not fit in free memory."""
    compiled = _batch.lower(keys, *args, model=model).compile()
    need = _program_bytes(compiled)
    free = _available_bytes(devices[0])
    if need is not None and free is not None and need > _MEMORY_SHARE * free:
        size = keys.shape[0]
        fits = max(1, int(size * _MEMORY_SHARE * free / need))
        raise MemoryError(
            f"one batch of {size} replications needs ~{need / 2**30:.2f} GiB per device, more "
            f"than {_MEMORY_SHARE:.0%} of the {free / 2**30:.2f} GiB free; pass "
            f"batch_size={fits} or less"
        )
    return compiled


def _program_bytes(compiled) -> int | None:
    try:
        m = compiled.memory_analysis()
    except Exception:  # not every backend reports it
        return None
    if m is None:
        return None
    parts = ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes")
    return int(sum(getattr(m, p, 0) or 0 for p in parts))


@partial(jax.jit, static_argnames=("model",))
def _batch(keys, theta_true, init, fixed_values, *, model: _Model):
    """One batch: vmap of simulate -> fit -> every covariance kind -> test statistics."""
    return jax.vmap(_replicate, in_axes=(0, None, None, None, None))(
        keys, theta_true, init, fixed_values, model
    )


def _replicate(key, theta_true, init, fixed_values, model: _Model) -> dict:
    m = model
    data = m.simulate(key, theta_true)
    groups = _group_codes(m.groups, data)
    options = dict(
        method=m.method, groups=groups, n_groups=m.n_groups, expected=m.expected,
        max_iter=m.max_iter, tol=m.tol, chunk_size=m.chunk_size, dtype=m.dtype,
    )  # fmt: skip
    res = _fit(m.logpdf, init, data, cov=m.covs[0], **options)
    est = ravel_pytree(res.params)[0]
    true = ravel_pytree(theta_true)[0]
    diff = est - true
    cov = {kind: res.cov if kind == m.covs[0] else res.covariance(kind) for kind in m.covs}
    se = {kind: jnp.sqrt(jnp.diagonal(v)) for kind, v in cov.items()}
    wald = {kind: _quadratic_form(diff, v) for kind, v in cov.items()}

    nan = jnp.full((), jnp.nan, est.dtype)
    if m.fixed_keys:
        rinit = {**init, **fixed_values}
        rres = _fit(m.logpdf, rinit, data, cov="hessian", fixed=fixed_values, **options)
        lr = 2.0 * (res.loglik - rres.loglik)
        idx = np.asarray(m.restricted_idx)
        r = ravel_pytree({**theta_true, **fixed_values})[0][idx]
        wald_r = {kind: _quadratic_form(est[idx] - r, v[idx][:, idx]) for kind, v in cov.items()}
        rstatus = rres.status
    else:
        lr, wald_r, rstatus = nan, dict.fromkeys(m.covs, nan), jnp.zeros((), jnp.int32)
    return {
        "estimates": est,
        "se": se,
        "wald": wald,
        "loglik": res.loglik,
        "n_iter": res.n_iter,
        "status": res.status,
        "lr": lr,
        "wald_restriction": wald_r,
        "restricted_status": rstatus,
    }


def _quadratic_form(d, v):
    """d' V^-1 d by Cholesky; NaN when V is not positive definite (or has NaN)."""
    chol = jnp.linalg.cholesky(v)
    z = jax.scipy.linalg.solve_triangular(chol, d, lower=True)
    return jnp.sum(z**2)
