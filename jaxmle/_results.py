"""FitResult: one maximum-likelihood fit as an immutable pytree, and the words for its status.

Every leaf is a fixed-shape array, so `jax.jit` and `jax.vmap` pass through it: under `vmap(fit)` each
leaf gains a leading batch axis, and `res[i]` takes fit i back out. A number that could not be computed
is NaN next to a status code, never None. `summary()` and `to_frame()` run on the host.
"""

from __future__ import annotations

import enum
import functools
import math
import statistics
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.scipy.special import ndtr, ndtri

PyTree = Any


class Status(enum.IntEnum):
    """Outcome of a fit; `FitResult.status` holds the code, `FitResult.message` the words."""

    SUCCESSFUL = 0
    MAX_ITER = 1
    NONFINITE = 2
    NONFINITE_START = 3
    LINE_SEARCH_FAILED = 4
    SEPARATION = 5
    NOT_CONCAVE = 6
    SINGULAR_INFORMATION = 7


MESSAGES = {
    Status.SUCCESSFUL: "converged",
    Status.MAX_ITER: "not converged: max_iter reached before the scaled gradient fell below tol",
    Status.NONFINITE: "failed: the log-likelihood or its derivatives became NaN or infinite",
    Status.NONFINITE_START: "failed: the log-likelihood is -inf or NaN at the start values",
    Status.LINE_SEARCH_FAILED: (
        "not converged: the line search found no step that increases lnL (the maximum may be "
        "ill-determined, or the log-density not smooth)"
    ),
    Status.SEPARATION: (
        "the MLE does not exist: lnL keeps increasing while some estimates diverge and the "
        "information along that direction vanishes (complete or quasi-complete separation); "
        "estimates and standard errors along it are meaningless"
    ),
    Status.NOT_CONCAVE: (
        "the Hessian is not negative definite at the final point: not a maximum; "
        "standard errors are NaN"
    ),
    Status.SINGULAR_INFORMATION: (
        "the information matrix is singular: some parameters (or combinations) are not "
        "identified; standard errors are NaN"
    ),
}

COV_LABELS = {
    "hessian": "observed information (OIM)",
    "expected": "expected information (EIM)",
    "opg": "outer product of gradients (OPG)",
    "sandwich": "robust sandwich (HC0)",
    "cluster": "cluster-robust sandwich, G/(G-1)",
}


def _key_str(key) -> str:
    if isinstance(key, jax.tree_util.DictKey):
        return str(key.key)
    if isinstance(key, jax.tree_util.GetAttrKey):
        return key.name
    if isinstance(key, jax.tree_util.SequenceKey):
        return f"[{key.idx}]"
    return str(key)


def parameter_names(tree: PyTree) -> tuple[str, ...]:
    """Names in ravel_pytree order: `b0`, `b[0]`, `W[1,2]`, `outer.inner[3]`."""
    names = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        base = ""
        for key in path:
            part = _key_str(key)
            base += part if (part.startswith("[") or not base) else "." + part
        base = base or "theta"  # a bare array as init
        shape = np.shape(leaf)
        if shape == ():
            names.append(base)
        else:
            for idx in np.ndindex(*shape):
                names.append(f"{base}[{','.join(map(str, idx))}]")
    return tuple(names)


def _float64_scope(fn):
    """Run a method of a float64 result with 64-bit JAX enabled, whatever the global setting.

    jaxmle computes in float64 even when the user's JAX runs in 32-bit mode; without this, the
    arithmetic of a method called outside `fit` would silently truncate the result to float32.
    """

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        if self.loglik.dtype == jnp.float64 and not isinstance(self.loglik, jax.core.Tracer):
            with jax.enable_x64(True):
                return fn(self, *args, **kwargs)
        return fn(self, *args, **kwargs)

    return wrapper


class FitResult(eqx.Module):
    """One ML fit. Matrices are k x k in `ravel_pytree(init)` order (names in `names`).

    `information` is -H at theta_hat, `expected_information` the model's I(theta_hat) (NaN unless
    fitted with `expected=`), `opg` is sum_i w_i u_i u_i', `meat` the sandwich meat and
    `score_groups` the per-cluster score sums (G x k; 0 x k without groups): enough to compute every
    covariance kind later with `res.covariance(kind)` / `res.with_cov(kind)`, without the data.
    Fixed parameters (`fit(..., fixed=...)`) have zero rows and columns in `cov`, and `score` and
    `information` cover the full vector, for score tests.
    """

    params: PyTree
    se: PyTree
    cov: jax.Array
    loglik: jax.Array
    score: jax.Array
    information: jax.Array
    expected_information: jax.Array
    opg: jax.Array
    meat: jax.Array
    score_groups: jax.Array
    n_obs: jax.Array
    n_iter: jax.Array
    n_damped: jax.Array
    scaled_gradient: jax.Array
    status: jax.Array
    names: tuple[str, ...] = eqx.field(static=True)
    free: tuple[bool, ...] = eqx.field(static=True)
    method: str = eqx.field(static=True)
    cov_type: str = eqx.field(static=True)
    context: Any = eqx.field(static=True, default=None)  # `_fit.FitContext` of a host-side fit

    # ---- derived numbers (pure jnp: they work on batched results too) ----
    @property
    def converged(self) -> jax.Array:
        return self.status == Status.SUCCESSFUL

    @property
    def n_params(self) -> int:
        """Number of estimated (free) parameters, the k of AIC and BIC and of LR-test df."""
        return int(sum(self.free))

    @property
    @_float64_scope
    def aic(self) -> jax.Array:
        return -2.0 * self.loglik + 2.0 * self.n_params

    @property
    @_float64_scope
    def bic(self) -> jax.Array:
        return -2.0 * self.loglik + jnp.log(self.n_obs) * self.n_params

    @property
    @_float64_scope
    def coef(self) -> jax.Array:
        """theta_hat as a flat (k,) vector (one fit; under vmap call inside the vmapped function)."""
        return ravel_pytree(self.params)[0]

    @property
    @_float64_scope
    def zvalues(self) -> PyTree:
        return jax.tree.map(jnp.divide, self.params, self.se)

    @property
    @_float64_scope
    def pvalues(self) -> PyTree:
        """Two-sided P(|Z| > |z|), z = theta_hat_j / se_j (Wald, theory.md)."""
        return jax.tree.map(lambda z: 2.0 * ndtr(-jnp.abs(z)), self.zvalues)

    @_float64_scope
    def conf_int(self, level: float = 0.95) -> tuple[PyTree, PyTree]:
        """Wald interval theta_hat_j -/+ z_{(1+level)/2} se_j, as (lower, upper) pytrees."""
        q = ndtri(0.5 + level / 2.0)
        lower = jax.tree.map(lambda p, s: p - q * s, self.params, self.se)
        upper = jax.tree.map(lambda p, s: p + q * s, self.params, self.se)
        return lower, upper

    @_float64_scope
    def covariance(self, kind: str) -> jax.Array:
        """The covariance of another kind, from the stored matrices (no refit, no data)."""
        if kind == "cluster" and self.score_groups.shape[-2] == 0:
            raise ValueError("cov='cluster' needs cluster ids: fit with groups=... first")
        traced = isinstance(self.expected_information, jax.core.Tracer)
        if kind == "expected" and not traced and not np.isfinite(self.expected_information).all():
            raise ValueError("cov='expected' needs a fit with expected=(predict, fisher)")
        return _stored_covariance(
            kind,
            self.free,
            self.information,
            self.opg,
            self.meat,
            self.score_groups,
            self.expected_information,
        )

    @_float64_scope
    def with_cov(self, kind: str) -> FitResult:
        """The same fit with `cov`, `se` and `cov_type` of another kind."""
        cov = self.covariance(kind)
        _, unravel = ravel_pytree(self.params)
        se = unravel(jnp.sqrt(jnp.diagonal(cov)))
        return type(self)(**{**_fields(self), "cov": cov, "se": se, "cov_type": kind})

    # ---- profile likelihood (host: refits the model; see `jaxmle._profile`) ----
    def profile_ci(self, name: str, level: float = 0.95):
        """Profile-likelihood interval (lower, upper) for parameter `name` (as in `summary()`)."""
        from ._profile import profile_ci

        return profile_ci(self, name, level)

    def profile_plot(self, name: str, level: float = 0.95, ax=None):
        """Plot the profile log-likelihood of `name` with its chi-square cut-off (matplotlib)."""
        from ._profile import profile_plot

        return profile_plot(self, name, level, ax=ax)

    # ---- host-side presentation ----
    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(np.shape(self.status))

    @_float64_scope
    def __getitem__(self, index) -> FitResult:
        """Fit `index` of a batched result (from `jax.vmap(fit)`)."""
        if not self.batch_shape:
            raise TypeError("this FitResult holds a single fit; there is no batch axis to index")
        return jax.tree.map(lambda x: x[index], self)

    @property
    def message(self) -> str:
        self._require_single("message")
        return MESSAGES[Status(int(self.status))]

    def _require_single(self, what: str) -> None:
        if self.batch_shape:
            raise ValueError(
                f"{what}() needs one fit, but this result holds a batch of shape "
                f"{self.batch_shape} (from jax.vmap); take one fit with res[i]"
            )

    def table(self, level: float = 0.95) -> dict[str, np.ndarray]:
        """Columns of the coefficient table as numpy arrays (host)."""
        self._require_single("table")
        est = np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(self.params)])
        se = np.sqrt(np.diagonal(np.asarray(self.cov)))
        free = np.asarray(self.free)
        se = np.where(free, se, np.nan)
        return coefficient_table(est, se, level)

    def to_frame(self, level: float = 0.95):
        """The coefficient table as a pandas DataFrame indexed by parameter name."""
        import pandas as pd

        return pd.DataFrame(self.table(level), index=pd.Index(self.names, name="parameter"))

    def summary(self, level: float = 0.95) -> str:
        """A results table: estimate, std. error, z, P>|z|, CI; N, lnL, AIC, BIC, method, status."""
        self._require_single("summary")
        t = self.table(level)
        lo, hi = (1 - level) / 2, (1 + level) / 2
        width = max(12, *(len(n) for n in self.names)) + 1
        head = [
            ("Method", f"{self.method}, {int(self.n_iter)} iterations"),
            ("Covariance", f"{self.cov_type}: {COV_LABELS.get(self.cov_type, self.cov_type)}"),
            ("N", f"{float(self.n_obs):.10g}"),
            ("Parameters", f"{self.n_params}"),
            *(
                [("Clusters", f"{self.score_groups.shape[-2]}")]
                if self.score_groups.shape[-2]
                else []
            ),
            ("Log-likelihood", f"{float(self.loglik):.6f}"),
            ("AIC", f"{-2 * float(self.loglik) + 2 * self.n_params:.4f}"),
            ("BIC", f"{-2 * float(self.loglik) + math.log(float(self.n_obs)) * self.n_params:.4f}"),
            ("Status", f"{self.message} (scaled gradient {float(self.scaled_gradient):.2e})"),
        ]
        if int(self.n_damped):
            head.append(
                (
                    "Note",
                    f"H was not negative definite at {int(self.n_damped)} iterations"
                    " (damped steps)",
                )
            )
        lines = ["Maximum-likelihood fit (jaxmle)"] + [f"  {k:<15} {v}" for k, v in head]
        rule = "-" * (width + 70)
        cols = f"{'':<{width}}{'estimate':>12}{'std.err':>12}{'z':>9}{'P>|z|':>9}"
        cols += f"{f'[{lo:.3g}':>14}{f'{hi:.3g}]':>14}"
        lines += [rule, cols, rule]
        for i, name in enumerate(self.names):
            if not self.free[i]:
                lines.append(f"{name:<{width}}{t['estimate'][i]:>12.6g}   (fixed)")
                continue
            lines.append(table_row(name, t, i, width))
        lines.append(rule)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary() if not self.batch_shape else repr(self)


def table_row(name: str, t: dict, i: int, width: int) -> str:
    """One line of a coefficient table: name, estimate, std. error, z, p-value, interval."""
    return (
        f"{name:<{width}}{t['estimate'][i]:>12.6g}{t['std_err'][i]:>12.6g}"
        f"{t['z'][i]:>9.3f}{t['p_value'][i]:>9.4f}"
        f"{t['ci_lower'][i]:>14.6g}{t['ci_upper'][i]:>14.6g}"
    )


def coefficient_table(est, se, level: float) -> dict[str, np.ndarray]:
    """Host-side columns: estimate, std_err, z = est/se, two-sided normal p-value, Wald interval."""
    z = est / se
    p = np.array([math.erfc(abs(v) / math.sqrt(2.0)) if np.isfinite(v) else np.nan for v in z])
    q = statistics.NormalDist().inv_cdf(0.5 + level / 2.0)
    return {"estimate": est, "std_err": se, "z": z, "p_value": p,
            "ci_lower": est - q * se, "ci_upper": est + q * se}  # fmt: skip


def _fields(res: FitResult) -> dict:
    return {f: getattr(res, f) for f in res.__dataclass_fields__}


@functools.partial(jax.jit, static_argnums=(0, 1))
def _stored_covariance(kind, free, information, opg, meat, score_groups, expected):
    """cov of `kind` over the free block, embedded in k x k (one compiled program per kind and k)."""
    from ._covariance import covariance

    mask = np.asarray(free)
    blocks = (_block(m, mask) for m in (information, opg, meat))
    cov, _ = covariance(kind, *blocks, score_groups[..., mask], _block(expected, mask))
    return _embed_block(cov, mask)


def _block(m, mask):
    return m[..., mask, :][..., :, mask]


def _embed_block(block, mask):
    """Put the free x free block back into k x k with zero rows/columns for fixed parameters."""
    idx = np.flatnonzero(np.asarray(mask))
    k = len(mask)
    out = jnp.zeros((*block.shape[:-2], k, k), block.dtype)
    return out.at[..., idx[:, None], idx[None, :]].set(block)
