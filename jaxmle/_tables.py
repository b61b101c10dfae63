"""Coefficient tables: the one place that turns estimates and standard errors into printed rows.

    z = estimate / se,   P>|z| = 2 (1 - Phi(|z|)),   interval estimate -/+ z_{(1+level)/2} se

Used by `FitResult.summary()`, `DeltaResult.summary()`, the GLM, mixed-model and GEE summaries, and
their `to_frame()`; host-side numpy only.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

import numpy as np


def check_level(level: float) -> float:
    """A confidence level strictly between 0 and 1, or a plain error."""
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1 (0.95 for 95%), got {level!r}")
    return float(level)


def normal_quantile(level: float) -> float:
    """z_{(1+level)/2}, the half-width of a two-sided Wald interval in standard errors."""
    return statistics.NormalDist().inv_cdf(0.5 + check_level(level) / 2.0)


def coefficient_table(est, se, level: float) -> dict[str, np.ndarray]:
    """Columns estimate, std_err, z = est/se, two-sided normal p-value and the Wald interval."""
    est, se = np.asarray(est, float), np.asarray(se, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = est / se
    p = np.array([math.erfc(abs(v) / math.sqrt(2.0)) if np.isfinite(v) else np.nan for v in z])
    q = normal_quantile(level)
    return {"estimate": est, "std_err": se, "z": z, "p_value": p,
            "ci_lower": est - q * se, "ci_upper": est + q * se}  # fmt: skip


def head_lines(title: str, head: Sequence[tuple[str, str]]) -> list[str]:
    """The title and the `key   value` lines above a table."""
    return [title] + [f"  {k:<15} {v}" for k, v in head]


def table_lines(
    names: Sequence[str],
    table: Mapping[str, np.ndarray],
    level: float,
    *,
    fixed: Sequence[bool] | None = None,
    sections: Mapping[int, str] | None = None,
    notes: Mapping[int, str] | None = None,
) -> list[str]:
    """The printed coefficient table: header, one row per name (or `(fixed)`), rules.

    `sections` puts a heading line before row i (a GLM's extra parameter, a model's blocks);
    `notes` prints row i's estimate with a word in place of its inference (`(on its bound)`).
    """
    width = max(12, *(len(n) for n in names)) + 1 if names else 13
    lo, hi = (1 - level) / 2, (1 + level) / 2
    rule = "-" * (width + 70)
    cols = f"{'':<{width}}{'estimate':>12}{'std.err':>12}{'z':>9}{'P>|z|':>9}"
    cols += f"{f'[{lo:.3g}':>14}{f'{hi:.3g}]':>14}"
    lines = [rule, cols, rule]
    t = table
    for i, name in enumerate(names):
        if sections and i in sections:
            lines.append(sections[i])
        note = "fixed" if fixed is not None and fixed[i] else (notes or {}).get(i)
        if note:
            lines.append(f"{name:<{width}}{t['estimate'][i]:>12.6g}   ({note})")
            continue
        lines.append(
            f"{name:<{width}}{t['estimate'][i]:>12.6g}{t['std_err'][i]:>12.6g}"
            f"{t['z'][i]:>9.3f}{t['p_value'][i]:>9.4f}"
            f"{t['ci_lower'][i]:>14.6g}{t['ci_upper'][i]:>14.6g}"
        )
    lines.append(rule)
    return lines
