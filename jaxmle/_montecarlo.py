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

import math
import os
import statistics
import textwrap
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

# Replications per batch on CPU: enough data per call to amortise dispatch, few enough that a batch's
# data stay in cache across the Newton iterations. Measured on logit data sets of 48 KB (2-core
# EPYC, 512 KB L2 per core): 160 CPU-us per fit in batches of 16-32, 177 at 64, 345 at 2,048.
_CPU_BATCH_BYTES = 2**20
_ACCELERATOR_BATCH_BYTES = 256 * 2**20  # wide batches keep an accelerator busy; memory caps them
_MAX_BATCH = 4096
_MEMORY_SHARE = 0.5  # one batch may use at most this share of the memory free at the start


class MonteCarloResult(eqx.Module):
    """Per-replication outcomes of `monte_carlo`; summaries are computed on the host.

    Arrays have a leading axis R (replications, in key order); parameters are flat, in
    `ravel_pytree(theta_true)` order, named by `names`. `se`, `wald` and `wald_restriction` map each
    covariance kind of `covs` to its array. A fit that did not succeed keeps its numbers (NaN where
    none exist) and its `status`; the summaries leave it out and say so.
    """

    theta_true: jax.Array  # (k,)
    estimates: jax.Array  # (R, k)
    se: dict[str, jax.Array]  # kind -> (R, k)
    wald: dict[str, jax.Array]  # kind -> (R,): joint Wald statistic of theta = theta_true, df k
    loglik: jax.Array  # (R,)
    n_iter: jax.Array  # (R,)
    status: jax.Array  # (R,) a `Status` code
    lr: jax.Array  # (R,) LR statistic of the restriction `fixed`, df q (NaN without it)
    wald_restriction: dict[str, jax.Array]  # kind -> (R,), df q (NaN without `fixed`)
    restricted_status: jax.Array  # (R,) status of the restricted fit (0 without `fixed`)
    names: tuple[str, ...] = eqx.field(static=True)
    covs: tuple[str, ...] = eqx.field(static=True)
    restricted: tuple[str, ...] = eqx.field(static=True)  # names of the parameters held by `fixed`
    level: float = eqx.field(static=True)

    # ---- replications ----
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

    def failures(self) -> dict[Status, np.ndarray]:
        """{status: indices of the replications whose fit ended with it}, failures only; the
        words are `jm.Status`'s messages (printed by `summary()`)."""
        status = np.asarray(self.status)
        codes = [c for c in np.unique(status) if c != Status.SUCCESSFUL]
        return {Status(int(c)): np.flatnonzero(status == c) for c in codes}

    # ---- per-parameter summaries over the successful fits ----
    def _est(self) -> np.ndarray:
        return np.asarray(self.estimates)[self.converged]

    def _se(self, kind: str) -> np.ndarray:
        if kind not in self.se:
            raise ValueError(f"this study recorded covariance kinds {self.covs}, not {kind!r}")
        return np.asarray(self.se[kind])[self.converged]

    def _mean(self, x: np.ndarray) -> np.ndarray:
        """Column means; NaN (not a warning) when no fit succeeded."""
        return x.mean(axis=0) if len(x) else np.full(x.shape[1], np.nan)

    def bias(self) -> np.ndarray:
        return self._mean(self._est()) - np.asarray(self.theta_true)

    def sd(self) -> np.ndarray:
        """Standard deviation of the estimates across replications (divisor R - 1)."""
        est = self._est()
        return est.std(axis=0, ddof=1) if len(est) > 1 else np.full(est.shape[1], np.nan)

    def rmse(self) -> np.ndarray:
        return np.sqrt(self._mean((self._est() - np.asarray(self.theta_true)) ** 2))

    def mean_se(self, kind: str) -> np.ndarray:
        """Mean standard error of `kind`, over the successful fits where it is finite."""
        se = self._se(kind)
        finite = np.isfinite(se)
        n = finite.sum(axis=0)
        return np.where(finite, se, 0.0).sum(axis=0) / np.where(n > 0, n, np.nan)

    def coverage(self, kind: str, level: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(share of intervals theta_hat_j -/+ z se_j(kind) containing theta_0j, fits counted).

        A successful fit whose standard error of this kind is not finite is counted in neither.
        """
        z = statistics.NormalDist().inv_cdf(0.5 + (self.level if level is None else level) / 2)
        se = self._se(kind)
        usable = np.isfinite(se)
        covered = usable & (np.abs(self._est() - np.asarray(self.theta_true)) <= z * se)
        n = usable.sum(axis=0)
        return covered.sum(axis=0) / np.where(n > 0, n, np.nan), n

    def rejection_rates(self, alpha: float | None = None) -> dict[str, tuple[float, int]]:
        """{test: (share of p-values below alpha, replications counted)}; alpha = 1 - level.

        `wald[kind]`: joint test of theta = theta_true, chi2(k). With `fixed`: `lr` (fits where both
        the full and the restricted fit succeeded) and `wald_restriction[kind]`, chi2(q). The
        per-parameter Wald test rejects exactly when the interval of `coverage` misses theta_0j.
        """
        alpha = 1.0 - self.level if alpha is None else alpha
        ok, k, q = self.converged, len(self.names), len(self.restricted)
        out = {f"wald[{c}]": _rejection(self.wald[c], k, alpha, ok) for c in self.covs}
        if q:
            both = ok & (np.asarray(self.restricted_status) == Status.SUCCESSFUL)
            out["lr"] = _rejection(self.lr, q, alpha, both)
            for c in self.covs:
                out[f"wald_restriction[{c}]"] = _rejection(self.wald_restriction[c], q, alpha, ok)
        return out

    # ---- presentation ----
    def to_frame(self, level: float | None = None):
        """pandas DataFrame, one row per parameter: true, mean, bias, bias_mcse, sd, rmse,
        se_<kind> (mean standard error) and coverage_<kind> for every kind."""
        import pandas as pd

        sd = self.sd()
        true = np.asarray(self.theta_true)
        cols = {"true": true, "mean": true + self.bias(), "bias": self.bias()}
        cols |= {
            "bias_mcse": sd / math.sqrt(max(len(self._est()), 1)),
            "sd": sd,
            "rmse": self.rmse(),
        }
        cols |= {f"se_{c}": self.mean_se(c) for c in self.covs}
        cols |= {f"coverage_{c}": self.coverage(c, level)[0] for c in self.covs}
        return pd.DataFrame(cols, index=pd.Index(self.names, name="parameter"))

    def summary(self, level: float | None = None) -> str:
        """Bias, sd against the mean standard error, coverage per covariance kind, test sizes."""
        level = self.level if level is None else level
        n_ok = int(self.converged.sum())
        lines = [
            f"Monte Carlo study (jaxmle): {self.n_reps} replications, {n_ok} fits succeeded, "
            f"{self.n_failed} failed (left out of every summary below)"
        ]
        for status, idx in self.failures().items():
            shown = ", ".join(map(str, idx[:8])) + (", ..." if len(idx) > 8 else "")
            lines.append(f"  {len(idx)} x {status.name.lower()}: replications {shown}")
            lines += textwrap.wrap(
                MESSAGES[status], 96, initial_indent=" " * 4, subsequent_indent=" " * 4
            )
        if n_ok < 2:
            return "\n".join(lines)
        f = self.to_frame(level)
        mcse = [f"({v:.2g})" for v in f["bias_mcse"]]
        est = {"true": f["true"], "mean": f["mean"], "bias": f["bias"], "(mcse)": mcse}
        lines += _table("Estimates", self.names, est | {"sd": f["sd"], "rmse": f["rmse"]})
        se = {"sd": f["sd"]} | {c: f[f"se_{c}"] for c in self.covs}
        lines += _table("Standard deviation of the estimates against the mean standard error",
                        self.names, se)  # fmt: skip
        band = 1.96 * math.sqrt(level * (1 - level) / n_ok)
        title = (
            f"Coverage of {level:.3g} Wald intervals (95% of studies with exact intervals fall in "
            f"{level - band:.3f} .. {level + band:.3f})"
        )
        cov = {c: self.coverage(c, level) for c in self.covs}
        lines += _table(title, self.names, {c: v[0] for c, v in cov.items()}, ".3f")
        for c, (_, n) in cov.items():
            if (n < n_ok).any():
                lines.append(f"  {c}: {n_ok - int(n.min())} successful fits had no finite SE")
        k, q = len(self.names), len(self.restricted)
        lines += ["", f"Rejection rates at size {1 - level:.3g}", "-" * 72]
        for test, (rate, used) in self.rejection_rates(1 - level).items():
            kind = test[test.find("[") + 1 : -1]
            label = {
                "wald": f"Wald, theta = theta_true, {kind} (df {k})",
                "lr": f"LR, {', '.join(self.restricted)} held (df {q})",
                "wald_restriction": f"Wald, {', '.join(self.restricted)} held, {kind} (df {q})",
            }[test.split("[")[0]]
            extra = f"  ({used} replications)" if used != n_ok else ""
            lines.append(f"  {label:<60}{rate:>8.3f}{extra}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    # ---- plots (matplotlib, optional) ----
    def plot_distributions(self, kind: str | None = None, bins: int = 40):
        """Histogram of each estimate over its asymptotic normal N(theta_0j, mean_r se_rj(kind)^2).

        Returns a matplotlib `Figure`, one panel per parameter.
        """
        figure = _new_figure()
        kind = self.covs[0] if kind is None else kind
        est, se, true = self._est(), self._se(kind), np.asarray(self.theta_true)
        k = len(self.names)
        ncols = min(k, 4)
        nrows = -(-k // ncols)
        fig = figure(figsize=(3.2 * ncols, 2.6 * nrows), layout="constrained")
        axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
        for ax in axes[k:]:
            ax.set_visible(False)
        for j, ax in enumerate(axes[:k]):
            ax.hist(est[:, j], bins=bins, density=True, color="0.75", label="estimates")
            s = math.sqrt(np.nanmean(se[:, j] ** 2))
            lo, hi = ax.get_xlim()
            x = np.linspace(min(lo, true[j] - 4 * s), max(hi, true[j] + 4 * s), 200)
            pdf = np.exp(-0.5 * ((x - true[j]) / s) ** 2) / (s * math.sqrt(2 * math.pi))
            ax.plot(x, pdf, color="C0", label=f"N(true, se²), {kind}")
            ax.axvline(true[j], color="k", lw=0.8)
            ax.set_title(self.names[j])
        axes[0].legend(fontsize="small")
        fig.suptitle(f"Sampling distributions over {len(est)} successful fits")
        return fig

    def plot_coverage(self, level: float | None = None):
        """Coverage per parameter and covariance kind, over the band level -/+ 1.96 sqrt(level
        (1 - level) / R_ok) where 95% of studies with exact intervals land. Returns a `Figure`."""
        figure = _new_figure()
        level = self.level if level is None else level
        band = 1.96 * math.sqrt(level * (1 - level) / max(int(self.converged.sum()), 1))
        k, m = len(self.names), len(self.covs)
        fig = figure(figsize=(max(5.0, 0.8 * k + 3), 3.4), layout="constrained")
        ax = fig.subplots()
        ax.axhspan(level - band, level + band, color="0.9", label="Monte Carlo band")
        ax.axhline(level, color="k", lw=0.8)
        for off, kind in zip(
            np.linspace(-0.25, 0.25, m) if m > 1 else [0.0], self.covs, strict=True
        ):
            ax.plot(np.arange(k) + off, self.coverage(kind, level)[0], "o", label=kind)
        ax.set_xticks(np.arange(k), self.names, rotation=45 if k > 6 else 0)
        ax.set_ylabel(f"coverage of {level:.3g} intervals")
        ax.set_xlim(-0.6, k - 0.4)
        fig.legend(loc="outside right upper", fontsize="small")
        ax.set_title(f"Coverage over {int(self.converged.sum())} successful fits")
        return fig


def _table(title, rows, cols: dict, fmt: str = ".4g") -> list[str]:
    cols = {c: list(v) for c, v in cols.items()}
    width = max(10, *(len(r) for r in rows)) + 1
    colw = max(11, *(len(c) + 2 for c in cols))
    head = f"{'':<{width}}" + "".join(f"{c:>{colw}}" for c in cols)
    rule = "-" * max(len(head), 40)
    out = ["", title, rule, head, rule]
    for i, row in enumerate(rows):
        cells = (v[i] if isinstance(v[i], str) else format(float(v[i]), fmt) for v in cols.values())
        out.append(f"{row:<{width}}" + "".join(f"{c:>{colw}}" for c in cells))
    return out


def _rejection(stat, df: int, alpha: float, use: np.ndarray) -> tuple[float, int]:
    """Share of P(chi2(df) > stat) below alpha, over the used replications with a finite stat."""
    stat = np.asarray(stat)[use]
    stat = stat[np.isfinite(stat)]
    if stat.size == 0:
        return float("nan"), 0
    with jax.enable_x64(True):
        p = np.asarray(jax.scipy.special.gammaincc(df / 2.0, jnp.asarray(stat, jnp.float64) / 2.0))
    return float(np.mean(p < alpha)), int(stat.size)


def _new_figure():
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("plots need matplotlib: pip install 'jaxmle[plot]'") from e
    return Figure


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
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
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
        "wald": {c: _quadratic_form(diff, v) for c, v in cov.items()},
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
        "wald_restriction": {c: _quadratic_form(r, v[idx][:, idx]) for c, v in cov.items()},
        "restricted_status": restricted.status,
    }


def _quadratic_form(d, v):
    """d' V^-1 d through the Cholesky factor of V; NaN when V is not positive definite."""
    z = jax.scipy.linalg.solve_triangular(jnp.linalg.cholesky(v), d, lower=True)
    return jnp.sum(z**2)


# ------------------------------------------------------------------------- host-side checks


def _check_covs(covs, expected, groups) -> tuple[str, ...]:
    if covs is None:
        extra = ("expected",) * (expected is not None) + ("cluster",) * (groups is not None)
        return ("hessian", "opg", "sandwich", *extra)
    covs = (covs,) if isinstance(covs, str) else tuple(covs)
    unknown = [c for c in covs if c not in KINDS]
    if not covs or unknown or len(set(covs)) != len(covs):
        raise ValueError(f"covs must name distinct kinds from {KINDS}; got {covs}")
    if "cluster" in covs and groups is None:
        raise ValueError("covs includes 'cluster': pass groups=<data key or function>, n_groups=G")
    if "expected" in covs and expected is None:
        raise ValueError("covs includes 'expected': pass expected=(predict, fisher)")
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
        raise type(e)(f"simulate(key, theta) failed when traced at theta = theta_true: {e}") from e
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
