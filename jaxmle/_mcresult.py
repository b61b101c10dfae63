"""MonteCarloResult: the per-replication outcomes of `monte_carlo`, and their summaries and plots.

For parameter j over the successful fits (status 0): bias, sd, mean SE per covariance kind, RMSE,
coverage of Wald intervals and rejection rates of Wald and LR tests, each with its Monte Carlo
standard error (formulas in `_montecarlo`). Computed on the host from numpy arrays.
"""

from __future__ import annotations

import math
import statistics
import textwrap

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._status import MESSAGES, Replications, Status


class MonteCarloResult(eqx.Module, Replications):
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
