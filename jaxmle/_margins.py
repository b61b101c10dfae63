"""margins(): average marginal effects, average predictions and effects at representative values of any
fitted model, with exact delta-method standard errors.

For a per-observation quantity f(theta, x_i) (`fn`: a probability, an expected count, a conditional
mean) over data rows x_1..x_n, with weights v_i (default 1) and V = sum_i v_i:

    prediction   m = (1/V) sum_i v_i f(theta_hat, x_i)
    slope        m_j = (1/V) sum_i v_i d f(theta_hat, x_i) / d x_ij                 (continuous x_j)
    change       m_j = (1/V) sum_i v_i [f(theta_hat, x_i[x_j := 1]) - f(theta_hat, x_i[x_j := 0])]
                                                                                   (binary x_j)
    contrast     m_gl = (1/V) sum_i v_i [f(theta_hat, x_i[g := l]) - f(theta_hat, x_i[g := l_0])]
                                                     (categorical g, each level l against the first)
    at           every row with x_v := a_v for the representative values a (a grid of them), or
                 every numeric column at its mean (`at="mean"`, Stata's `atmeans`)

    Cov(m) = J V_theta J',  J = dm / dtheta' at theta_hat by autodiff (exact), V_theta the fit's
    covariance (`cov=` another kind or a matrix).

Stata `margins, dydx(*)` / `margins` / `margins, at(x = (1 2))` / `atmeans` (factor variables `i.g`
give the contrasts, 0/1 variables the changes when declared `i.`); R `marginaleffects::avg_slopes(m)`
and `avg_predictions(m)` (same estimates; their standard errors differentiate by finite differences);
statsmodels `res.get_margeff(at="overall", dummy=True)` (binary columns as changes) and
`at="mean"`.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ._glmmargins import Column, glm_inputs
from ._inference import DeltaResult
from ._results import FitResult
from ._scope import host64
from ._tables import table_lines
from ._testing import cov_label, cov_matrix

PyTree = Any
EFFECTS = ("slope", "prediction")
TYPES = ("continuous", "binary", "categorical")


class Term(NamedTuple):
    """One reported effect: its key, row label, and the settings it compares (or a derivative)."""

    key: str
    label: str
    kind: str  # "dydx" | "change" | "prediction"
    var: str | None = None
    high: tuple = ()  # ((column, value), ...) set for the first term of a change
    low: tuple = ()  # ... and for the term it is compared with


class MarginsResult(DeltaResult):
    """Margins with delta-method standard errors: `.estimate` and `.se` are keyed by variable
    (arrays with a leading axis over the `at` grid when there is one, and a trailing one over the
    levels of a categorical variable); `.cov` covers every row of the table (`names` order)."""

    title: str = eqx.field(static=True, default="Margins")
    notes: tuple[str, ...] = eqx.field(static=True, default=())

    def summary(self, level: float = 0.95) -> str:
        lines = [f"{self.title} (jaxmle; delta-method standard errors, covariance {self.cov_type})"]
        lines += [f"  {n}" for n in self.notes]
        lines += table_lines(self.names, self.table(level), level)
        return "\n".join(lines)


@host64
def margins(
    res: FitResult,
    fn: Callable[[PyTree, PyTree], jax.Array] | None = None,
    data=None,
    at=None,
    *,
    variables: Sequence[str] | None = None,
    effect: str = "slope",
    types: Mapping[str, str] | None = None,
    weights=None,
    cov=None,
) -> MarginsResult:
    """Average marginal effects (or predictions) of `fn` over `data`, with exact delta-method SEs.

    Args:
      res: any fitted result (`jm.fit`, `jm.glm`, ...); its params are theta.
      fn: `fn(theta, obs) -> scalar`, the quantity of interest for ONE row (theta shaped like
        `res.params`, obs a dict of that row's variables). For a `jm.glm` result it may be
        omitted: the GLM's mean mu_i = g^-1(x_i'b + offset_i) over the design's columns.
      data: a pandas DataFrame or a dict of (N,) columns: the rows to average over (for a
        `jm.glm` result: the rows fitted, or a new frame). Text, categorical and bool columns reach
        `fn` as integer codes 0..L-1 (in the order of `Column.levels`).
      at: None (each row as it is), "mean" (every numeric column at its mean: one representative
        row), or {variable: value | [values] | "mean"}: those variables set to the value in every
        row, a grid over the lists; effects are averaged over the rows at each grid point.
      variables: the variables whose effects are reported (default: every column `fn` depends on).
      effect: "slope" (derivatives for continuous, changes 0 -> 1 for binary, contrasts with the
        first level for categorical variables) or "prediction" (the average of fn itself).
      types: {variable: "continuous" | "binary" | "categorical"} overriding the automatic choice:
        categorical for text/category columns, binary for bool and 0/1 columns, else continuous.
      weights: (N,) weights of the average (default equal).
      cov: the covariance of theta (a kind of `res.covariance`, or a (k, k) matrix); default the
        fit's own.

    Returns a `MarginsResult` (`.estimate`, `.se`, `.cov`, `.conf_int()`, `.summary()`,
    `.to_frame()`).
    """
    if effect not in EFFECTS:
        raise ValueError(f"unknown effect {effect!r}; choose one of {EFFECTS}")
    if np.ndim(res.status):
        raise ValueError("margins needs one fit; index a batched result first (res[i])")
    label = cov_label(res, cov)
    notes: list[str] = []
    if fn is None:  # a GLM's mean over its design's columns
        fn, data, variables, types, notes = glm_inputs(res, data, variables, types, effect)
    elif data is None:
        raise ValueError("margins needs data=: the rows to average fn over")
    if not callable(fn):
        raise TypeError(f"fn must be a function fn(theta, obs), got {type(fn).__name__}")
    columns = _columns(data, types)
    n = len(next(iter(columns.values())).values)
    w = np.ones(n) if weights is None else np.asarray(weights, float)
    if w.shape != (n,) or not np.all(np.isfinite(w) & (w >= 0)) or w.sum() <= 0:
        raise ValueError(f"weights must be {n} finite non-negative numbers, not all 0")
    points = _at_points(at, columns)
    obs = {k: jnp.asarray(c.values) for k, c in columns.items()}
    terms = _terms(res, fn, obs, columns, variables, effect, notes)
    theta = ravel_pytree(res.params)[0]
    kernel = _Kernel(fn, _Unravel.of(res.params), tuple(terms), points)
    values, J = _values_and_jacobian(kernel, theta, obs, jnp.asarray(w / w.sum()))
    V = cov_matrix(res, cov)
    c = J @ V @ J.T
    c = 0.5 * (c + c.T)
    return _result(terms, points, np.asarray(values), np.asarray(c), effect, at, label, notes)


# ---------------------------------------------------------------- data and what to report


def _columns(data, types) -> OrderedDict[str, Column]:
    import pandas as pd

    if isinstance(data, Mapping) and data and all(isinstance(c, Column) for c in data.values()):
        return OrderedDict(data)  # already prepared (the GLM front end)
    frame = data if isinstance(data, pd.DataFrame) else None
    items = frame.items() if frame is not None else dict(data).items()
    types = dict(types or {})
    out: OrderedDict[str, Column] = OrderedDict()
    for name, col in items:
        name = str(name)
        series = col if isinstance(col, pd.Series) else pd.Series(np.asarray(col))
        if series.ndim != 1:
            raise ValueError(f"data[{name!r}] must be one value per row, got shape {series.shape}")
        if series.isna().any():
            raise ValueError(
                f"data[{name!r}] has missing values at row {int(series.isna().argmax())}"
            )
        numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
        kind = types.pop(name, None)
        if kind is not None and kind not in TYPES:
            raise ValueError(f"types[{name!r}] = {kind!r}; choose one of {TYPES}")
        if kind is None:
            if not numeric and not pd.api.types.is_bool_dtype(series):
                kind = "categorical"
            elif pd.api.types.is_bool_dtype(series) or set(np.unique(series)) <= {0, 1}:
                kind = "binary"
            else:
                kind = "continuous"
        if kind == "categorical":
            cat = series.astype("category")
            out[name] = Column(cat.cat.codes.to_numpy().astype(np.int32), kind,
                               tuple(cat.cat.categories))  # fmt: skip
        elif not numeric and not pd.api.types.is_bool_dtype(series):
            raise ValueError(f"data[{name!r}] is not numeric: it can only be categorical")
        else:
            out[name] = Column(series.to_numpy(dtype=float), kind)
    if types:
        raise KeyError(f"types names {sorted(types)}, which are not columns of data")
    if not out:
        raise ValueError("data has no columns")
    return out


def _at_points(at, columns) -> tuple[tuple[tuple[str, float], ...], ...]:
    """The grid of representative settings ((column, value), ...); ((),) without `at`."""
    if at is None:
        return ((),)
    numeric = [k for k, c in columns.items() if c.type != "categorical"]
    if isinstance(at, str):
        if at != "mean":
            raise ValueError(f'at must be None, "mean" or a dict of values, got {at!r}')
        return (tuple((k, float(np.mean(columns[k].values))) for k in numeric),)
    if not isinstance(at, Mapping):
        raise TypeError(f'at must be None, "mean" or a dict {{variable: values}}, got {at!r}')
    axes = []
    for k, v in at.items():
        if k not in columns:
            raise KeyError(f"at names {k!r}, which is not a column of data ({list(columns)})")
        col = columns[k]
        values = [v] if isinstance(v, (str, int, float, np.number)) else list(v)
        coded = []
        for x in values:
            if isinstance(x, str) and x == "mean" and col.type != "categorical":
                coded.append(float(np.mean(col.values)))
            elif col.type == "categorical":
                if x not in col.levels:
                    raise ValueError(f"at[{k!r}] = {x!r} is not a level of {k} ({col.levels})")
                coded.append(col.levels.index(x))
            else:
                coded.append(float(x))
        axes.append([(k, x) for x in coded])
    return tuple(itertools.product(*axes))


def _terms(res, fn, obs, columns, variables, effect, notes) -> list[Term]:
    if effect == "prediction":
        if variables is not None:
            raise ValueError('variables= chooses effects; effect="prediction" averages fn itself')
        return [Term("prediction", "prediction", "prediction")]
    if variables is None:
        terms = [t for k, c in columns.items() for t in _terms_of(k, c)]
        kernel = _Kernel(fn, _Unravel.of(res.params), tuple(terms), ((),))
        rows = np.asarray(_per_row(kernel, ravel_pytree(res.params)[0], obs))
        used = {t.key for t, moves in zip(terms, (rows != 0).any(axis=0), strict=True) if moves}
        variables = [k for k in columns if k in used]
        if not variables:
            raise ValueError("fn depends on none of the columns of data: no effect to report")
    else:
        variables = [variables] if isinstance(variables, str) else list(variables)
        unknown = [v for v in variables if v not in columns]
        if unknown:
            raise KeyError(f"variables {unknown} are not columns of data ({list(columns)})")
    for v in variables:
        col = columns[v]
        if col.type == "categorical":
            if len(col.levels) < 2:
                raise ValueError(f"categorical {v} has one level: no contrast")
            notes.append(f"{v}: each level against {col.levels[0]}")
    return [t for v in variables for t in _terms_of(v, columns[v])]


def _terms_of(name: str, col: Column) -> list[Term]:
    if col.type == "continuous":
        return [Term(name, name, "dydx", name)]
    if col.type == "binary":
        return [Term(name, name, "change", name, ((name, 1.0),), ((name, 0.0),))]
    labels = col.labels or tuple(f"{name}[{lev}]" for lev in col.levels[1:])
    return [
        Term(name, label, "change", name, ((name, code),), ((name, 0),))
        for code, label in enumerate(labels, start=1)
    ]


# ---------------------------------------------------------------- the values and their Jacobian


class _Kernel(NamedTuple):
    """Per-row values of every term at every `at` point, term-major (the table's row order)."""

    fn: Callable
    unravel: Callable
    terms: tuple[Term, ...]
    points: tuple

    def __call__(self, theta_flat, row):
        theta = self.unravel(theta_flat)

        def f(r):
            return self.fn(theta, r)

        def setting(pairs):
            return {**row, **{k: jnp.asarray(v, row[k].dtype) for k, v in pairs}}

        out = []
        for term in self.terms:
            for point in self.points:
                at = setting(point)
                if term.kind == "prediction":
                    out.append(f(at))
                elif term.kind == "dydx":
                    v = term.var
                    out.append(jax.grad(lambda x, at=at, v=v: f({**at, v: x}))(at[v]))
                else:
                    out.append(f(setting(point + term.high)) - f(setting(point + term.low)))
        return jnp.stack(out)


@partial(jax.jit, static_argnames="kernel")
def _per_row(kernel, theta, obs):
    """(n, m) effects per row."""
    return jax.vmap(kernel, in_axes=(None, 0))(theta, obs)


@partial(jax.jit, static_argnames="kernel")
def _values_and_jacobian(kernel, theta, obs, w):
    """m = w' (per-row values) and J = dm/dtheta' (reverse mode when m < k). One program per
    kernel (fn, terms, `at` points) and data shape: a repeat call does not recompile."""

    def mean(t):
        return w @ jax.vmap(kernel, in_axes=(None, 0))(t, obs)

    values = mean(theta)
    jac = (jax.jacrev if values.shape[0] < theta.shape[0] else jax.jacfwd)(mean)(theta)
    return values, jac


class _Unravel(NamedTuple):
    """Flat theta -> the params pytree (hashable: part of the kernel's static key)."""

    treedef: Any
    shapes: tuple

    @classmethod
    def of(cls, params):
        leaves, treedef = jax.tree.flatten(params)
        return cls(treedef, tuple(np.shape(x) for x in leaves))

    def __call__(self, flat):
        out, start = [], 0
        for shape in self.shapes:
            size = int(np.prod(shape, dtype=int))
            out.append(flat[start : start + size].reshape(shape))
            start += size
        return jax.tree.unflatten(self.treedef, out)


# ---------------------------------------------------------------- the result


def _result(terms, points, values, cov, effect, at, label, notes) -> MarginsResult:
    names = []
    for term in terms:
        for point in points:
            where = ", ".join(f"{k}={v:g}" for k, v in point) if at is not None else ""
            names.append(term.label + (f" @ {where}" if where and at != "mean" else ""))
    se = np.sqrt(np.clip(np.diagonal(cov), 0, None))
    estimate, stderr = OrderedDict(), OrderedDict()
    i = 0
    grid = at is not None and at != "mean"
    for key in dict.fromkeys(t.key for t in terms):
        count = sum(t.key == key for t in terms) * len(points)
        block = values[i : i + count], se[i : i + count]
        n_levels = count // len(points)
        shape = ((len(points),) if grid else ()) + ((n_levels,) if n_levels > 1 else ())
        # term-major rows: levels outer, points inner -> (points, levels)
        estimate[key], stderr[key] = (
            np.moveaxis(b.reshape(n_levels, len(points)), 0, -1).reshape(shape) for b in block
        )
        i += count
    title = {"slope": "Average marginal effects", "prediction": "Average prediction"}[effect]
    if at == "mean":
        title = title.replace("Average", "At the means:")
    elif at is not None:
        title += " at representative values"
    return MarginsResult(estimate=estimate, se=stderr, cov=cov, names=tuple(names), cov_type=label,
                         title=title, notes=tuple(notes))  # fmt: skip
