"""The GLM front end of `margins`: fn = the GLM's mean, data = the columns of its design.

    mu_i = g^-1(b_0 + sum_j b_j x_ij + offset_i)

over the design's columns x_j (the formula's terms as formulaic expanded them), as statsmodels
`get_margeff` sees a GLM; a categorical term (C(g), a text column) is one categorical variable whose
contrasts set its treatment dummies to each level in turn (Stata's `i.g`), not one 0/1 column at a
time. A variable that also enters an interaction or a second term has no effect of its own column:
it is left out of the default report with a note (write fn over the frame's columns for it).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import NamedTuple

import numpy as np

from ._design import as_frame, new_design, new_offset
from ._glm import GLMResult

OFFSET = "(offset)"


class Column(NamedTuple):
    """One data variable as `margins` sees it: values (float, or int codes 0..L-1), its type, the
    labels of its levels, and (optionally) the row labels of the contrasts of levels 1..L-1."""

    values: np.ndarray
    type: str
    levels: tuple = ()
    labels: tuple = ()


@dataclasses.dataclass(frozen=True)
class GLMMean:
    """mu(theta, obs) of a GLM over its design columns (categorical terms as integer codes)."""

    family: object
    intercept: str | None
    numeric: tuple[str, ...]
    groups: tuple[tuple[str, tuple[str, ...]], ...]  # (variable, its dummy columns for levels 1..)

    def __call__(self, theta, obs):
        eta = obs[OFFSET]
        if self.intercept is not None:
            eta = eta + theta[self.intercept]
        for c in self.numeric:
            eta = eta + theta[c] * obs[c]
        for var, cols in self.groups:
            for level, c in enumerate(cols, start=1):
                eta = eta + theta[c] * (obs[var] == level).astype(eta.dtype)
        return self.family.mean(eta)


def glm_inputs(res, data, variables, types, effect):
    """(fn, prepared columns, variables, types, notes) for `margins(res)` of a `jm.glm` result."""
    if not isinstance(res, GLMResult):
        raise TypeError(
            "margins needs fn(theta, obs), the quantity of interest for one row; only a jm.glm "
            "result supplies its own (its mean)"
        )
    if types:
        raise ValueError(
            "types= is for fn and data given by you; a GLM's columns are typed by its formula"
        )
    design = res._design
    if design is None:
        raise ValueError("this GLM result does not hold its design; use the result jm.glm returned")
    if data is None:
        X = np.asarray(res.problem.data["X"])
        offset = np.asarray(res.problem.data["offset"])
    else:
        frame = as_frame(data)
        X = new_design(design, frame)
        offset = new_offset(
            design, frame, design.offset if isinstance(design.offset, str) else None
        )
    names = res.glm.coef_names
    columns: OrderedDict = OrderedDict()
    numeric, groups, report, notes = [], [], [], []
    seen: dict[str, list[str]] = {}
    term_slices = design.model_spec.term_slices
    for term in term_slices:
        for f in term.factors:
            seen.setdefault(str(f), []).append(str(term))
    intercept = None
    for term, sl in term_slices.items():
        cols = names[sl]
        block = X[:, sl]
        factors = [str(f) for f in term.factors]
        if factors == ["1"]:
            intercept = cols[0]
            continue
        single = len(factors) == 1 and len(seen[factors[0]]) == 1
        one_hot = np.isin(block, (0.0, 1.0)).all() and (block.sum(axis=1) <= 1).all()
        if single and one_hot and (len(cols) > 1 or "[" in cols[0]):
            var = str(term)
            codes = (block * np.arange(1, len(cols) + 1)).sum(axis=1).astype(np.int32)
            columns[var] = Column(codes, "categorical", ("(reference)", *cols), tuple(cols))
            groups.append((var, tuple(cols)))
            report.append(var)
            continue
        for j, c in enumerate(cols):
            x = block[:, j]
            kind = "binary" if np.isin(x, (0.0, 1.0)).all() else "continuous"
            columns[c] = Column(x.astype(float), kind)
            numeric.append(c)
        if single:
            report += list(cols)
        else:
            notes.append(
                f"{term}: a term of {len(factors)} factors, or a factor in several terms "
                f"({', '.join(sorted({t for f in factors for t in seen[f]}))}): no effect of its "
                "own column is reported; write fn over the frame's columns for it"
            )
    columns[OFFSET] = Column(np.asarray(offset, float), "continuous")
    fn = GLMMean(res.family, intercept, tuple(numeric), tuple(groups))
    if effect == "slope" and variables is None:
        variables = report
    elif variables is not None:
        variables = [variables] if isinstance(variables, str) else list(variables)
        entangled = [v for v in variables if v in columns and v not in report]
        if entangled:
            raise ValueError(
                f"{entangled} enter the model through interactions or several terms: the effect "
                "of one design column is not the effect of the variable; write fn over the frame"
            )
    return fn, columns, variables, None, notes
