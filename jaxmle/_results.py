"""FitResult: one maximum-likelihood fit as plain data (an immutable pytree) and its presentation.

Every leaf is a fixed-shape array and the static part holds only small descriptions that two fits of
one model share (parameter names, the free mask, the method, the covariance kind), so two fits of
the same model have the same treedef: they stack, tree-map and pass through one compiled `jit`
without a retrace. Under `vmap(fit)` each leaf gains a leading batch axis, and `res[i]` takes fit i
back out. A number that could not be computed is NaN next to a status code, never None.

What a refit needs (the model, the data, the options) is not part of the pytree: a host-side fit
carries it beside the data as a typed handle, `res.problem` (a `_fit.Problem`), which `jit`, `vmap`
and tree operations drop. `summary()` and `to_frame()` run on the host.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.scipy.special import ndtr

from ._covariance import KINDS, CovKind, Pieces, check_kind, covariance
from ._scope import host64, traced
from ._status import MESSAGES, Status
from ._tables import coefficient_table, head_lines, normal_quantile, table_lines

PyTree = Any


def result_class(cls):
    """Make `cls` a frozen keyword-only dataclass and a pytree: fields marked `static()` are treedef
    metadata, the others leaves. Hidden handles (`_handles`) live beside the fields, outside the
    pytree: tree operations drop them, `replace` carries them."""
    cls = dataclasses.dataclass(frozen=True, kw_only=True, eq=False)(cls)
    return jax.tree_util.register_dataclass(cls)


def static(**kwargs):
    """A dataclass field that is part of the treedef (hashable, equal across fits of one model)."""
    return dataclasses.field(metadata={"static": True}, **kwargs)


def replace(res, **changes):
    """A copy of a result with some fields changed and its hidden handles carried over."""
    out = dataclasses.replace(res, **changes)
    for handle in res._handles:
        object.__setattr__(out, handle, getattr(res, handle))
    return out


def with_handles(res, **handles):
    """`res` with hidden handles set (called once, before the result is returned)."""
    for name, value in handles.items():
        if name not in res._handles:
            raise AttributeError(f"{type(res).__name__} has no handle {name!r}")
        object.__setattr__(res, name, value)
    return res


# ---------------------------------------------------------------- parameter names


def _key_str(key) -> str:
    if isinstance(key, jax.tree_util.DictKey):
        return str(key.key)
    if isinstance(key, jax.tree_util.GetAttrKey):
        return key.name
    if isinstance(key, jax.tree_util.SequenceKey):
        return f"[{key.idx}]"
    return str(key)


def parameter_names(tree: PyTree, labels: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """Names in ravel_pytree order: `b0`, `b[0]`, `W[1,2]`, `outer.inner[3]`.

    `labels` ({top-level key: names of its entries in ravel order}, or a string for a scalar) names
    entries instead: `{"b": ["age", "income"]}` prints "age", "income". Names must be unique.
    """
    labels = dict(labels or {})
    names = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        base = ""
        for key in path:
            part = _key_str(key)
            base += part if (part.startswith("[") or not base) else "." + part
        base = base or "theta"  # a bare array as init
        shape = np.shape(leaf)
        top = path[0].key if path and isinstance(path[0], jax.tree_util.DictKey) else None
        if top in labels and len(path) == 1:
            given = labels.pop(top)
            given = [given] if isinstance(given, str) else [str(x) for x in given]
            if len(given) != max(1, math.prod(shape)):
                raise ValueError(
                    f"names[{top!r}] has {len(given)} names for {math.prod(shape)} entries "
                    f"(shape {shape})"
                )
            names += given
        elif shape == ():
            names.append(base)
        else:
            names += [f"{base}[{','.join(map(str, idx))}]" for idx in np.ndindex(*shape)]
    if labels:
        raise KeyError(f"names= labels keys {sorted(labels)} that are not array leaves of init")
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        if n in seen:
            raise ValueError(
                f"two parameters would both be called {n!r} (entries {seen[n]} and {i} in ravel "
                "order); rename a key of init or pass names= labels that are unique"
            )
        seen[n] = i
    return tuple(names)


# ---------------------------------------------------------------- the result


@result_class
class FitResult:
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
    names: tuple[str, ...] = static()
    free: tuple[bool, ...] = static()
    method: str = static()
    cov_type: str = static()

    cov_kinds: ClassVar[Mapping[str, CovKind]] = KINDS
    _handles: ClassVar[tuple[str, ...]] = ("_problem",)
    _problem: ClassVar[Any] = None  # set per instance by `with_handles`

    # ---- the handle beside the data
    @property
    def problem(self):
        """What a refit needs (model, data, options): a `Problem`, held by host-side fits only."""
        if self._problem is None:
            raise ValueError(
                "this result does not hold its model and data (it came out of jit, vmap or a "
                "tree operation); give them back with jm.attach(res, logpdf, data, **fit_options)"
            )
        return self._problem

    @property
    def has_problem(self) -> bool:
        return self._problem is not None

    # ---- derived numbers (pure jnp: they work on batched results too)
    @property
    def converged(self) -> jax.Array:
        return self.status == Status.SUCCESSFUL

    @property
    def n_params(self) -> int:
        """Number of estimated (free) parameters, the k of AIC and BIC and of LR-test df."""
        return int(sum(self.free))

    @property
    @host64
    def aic(self) -> jax.Array:
        return -2.0 * self.loglik + 2.0 * self.n_params

    @property
    @host64
    def bic(self) -> jax.Array:
        return -2.0 * self.loglik + jnp.log(self.n_obs) * self.n_params

    @property
    @host64
    def coef(self) -> jax.Array:
        """theta_hat as a flat (k,) vector (one fit; under vmap call inside the vmapped function)."""
        return ravel_pytree(self.params)[0]

    @property
    @host64
    def zvalues(self) -> PyTree:
        return jax.tree.map(jnp.divide, self.params, self.se)

    @property
    @host64
    def pvalues(self) -> PyTree:
        """Two-sided P(|Z| > |z|), z = theta_hat_j / se_j (Wald; docs/theory.md, "Asymptotic normality")."""
        return jax.tree.map(lambda z: 2.0 * ndtr(-jnp.abs(z)), self.zvalues)

    @host64
    def conf_int(self, level: float = 0.95) -> tuple[PyTree, PyTree]:
        """Wald interval theta_hat_j -/+ z_{(1+level)/2} se_j, as (lower, upper) pytrees."""
        q = normal_quantile(level)
        lower = jax.tree.map(lambda p, s: p - q * s, self.params, self.se)
        upper = jax.tree.map(lambda p, s: p + q * s, self.params, self.se)
        return lower, upper

    # ---- covariance kinds (from the stored pieces: no refit, no data)
    def pieces(self) -> Pieces:
        """The stored sums over the free parameters that every covariance kind is made from."""
        mask = np.asarray(self.free)
        return Pieces(
            _block(self.information, mask),
            _block(self.opg, mask),
            _block(self.meat, mask),
            self.score_groups[..., mask],
            _block(self.expected_information, mask),
            self.n_obs,
        )

    def available(self) -> dict[str, bool]:
        """Which needs of covariance kinds this fit meets (see `_covariance.NEEDS`)."""
        info = self.expected_information
        return {
            "groups": self.score_groups.shape[-2] > 0,
            "expected": traced(info) or bool(np.isfinite(np.asarray(info)).all()),
        }

    def check_cov(self, kind: str, **options) -> CovKind:
        """The registry entry of `kind`, or a plain error if this fit cannot give it."""
        return check_kind(self.cov_kinds, kind, has=self.available(), options=options)

    @host64
    def covariance(self, kind: str, **options) -> jax.Array:
        """The covariance of another kind (k x k, zero rows for fixed parameters)."""
        entry = self.check_cov(kind, **options)
        return _stored_covariance(entry, self.free, self.pieces(), tuple(sorted(options.items())))

    @host64
    def with_cov(self, kind: str, **options) -> FitResult:
        """The same fit with `cov`, `se` and `cov_type` of another kind."""
        cov = self.covariance(kind, **options)
        _, unravel = ravel_pytree(self.params)
        se = unravel(jnp.sqrt(jnp.diagonal(cov, axis1=-2, axis2=-1)))
        return replace(self, cov=cov, se=se, cov_type=kind)

    # ---- host-side presentation
    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(np.shape(self.status))

    @host64
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
        return coefficient_table(est, np.where(np.asarray(self.free), se, np.nan), level)

    def to_frame(self, level: float = 0.95):
        """The coefficient table as a pandas DataFrame indexed by parameter name."""
        import pandas as pd

        return pd.DataFrame(self.table(level), index=pd.Index(self.names, name="parameter"))

    def cov_label(self) -> str:
        entry = self.cov_kinds.get(self.cov_type)
        return f"{self.cov_type}: {entry.label}" if entry else self.cov_type

    def head(self) -> list[tuple[str, str]]:
        """The `key value` lines above the table (subclasses add theirs)."""
        n_groups = self.score_groups.shape[-2]
        head = [
            ("Method", f"{self.method}, {int(self.n_iter)} iterations"),
            ("Covariance", self.cov_label()),
            ("N", f"{float(self.n_obs):.10g}"),
            ("Parameters", f"{self.n_params}"),
            *([("Clusters", f"{n_groups}")] if n_groups else []),
            ("Log-likelihood", f"{float(self.loglik):.6f}"),
            ("AIC", f"{-2 * float(self.loglik) + 2 * self.n_params:.4f}"),
            ("BIC", f"{-2 * float(self.loglik) + math.log(float(self.n_obs)) * self.n_params:.4f}"),
            ("Status", f"{self.message} (scaled gradient {float(self.scaled_gradient):.2e})"),
        ]
        if int(self.n_damped):
            note = f"H was not negative definite at {int(self.n_damped)} iterations (damped steps)"
            head.append(("Note", note))
        return head

    def summary(self, level: float = 0.95) -> str:
        """A results table: estimate, std. error, z, P>|z|, CI; N, lnL, AIC, BIC, method, status."""
        self._require_single("summary")
        fixed = [not f for f in self.free]
        lines = head_lines("Maximum-likelihood fit (jaxmle)", self.head())
        lines += table_lines(self.names, self.table(level), level, fixed=fixed)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary() if not self.batch_shape else repr(self)


@functools.partial(jax.jit, static_argnums=(0, 1, 3))
def _stored_covariance(entry, free, pieces, options):
    """cov of `entry` over the free block, embedded in k x k (one compiled program per kind, k)."""

    def one(p):
        return covariance(entry, p, **dict(options))[0]

    for _ in range(np.ndim(pieces.n_obs)):  # a batched result: one covariance per fit
        one = jax.vmap(one)
    return embed_block(one(pieces), free)


def _block(m, mask):
    return m[..., mask, :][..., :, mask]


def embed_block(block, mask):
    """Put the free x free block back into k x k with zero rows/columns for fixed parameters."""
    idx = np.flatnonzero(np.asarray(mask))
    k = len(mask)
    out = jnp.zeros((*block.shape[:-2], k, k), block.dtype)
    return out.at[..., idx[:, None], idx[None, :]].set(block)
