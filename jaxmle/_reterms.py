"""Random-effect terms on data: grouping factors, the columns of Z, and lme4's checks (host side).

For term t, `(expr | g)`, the rows of Z_t are the formulaic model matrix of `expr` (n x q_t), and
row i belongs to level g_i of the factor. The random effects of level j are b_tj ~ N(0, Sigma_t),
Sigma_t = sigma^2 Lambda_t Lambda_t' with Lambda_t lower triangular: its column-major lower triangle
is lme4's theta (`getME(m, "theta")`), whose diagonal may be 0 (a boundary fit).

Terms are ordered as lme4 orders them: by decreasing number of levels, formula order among equals.
Their labels in `VarCorr` repeat the factor name with ".1", ".2" for a second, third term on the same
factor ("Subject", "Subject.1", from `(1 | Subject) + (0 + Days | Subject)`).

lme4's checks (`lFormula`/`glFormula`), raised as errors before any work: each factor has more than
one level; fewer levels than observations (lmer; glmer allows as many, for observation-level effects);
more observations than random effects in each term (lmer; glmer allows as many).
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class TermSpec:
    """What one term is, by value (static in results): factor name, VarCorr label, Z columns."""

    factor: str
    group: str
    columns: tuple[str, ...]

    @property
    def q(self) -> int:
        return len(self.columns)

    @property
    def n_theta(self) -> int:
        return self.q * (self.q + 1) // 2


@dataclasses.dataclass(frozen=True)
class Factor:
    """A grouping factor: its name, its levels (labels as strings) and each row's level code."""

    name: str
    levels: tuple[str, ...]
    codes: np.ndarray

    @property
    def n_levels(self) -> int:
        return len(self.levels)


@dataclasses.dataclass
class RandomTerms:
    specs: tuple[TermSpec, ...]
    Z: list[np.ndarray]  # (n, q_t) per term
    factors: dict[str, Factor]  # by factor name, in order of first use by `specs`


def term_variables(terms) -> set[str]:
    """The data columns the expressions of the bar terms read (not the grouping factors)."""
    import formulaic

    out: set[str] = set()
    for t in terms:
        out |= set(formulaic.Formula(t.expr).required_variables)
    return out


def check_grouping(terms, frame) -> None:
    """Every grouping variable is a column of data without missing labels, before any work."""
    columns = set(map(str, frame.columns))
    for t in terms:
        for v in t.variables:
            if v not in columns:
                raise KeyError(
                    f"the grouping factor {v!r} of the random-effect term ({t.expr} | {t.factor}) "
                    f"is not a column of data ({list(frame.columns)})"
                )
            missing = frame[v].isna().to_numpy()
            if missing.any():
                i = int(np.flatnonzero(missing)[0])
                raise ValueError(
                    f"the grouping factor {v!r} has {int(missing.sum())} missing label(s) "
                    f"(NaN/None), first at row {frame.index[i]!r}; drop or label those rows "
                    f"(e.g. df.dropna(subset=[{v!r}]))"
                )


def _factor(name: str, variables: tuple[str, ...], frame) -> Factor:
    """Levels of the combinations of `variables` that occur, labels joined by ':' and ordered as lme4
    orders them (the first variable slowest; a pandas Categorical keeps its category order, other
    values are sorted)."""
    import pandas as pd

    codes_each, labels_each = [], []
    for v in variables:
        col = frame[v]
        if isinstance(col.dtype, pd.CategoricalDtype):
            col = col.cat.remove_unused_categories()
            codes, cats = col.cat.codes.to_numpy(), col.cat.categories
        else:
            cats, codes = np.unique(col.to_numpy(), return_inverse=True)
        codes_each.append(np.asarray(codes, np.int64))
        labels_each.append([str(c) for c in cats])
    combined = np.stack(codes_each, axis=1)
    uniq, codes = np.unique(combined, axis=0, return_inverse=True)
    levels = tuple(":".join(labels_each[k][int(c)] for k, c in enumerate(row)) for row in uniq)
    return Factor(name, levels, np.asarray(codes, np.int32).ravel())


def build_terms(terms, frame, context, *, allow_n: bool) -> RandomTerms:
    """Z blocks and factors of the bar terms on the rows of `frame` (rows already selected)."""
    import formulaic

    n = len(frame)
    factors: dict[str, Factor] = {}
    built = []
    for t in terms:
        if t.factor not in factors:
            factors[t.factor] = _factor(t.factor, t.variables, frame)
        try:
            mm = formulaic.model_matrix(t.expr, frame, context=context, na_action="raise")
        except Exception as e:  # formulaic raises several kinds for an expression it cannot build
            raise ValueError(
                f"the random-effect term ({t.expr} | {t.factor}) could not be built: {e}"
            ) from e
        Z = np.asarray(mm, dtype=float)
        if Z.shape[1] == 0:
            raise ValueError(f"the random-effect term ({t.expr} | {t.factor}) has no columns")
        if not np.isfinite(Z).all():
            j = int(np.flatnonzero(~np.isfinite(Z).all(axis=0))[0])
            raise ValueError(
                f"column {mm.columns[j]!r} of the random-effect term ({t.expr} | {t.factor}) "
                "is not finite in some rows"
            )
        built.append((t, tuple(str(c) for c in mm.columns), Z))
    for f in factors.values():
        _check_levels(f, n, allow_n)
    # lme4: by decreasing number of levels; a stable sort keeps formula order among equals
    order = sorted(range(len(built)), key=lambda k: -factors[built[k][0].factor].n_levels)
    seen: dict[str, int] = {}
    specs, Zs = [], []
    for k in order:
        t, cols, Z = built[k]
        count = seen.get(t.factor, 0)
        seen[t.factor] = count + 1
        group = t.factor if count == 0 else f"{t.factor}.{count}"
        spec = TermSpec(t.factor, group, cols)
        n_re = factors[t.factor].n_levels * spec.q
        if n < n_re or (n == n_re and not allow_n):
            raise ValueError(
                f"number of observations (={n}) <= number of random effects (={n_re}) for the "
                f"term ({t.expr} | {t.factor}); the random-effects parameters and the residual "
                "variance are then not identified (lme4 refuses the same)"
            )
        specs.append(spec)
        Zs.append(Z)
    ordered = {s.factor: factors[s.factor] for s in specs}
    return RandomTerms(tuple(specs), Zs, ordered)


def _check_levels(f: Factor, n: int, allow_n: bool) -> None:
    if f.n_levels < 2:
        raise ValueError(
            f"the grouping factor {f.name!r} has {f.n_levels} level in the rows fitted; a random "
            "effect needs a factor with more than one level (lme4 refuses the same)"
        )
    if f.n_levels > n or (f.n_levels == n and not allow_n):
        raise ValueError(
            f"the grouping factor {f.name!r} has {f.n_levels} levels for {n} observations: as many "
            "levels as observations leaves the random effect and the residual variance not "
            "identified (lme4 refuses the same)"
        )
