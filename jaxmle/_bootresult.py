"""BootstrapResult: the replications of `jm.bootstrap`, their standard errors, intervals and plots.

Over the successful replications t*_1..t*_R of a statistic t (a parameter, or any g(theta)), with
t_0 its estimate (Davison and Hinkley 1997, ch. 5; the formulas of R's `boot.ci`):

    se          sd_r t*_r (divisor R - 1)                          R `sd(b$t[, j])`
    bias        mean_r t*_r - t_0
    percentile  (t*_((R+1) a/2), t*_((R+1)(1 - a/2)))              R `boot.ci(type = "perc")`
    basic       (2 t_0 - t*_((R+1)(1 - a/2)), 2 t_0 - t*_((R+1) a/2))   R `boot.ci(type = "basic")`
    BCa         t*_((R+1) a_j),  a_j = Phi(z_0 + (z_0 + z_j) / (1 - a (z_0 + z_j))),
                z_0 = Phi^-1(#{t*_r < t_0} / R),  a = sum_i L_i^3 / (6 (sum_i L_i^2)^(3/2))
                                                                   R `boot.ci(type = "bca", L = L)`

with 1 - a the level, z_j = Phi^-1 of a/2 and 1 - a/2, and L_i the influence values of t (unit i). An
order statistic t*_(k) at a non-integer k interpolates on the normal quantile scale between the
neighbouring ones (R's `norm.inter`); below the first or beyond the last it is the extreme one.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ._mcresult import _new_figure
from ._refits import failure_lines
from ._results import parameter_names
from ._status import Replications
from ._tables import check_level

PyTree = Any
METHODS = ("bca", "percentile", "basic")
_NORMAL = statistics.NormalDist()


class BootstrapResult(eqx.Module, Replications):
    """Replications of `jm.bootstrap` (host numpy arrays); flat parameters in `names` order.

    `replicates` (R, k) holds every replication's estimate (NaN where a refit failed), `status` its
    `Status`; `influence` (m, k) the influence values per resampling unit; `fit_cov` the fit's own
    covariance (`cov_type`), shown beside the bootstrap's. `params_def` rebuilds pytrees shaped like
    the fit's params from flat vectors.
    """

    estimate: np.ndarray
    replicates: np.ndarray
    status: np.ndarray
    n_iter: np.ndarray
    influence: np.ndarray
    fit_cov: np.ndarray
    free: np.ndarray
    names: tuple[str, ...] = eqx.field(static=True)
    params_def: tuple = eqx.field(static=True)
    kind: str = eqx.field(static=True)
    detail: str = eqx.field(static=True)
    cov_type: str = eqx.field(static=True)

    # ---- replications
    @property
    def n_boot(self) -> int:
        return int(np.shape(self.status)[0])

    def _t(self) -> np.ndarray:
        return np.asarray(self.replicates)[self.converged]

    def unravel(self, flat) -> PyTree:
        """A flat (k,) vector as a pytree shaped like the fit's params (or g's output)."""
        treedef, shapes = self.params_def
        flat, out, start = np.asarray(flat), [], 0
        for shape in shapes:
            size = math.prod(shape)
            out.append(flat[start : start + size].reshape(shape))
            start += size
        return jax.tree.unflatten(treedef, out)

    # ---- standard errors and intervals
    def _sd(self) -> np.ndarray:
        t = self._t()
        return t.std(axis=0, ddof=1) if len(t) > 1 else np.full(t.shape[1], np.nan)

    @property
    def se(self) -> PyTree:
        """Bootstrap standard errors sd_r t*_r (divisor R - 1), shaped like the params."""
        return self.unravel(self._sd())

    @property
    def bias(self) -> PyTree:
        """mean_r t*_r - t_0, shaped like the params."""
        t = self._t()
        return self.unravel(t.mean(axis=0) - np.asarray(self.estimate))

    @property
    def cov(self) -> np.ndarray:
        """Covariance of the replications (k, k), divisor R - 1."""
        return np.atleast_2d(np.cov(self._t(), rowvar=False))

    def ci(self, method: str = "bca", level: float = 0.95, g: Callable | None = None):
        """(lower, upper) pytrees: the `method` interval ("bca", "percentile", "basic").

        `g`: intervals for g(theta) instead (see `apply`). A BCa end is NaN where the bias
        correction is infinite (every replication on one side of t_0, R stops there).
        """
        if g is not None:
            return self.apply(g).ci(method, level)
        lo, hi = self._bounds(method, level)
        return self.unravel(lo), self.unravel(hi)

    def _bounds(self, method: str, level: float) -> tuple[np.ndarray, np.ndarray]:
        if method not in METHODS:
            raise ValueError(f"unknown interval method {method!r}; choose one of {METHODS}")
        level = check_level(level)
        t, t0 = self._t(), np.asarray(self.estimate, float)
        k = t0.shape[0]
        if len(t) < 2:
            return np.full(k, np.nan), np.full(k, np.nan)
        alpha = np.array([(1 - level) / 2, (1 + level) / 2])
        out = np.empty((2, k))
        L = np.asarray(self.influence)
        for j in range(k):
            tj = np.sort(t[:, j][np.isfinite(t[:, j])])
            if tj.size < 2 or tj[0] == tj[-1]:  # a held parameter: no spread
                out[:, j] = t0[j] if tj.size and tj[0] == t0[j] else np.nan
            elif method == "percentile":
                out[:, j] = norm_inter(tj, alpha)
            elif method == "basic":
                out[:, j] = 2 * t0[j] - norm_inter(tj, alpha[::-1])
            else:
                out[:, j] = bca_bounds(tj, t0[j], L[:, j], alpha)
        return out[0], out[1]

    def apply(self, g: Callable[[PyTree], PyTree]) -> BootstrapResult:
        """The bootstrap of g(theta): g applied to every replication, as `delta_method` takes it.

        t*_r = g(theta*_r), t_0 = g(theta_hat), influence values L G' and fit covariance G V G',
        with G = dg/dtheta' at theta_hat by autodiff. `.se`, `.ci()`, `.summary()` then describe g.
        """
        if not callable(g):
            raise TypeError(f"g must be a function of the params pytree, got {type(g).__name__}")
        params = self.unravel(self.estimate)
        with jax.enable_x64(True):
            _, unravel = ravel_pytree(jax.tree.map(jnp.asarray, params))

            def flat_g(theta):
                return jnp.atleast_1d(ravel_pytree(g(unravel(theta)))[0])

            theta = jnp.asarray(self.estimate, jnp.float64)
            t0 = np.asarray(flat_g(theta))
            G = np.asarray(jax.jacfwd(flat_g)(theta))
            reps = np.asarray(jax.jit(jax.vmap(flat_g))(jnp.asarray(self.replicates)))
            out_shape = jax.eval_shape(g, params)
        names = parameter_names(out_shape)
        base = getattr(g, "__name__", "g")
        base = base if base.isidentifier() else "g"
        if not jax.tree_util.tree_flatten_with_path(out_shape)[0][0][0]:  # a bare array
            names = tuple(base + n[len("theta") :] for n in names)
        leaves, treedef = jax.tree.flatten(out_shape)
        return BootstrapResult(
            estimate=t0,
            replicates=np.where(self.converged[:, None], reps, np.nan),
            status=self.status,
            n_iter=self.n_iter,
            influence=np.asarray(self.influence) @ G.T,
            fit_cov=G @ np.asarray(self.fit_cov) @ G.T,
            free=np.ones(len(t0), bool),
            names=names,
            params_def=(treedef, tuple(x.shape for x in leaves)),
            kind=self.kind,
            detail=self.detail,
            cov_type=f"delta method, {self.cov_type}",
        )

    # ---- presentation
    def table(self, method: str = "bca", level: float = 0.95) -> dict[str, np.ndarray]:
        """Columns estimate, bias, std_err (bootstrap), ci_lower, ci_upper, fit_std_err."""
        t0 = np.asarray(self.estimate, float)
        t = self._t()
        lo, hi = self._bounds(method, level)
        return {
            "estimate": t0,
            "bias": t.mean(axis=0) - t0 if len(t) else np.full_like(t0, np.nan),
            "std_err": self._sd(),
            "ci_lower": lo,
            "ci_upper": hi,
            "fit_std_err": np.sqrt(np.clip(np.diagonal(np.asarray(self.fit_cov)), 0, None)),
        }

    def to_frame(self, method: str = "bca", level: float = 0.95):
        """The table as a pandas DataFrame indexed by parameter name."""
        import pandas as pd

        return pd.DataFrame(self.table(method, level), index=pd.Index(self.names, name="parameter"))

    def summary(self, method: str = "bca", level: float = 0.95) -> str:
        """Replications and failures, then estimate, bias, bootstrap se, interval, fit se."""
        n_ok = int(self.converged.sum())
        lines = [
            f"Bootstrap (jaxmle): {self.kind}, {self.n_boot} replications, {n_ok} succeeded, "
            f"{self.n_failed} failed (left out)",
            f"  {self.detail}",
        ]
        lines += failure_lines(np.asarray(self.status))
        if n_ok < 2:
            return "\n".join(lines)
        t = self.table(method, level)
        label = {"bca": "BCa", "percentile": "percentile", "basic": "basic"}[method]
        width = max(12, *(len(n) for n in self.names)) + 1
        lo, hi = f"[{(1 - level) / 2:.3g}", f"{(1 + level) / 2:.3g}]"
        cols = ("estimate", "bias", "boot.se", lo, hi, "fit.se")
        head = f"{'':<{width}}" + "".join(f"{c:>13}" for c in cols)
        rule = "-" * len(head)
        lines += [
            f"  intervals: {label}, level {level:g}; fit.se: {self.cov_type}",
            rule,
            head,
            rule,
        ]
        keys = ("estimate", "bias", "std_err", "ci_lower", "ci_upper", "fit_std_err")
        for i, name in enumerate(self.names):
            if not self.free[i]:
                lines.append(f"{name:<{width}}{t['estimate'][i]:>13.6g}   (fixed)")
                continue
            lines.append(f"{name:<{width}}" + "".join(f" {t[c][i]:>12.6g}" for c in keys))
        lines.append(rule)
        extreme = _extreme_note(method, level, n_ok)
        return "\n".join(lines + ([extreme] if extreme else []))

    def __str__(self) -> str:
        return self.summary()

    def plot(self, method: str = "bca", level: float = 0.95, bins: int = 40):
        """Histogram of each parameter's replications, with t_0 and the `method` interval.

        Returns a matplotlib `Figure`, one panel per parameter.
        """
        figure = _new_figure()
        t = self._t()
        lo, hi = self._bounds(method, level)
        idx = [j for j in range(len(self.names)) if self.free[j]]
        ncols = min(len(idx), 4)
        nrows = -(-len(idx) // ncols)
        fig = figure(figsize=(3.2 * ncols, 2.6 * nrows), layout="constrained")
        axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
        for ax in axes[len(idx) :]:
            ax.set_visible(False)
        for ax, j in zip(axes, idx, strict=False):
            ax.hist(t[:, j], bins=bins, density=True, color="0.75")
            ax.axvline(self.estimate[j], color="k", lw=0.9, label="estimate")
            for v in (lo[j], hi[j]):
                ax.axvline(v, color="C0", lw=0.9, ls="--")
            ax.set_title(self.names[j])
        axes[0].plot([], [], color="C0", ls="--", label=f"{method} {level:g}")
        axes[0].legend(fontsize="small")
        fig.suptitle(f"Bootstrap distributions ({self.kind}, {len(t)} replications)")
        return fig


# ---------------------------------------------------------------- interval arithmetic (R's)


def norm_inter(t_sorted: np.ndarray, alpha) -> np.ndarray:
    """The alpha-quantiles of sorted replications as R `boot:::norm.inter`: order statistic
    k = (R+1) alpha, interpolated on the normal scale, Phi^-1(alpha) between Phi^-1(k/(R+1)) and
    Phi^-1((k+1)/(R+1)) when k is not an integer; the extreme ones outside 1..R."""
    t = np.asarray(t_sorted, float)
    R = len(t)
    out = []
    for a in np.atleast_1d(alpha):
        rk = (R + 1) * a
        k = math.trunc(rk)
        if k == rk and 1 <= k <= R:
            out.append(t[k - 1])
        elif k <= 0:
            out.append(t[0])
        elif k >= R:
            out.append(t[-1])
        else:
            z, zk, zk1 = (
                _NORMAL.inv_cdf(a),
                _NORMAL.inv_cdf(k / (R + 1)),
                _NORMAL.inv_cdf((k + 1) / (R + 1)),
            )
            out.append(t[k - 1] + (z - zk) / (zk1 - zk) * (t[k] - t[k - 1]))
    return np.asarray(out)


def bca_bounds(t_sorted, t0: float, L, alpha) -> np.ndarray:
    """BCa ends (R `boot:::bca.ci` with `L` given); NaN when z_0 is infinite."""
    p = np.mean(t_sorted < t0)
    if not 0.0 < p < 1.0:
        return np.full(len(alpha), np.nan)
    w = _NORMAL.inv_cdf(p)
    L = np.asarray(L, float)
    a = np.sum(L**3) / (6.0 * np.sum(L**2) ** 1.5)
    if not np.isfinite(a):
        return np.full(len(alpha), np.nan)
    z = np.array([_NORMAL.inv_cdf(x) for x in alpha])
    adj = [_NORMAL.cdf(w + (w + zj) / (1 - a * (w + zj))) for zj in z]
    return norm_inter(t_sorted, adj)


def _extreme_note(method, level, n_ok) -> str:
    rk = (n_ok + 1) * np.array([(1 - level) / 2, (1 + level) / 2])
    if method != "bca" and not np.all((rk > 1) & (rk < n_ok)):
        return "  note: too few replications for this level: extreme order statistics are the ends"
    return ""
