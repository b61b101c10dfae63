"""From an lme4 formula and a data frame to the arrays a mixed model is fitted on (host side).

One row selection for the whole model, as R's `model.frame(na.action = na.omit)`: rows with a missing
value in any variable used (fixed part, random-term expressions, a cbind count, offset, weights) are
dropped and counted; zero weights are left out. Grouping factors must be complete: a missing label is
an error naming the factor and the row (the issue's rule; lme4 would drop such rows silently).
The fixed part goes through `_design.build_design`, as in `jm.glm`; the random terms through
`_reterms.build_terms`, with lme4's checks.

`cbind(s, f)`: y = s / (s + f), and the binomial trials s + f multiply the prior weights (R's
`binomial()$initialize`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ._design import Design, build_design, column_or_array
from ._lme4formula import MixedFormula
from ._reterms import RandomTerms, build_terms, check_grouping, term_variables

_RESPONSE = "_cbind_response_"


@dataclasses.dataclass
class MixedDesign:
    fixed: Design
    random: RandomTerms
    response: str  # the response as written


def _evaluate(expr: str, frame, context) -> np.ndarray:
    """A cbind() count expression, evaluated as Python over the columns (formulaic's trust model)."""

    class Columns(dict):
        def __missing__(self, key):
            if key in frame.columns:
                return frame[key].to_numpy()
            if key in context:
                return context[key]
            raise KeyError(f"cbind(): {key!r} is not a column of data ({list(frame.columns)})")

    try:
        value = eval(expr, {"np": np, "__builtins__": __builtins__}, Columns())
    except KeyError:
        raise
    except Exception as e:
        raise ValueError(f"cbind(): cannot evaluate {expr!r}: {e}") from e
    return np.broadcast_to(np.asarray(value, dtype=float), (len(frame),))


def mixed_design(mf: MixedFormula, frame, context, weights, offset, *, allow_n: bool):
    """The fixed design and the random terms of `mf` on the complete rows of `frame`."""
    check_grouping(mf.terms, frame)
    frame = frame.reset_index(drop=True)
    n_total = len(frame)
    w_arr, _ = column_or_array(weights, frame, "weights")
    off_arr, _ = column_or_array(offset, frame, "offset")

    # random-term variables: rows with missing values are dropped (na.omit), as in the fixed part
    used = sorted(term_variables(mf.terms))
    absent = [v for v in used if v not in frame.columns and v not in context]
    if absent:
        term = next(t for t in mf.terms if term_variables([t]) & set(absent))
        raise KeyError(
            f"the random-effect term ({term.expr} | {term.factor}) uses {absent}, which are not "
            f"columns of data ({list(frame.columns)})"
        )
    cols = [v for v in used if v in frame.columns]
    keep = ~frame[cols].isna().any(axis=1).to_numpy() if cols else np.ones(n_total, bool)

    response = mf.response
    if mf.cbind is not None:
        s, f = (_evaluate(e, frame, context) for e in mf.cbind)
        ok = np.isfinite(s) & np.isfinite(f)
        bad = ok & ((s < 0) | (f < 0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{mf.response}: counts must be >= 0; row {i} has successes {s[i]:g}, "
                f"failures {f[i]:g}"
            )
        trials = s + f
        frame = frame.assign(
            **{_RESPONSE: np.where(trials > 0, s / np.where(trials > 0, trials, 1.0), 0.0)}
        )
        frame.loc[~ok, _RESPONSE] = np.nan
        base = np.ones(n_total) if w_arr is None else np.asarray(w_arr, float)
        w_arr = base * np.where(ok, trials, 0.0)
        response = _RESPONSE
    sub = frame[keep]
    n_dropped_random = int(n_total - keep.sum())
    d = build_design(
        mf.fixed(response),
        sub,
        None if off_arr is None else np.asarray(off_arr, float)[keep],
        None if w_arr is None else np.asarray(w_arr, float)[keep],
        None,
        context,
    )
    d.n_missing += n_dropped_random
    if mf.cbind is not None:
        d.response_name = mf.response
        d.weights_given = True
    rows = frame.loc[d.index]
    rt = build_terms(mf.terms, rows, context, allow_n=allow_n)
    return MixedDesign(d, rt, mf.response)
