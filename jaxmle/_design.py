"""From a formula and a data frame to the arrays a model is fitted on (host side).

formulaic parses the formula ("y ~ x1 * x2 + C(g) + np.log(x)") and builds the response and the design
matrix; this module decides the rows (missing values in any variable used are dropped and counted,
zero weights left out), checks what a fit cannot survive (missing columns, non-finite design
entries, collinear columns, named with the relation) and rebuilds the design for new data. `jm.glm`
and the other formula front ends share it.

A formula is Python code evaluated by formulaic: never build one from untrusted input.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import jax
import numpy as np

# A column whose part not explained by the columns before it is below this fraction of its sum of
# squares (R^2 > 1 - 1e-11 on them) is a linear combination of them. The Gram matrix resolves this
# fraction to ~1e-13 in float64; such a column would leave the information matrix singular anyway.
COLLINEAR_TOL = 1e-11


@dataclasses.dataclass
class Design:
    y: np.ndarray
    X: Any  # numpy, then a device array
    names: tuple[str, ...]
    w: np.ndarray
    offset: np.ndarray
    groups: Any
    weights_given: bool
    intercept: bool
    model_spec: Any
    response_name: str
    n_missing: int
    n_zero_weight: int
    index: Any


def as_frame(data):
    try:
        import pandas as pd
    except ImportError as e:  # pragma: no cover
        raise ImportError(
            "jaxmle.glm needs pandas and formulaic: pip install 'jaxmle[frames]'"
        ) from e
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, dict):
        return pd.DataFrame(data)
    raise TypeError(
        f"data must be a pandas DataFrame (or a dict of columns), got {type(data).__name__}"
    )


def caller_context(frame) -> dict:
    """The names visible where a formula front end was called (its locals over its globals)."""
    return {**frame.f_globals, **frame.f_locals}


def formula_namespace(context, required, frame) -> dict:
    """What formulaic may evaluate a formula in: numpy as `np`, and from the caller's scope only
    the names the formula uses that are not columns of data (a function or a constant of yours).

    A formula is Python code: this keeps it from reaching the rest of the caller's scope, but
    `np` (and anything passed) still reaches Python: never build a formula from untrusted input.
    """
    columns = {str(c) for c in frame.columns}
    own = {name: context[name] for name in required if name not in columns and name in context}
    return {"np": np, **own}


def check_columns(frame, used) -> None:
    """Raise naming a column the formula uses that no model can use: dates, all missing."""
    for name in used:
        col = frame[name]
        if col.dtype.kind in "mM" or str(col.dtype).startswith(("datetime", "timedelta", "period")):
            raise TypeError(
                f"column {name!r} holds dates or times ({col.dtype}); a formula needs numbers or "
                f"categories: convert it (e.g. df[{name!r}].dt.year, or days since a date)"
            )
        if len(col) and col.isna().all():
            raise ValueError(
                f"column {name!r} is missing in every row; drop it from the formula (rows with "
                "missing values in a variable used are dropped, which would leave none)"
            )


def column_or_array(value, frame, what):
    """(values (N,) float or object, column name or None) for offset=/weights=/groups=."""
    if value is None:
        return None, None
    if isinstance(value, str):
        if value not in frame.columns:
            raise KeyError(
                f"{what}={value!r} is not a column of data; columns: {list(frame.columns)}"
            )
        return frame[value].to_numpy(), value
    arr = np.asarray(value)
    if arr.shape != (len(frame),):
        raise ValueError(
            f"{what} must be a column name or an array of shape ({len(frame)},), got {arr.shape}"
        )
    return arr, None


def used_columns(required, frame, context):
    """(columns of data the formula uses, names found nowhere). formulaic reports a quoted dotted
    name such as `Solar.R` as "Solar": such a name stands for the columns it is a prefix of."""
    columns = [str(c) for c in frame.columns]
    used, missing = [], []
    for v in sorted(required):
        if v in columns:
            used.append(v)
        elif any(c.startswith(v + ".") for c in columns):
            used += [c for c in columns if c.startswith(v + ".")]
        elif v not in context:
            missing.append(v)
    return used, missing


def build_design(formula, frame, offset, weights, groups, context) -> Design:
    import formulaic

    if not isinstance(formula, str) or "~" not in formula:
        raise ValueError(f"formula must be a string 'y ~ x1 + x2', got {formula!r}")
    used, missing = used_columns(formulaic.Formula(formula).required_variables, frame, context)
    if missing:
        raise KeyError(
            f"the formula names {missing}, which are not columns of data ({list(frame.columns)})"
        )

    check_columns(frame, used)
    context = formula_namespace(context, formulaic.Formula(formula).required_variables, frame)
    n_total = len(frame)
    off, _ = column_or_array(offset, frame, "offset")
    w, _ = column_or_array(weights, frame, "weights")
    grp, _ = column_or_array(groups, frame, "groups")
    keep = np.ones(n_total, bool)
    if used:
        keep &= ~frame[used].isna().any(axis=1).to_numpy()
    for arr in (off, w):
        if arr is not None:
            keep &= ~np.isnan(np.asarray(arr, float))
    if grp is not None:
        keep &= ~np.asarray(frame.__class__({"g": grp})["g"].isna())
    n_missing = int(n_total - keep.sum())
    n_zero = 0
    if w is not None:
        w = np.asarray(w, float)
        bad = keep & (~np.isfinite(w) | (w < 0))
        if bad.any():
            i = np.flatnonzero(bad)[0]
            raise ValueError(f"weights must be finite and >= 0; row {frame.index[i]!r} has {w[i]}")
        zero = keep & (w == 0)
        n_zero = int(zero.sum())
        keep &= ~zero
    if not keep.any():
        raise ValueError("no rows left to fit after dropping missing values and zero weights")
    sub = frame.iloc[np.flatnonzero(keep)] if not keep.all() else frame

    try:
        mm = formulaic.model_matrix(formula, sub, context=context, na_action="raise")
    except (ValueError, formulaic.errors.FormulaicError) as e:
        raise ValueError(f"the formula {formula!r} could not be evaluated on data: {e}") from e
    lhs, rhs = mm.lhs, mm.rhs
    if lhs.shape[1] != 1:
        raise ValueError(
            f"the response must be one numeric column; {formula.split('~')[0].strip()!r} gives "
            f"{list(lhs.columns)} (code a categorical response as 0/1)"
        )
    response_name = str(lhs.columns[0])
    y = np.asarray(lhs.iloc[:, 0], dtype=float)
    names = tuple(str(c) for c in rhs.columns)
    if len(set(names)) != len(names):
        raise ValueError(f"the design has duplicate column names: {names}")
    if not names:
        raise ValueError(f"the formula {formula!r} has no terms: use 'y ~ 1' for an intercept only")
    X = np.asarray(rhs, dtype=float)
    bad_col = ~np.isfinite(X).all(axis=0)
    if bad_col.any():
        j = int(np.flatnonzero(bad_col)[0])
        i = int(np.flatnonzero(~np.isfinite(X[:, j]))[0])
        raise ValueError(
            f"design column {names[j]!r} is {X[i, j]} at row {sub.index[i]!r} (a transform "
            "outside its domain?); drop or fix those rows"
        )
    n = len(y)
    w_fit = np.ones(n) if w is None else w[keep]
    off_fit = np.zeros(n) if off is None else np.asarray(off, float)[keep]
    if not np.isfinite(off_fit).all():
        i = int(np.flatnonzero(~np.isfinite(off_fit))[0])
        raise ValueError(f"offset is {off_fit[i]} at row {sub.index[i]!r}; it must be finite")
    return Design(
        y=y, X=X, names=names, w=w_fit, offset=off_fit,
        groups=None if grp is None else np.asarray(grp)[keep], weights_given=w is not None,
        intercept="Intercept" in names, model_spec=rhs.model_spec, response_name=response_name,
        n_missing=n_missing, n_zero_weight=n_zero, index=sub.index,
    )  # fmt: skip


@jax.jit
def gram(X):
    return X.T @ X


def check_collinear(gram, names):
    """Raise naming the columns when one is (numerically) a linear combination of those before it.

    Sequential Gram-Schmidt on the scaled Gram matrix: column j is redundant when the fraction of
    its sum of squares that the kept columns before it leave unexplained is below COLLINEAR_TOL. The
    message gives the combination, as R's `alias(m)` would.
    """
    ss = np.diagonal(gram).copy()
    zero = [names[j] for j in np.flatnonzero(ss == 0)]
    if zero:
        raise ValueError(
            f"design column(s) {zero} are all zero in the rows fitted (an unused category, or a "
            "variable constant at 0); drop them"
        )
    scale = 1.0 / np.sqrt(ss)
    g = gram * np.outer(scale, scale)
    kept: list[int] = []
    problems = []
    for j in range(len(names)):
        if kept:
            coef = np.linalg.solve(g[np.ix_(kept, kept)], g[kept, j])
            resid = g[j, j] - g[j, kept] @ coef
        else:
            coef, resid = np.zeros(0), 1.0
        if resid < COLLINEAR_TOL:
            coef = coef * scale[kept] / scale[j]  # back to the columns' own units
            terms = [
                f"{c:+.6g}*{names[k]}" for c, k in zip(coef, kept, strict=True) if abs(c) > 1e-8
            ]
            problems.append(f"{names[j]} = {' '.join(terms) or '0'}")
        else:
            kept.append(j)
    if problems:
        raise ValueError(
            "the design matrix is rank deficient (perfectly collinear columns): "
            + "; ".join(problems)
            + ". Drop one of the columns named in each relation"
        )


# ---------------------------------------------------------------- predict on new data (host)


def new_design(info, frame) -> np.ndarray:
    from formulaic.errors import FormulaicError

    spec = info.model_spec.update(na_action="ignore")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            X = spec.get_model_matrix(frame)
        except Warning as e:
            raise ValueError(f"newdata does not fit the model's design: {e}") from e
        except (FormulaicError, NameError, KeyError) as e:
            raise ValueError(f"newdata lacks what the formula needs: {e}") from e
    return np.asarray(X, dtype=float)


def new_offset(info, frame, offset) -> np.ndarray:
    if offset is not None:
        arr, _ = column_or_array(offset, frame, "offset")
        return np.asarray(arr, float)
    if info.offset is None:
        return np.zeros(len(frame))
    if isinstance(info.offset, str):
        if info.offset not in frame.columns:
            raise KeyError(f"the model's offset column {info.offset!r} is not in newdata")
        return frame[info.offset].to_numpy(float)
    raise ValueError("the model was fitted with an offset array: pass offset= for newdata")
