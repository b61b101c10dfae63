"""MerResult: a mixed model fitted from an lme4 formula, with lme4's accessors and summary.

It is a `FitResult` whose parameters are the fixed effects (under the formula's names, as `jm.glm`
names them) followed by the variance parameters: per random-effect term the standard deviations and
correlations of its effects ("sd(Days|Subject)", "cor(Intercept,Days|Subject)"), then "sigma" for a
Gaussian model (and the family's extra parameter, e.g. "theta", for glmer.nb). `loglik`, `aic`, `bic`
count all of them, as R's `logLik(m)` df does.

    varcorr()        R `as.data.frame(VarCorr(m))`: grp, var1, var2, vcov, sdcor (+ "Residual")
    ranef()          R `ranef(m)`: {factor: DataFrame of conditional modes, one row per level}
    ranef(condvar=True)  adds the conditional standard deviations "condsd(<column>)"
                     (R `attr(ranef(m, condVar = TRUE)[[f]], "postVar")`, square roots of its diagonal)
    n_groups         R `ngrps(m)`: {factor: number of levels}
    summary()        lme4's layout: random-effects block, then the fixed-effects table
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import numpy as np

from ._covariance import KINDS, CovKind
from ._results import FitResult, result_class, static
from ._status import Status
from ._tables import head_lines, table_lines
from ._varcomp import n_phi, pairs, split_phi, varcorr_frame


@dataclasses.dataclass(frozen=True)
class MerSpec:
    """What a mixed model is, by value (static: two fits of one formula share a treedef)."""

    formula: str
    kind: str  # "lmer" | "glmer"
    family: str  # "gaussian", "binomial(logit)", ...
    estimation: str  # "REML" | "ML" | "Laplace" | "adaptive Gauss-Hermite, 5 points"
    coef_names: tuple[str, ...]
    terms: tuple[Any, ...]  # TermSpec per term, lme4's order
    factors: tuple[tuple[str, int], ...]  # (factor, number of levels), in order of first use
    extra: tuple[str, ...] = ()  # names after the variance parameters ("sigma", "theta")

    @property
    def n_fixed(self) -> int:
        return len(self.coef_names)


@dataclasses.dataclass(frozen=True, eq=False)
class MerLevels:
    """The level labels of each factor (data, so a host-side handle beside the result)."""

    levels: Mapping[str, tuple[str, ...]]


@result_class
class MerResult(FitResult):
    """A mixed-model fit (see the module docstring). `ranef_modes[f]` is (levels, effects) and
    `ranef_cov[f]` (levels, effects, effects), for the factors in `spec.factors` order."""

    ranef_modes: tuple
    ranef_cov: tuple
    n_missing: jax.Array
    n_zero_weight: jax.Array
    spec: MerSpec = static()

    cov_kinds: ClassVar[Mapping[str, CovKind]] = {"hessian": KINDS["hessian"]}
    _handles: ClassVar[tuple[str, ...]] = ("_problem", "_levels")
    _levels: ClassVar[Any] = None

    @property
    def converged(self) -> jax.Array:
        """True at an optimum, a boundary (singular) one included, as lme4 counts it."""
        return (self.status == Status.SUCCESSFUL) | (self.status == Status.BOUNDARY)

    @property
    def singular(self) -> jax.Array:
        """lme4's `isSingular(m)`: a variance component at 0 or a correlation at +/-1."""
        return self.status == Status.BOUNDARY

    @property
    def n_groups(self) -> dict[str, int]:
        return dict(self.spec.factors)

    @property
    def problem(self):
        raise ValueError(
            f"a {self.spec.kind} result is fitted from its formula, not from a per-observation "
            "log-density, so tools that refit one (profile_ci, score_test) do not apply to it; "
            "compare nested fits with jm.lr_test"
        )

    def _phi(self) -> np.ndarray:
        est = np.asarray(self.coef)
        p = self.spec.n_fixed
        return est[p : p + sum(n_phi(t.q) for t in self.spec.terms)]

    @property
    def sigma(self) -> float:
        """The residual standard deviation (R `sigma(m)`; 1 for families without one)."""
        if "sigma" in self.spec.extra:
            return float(np.asarray(self.coef)[self.names.index("sigma")])
        return 1.0

    def varcorr(self):
        """R `as.data.frame(VarCorr(m))`: one row per standard deviation, then per correlation of
        each term (lme4's order), and a "Residual" row for a Gaussian model."""
        self._require_single("varcorr")
        sigma = self.sigma if "sigma" in self.spec.extra else None
        return varcorr_frame(self.spec.terms, self._phi(), sigma)

    def ranef(self, condvar: bool = False) -> dict:
        """R `ranef(m)`: {factor: DataFrame indexed by level, a column per random effect}; with
        `condvar=True` also "condsd(<column>)", the conditional standard deviations."""
        import pandas as pd

        self._require_single("ranef")
        if self._levels is None:
            raise ValueError("this result does not hold its level labels (it passed through jit)")
        out = {}
        for k, (factor, _) in enumerate(self.spec.factors):
            cols = [c for t in self.spec.terms if t.factor == factor for c in t.columns]
            idx = pd.Index(self._levels.levels[factor], name=factor)
            frame = pd.DataFrame(np.asarray(self.ranef_modes[k]), index=idx, columns=cols)
            if condvar:
                sd = np.sqrt(np.diagonal(np.asarray(self.ranef_cov[k]), axis1=1, axis2=2))
                for j, c in enumerate(cols):
                    frame[f"condsd({c})"] = sd[:, j]
            out[factor] = frame
        return out

    # ---- presentation
    def _random_block(self) -> list[str]:
        """lme4's "Random effects:" table: Groups, Name, Variance, Std.Dev., Corr."""
        rows = []
        terms = self.spec.terms
        for t, (sd, cor) in zip(terms, split_phi([t.q for t in terms], self._phi()), strict=True):
            C = np.eye(t.q)
            for (i, j), r in zip(pairs(t.q), cor, strict=True):
                C[i, j] = C[j, i] = r
            for i, c in enumerate(t.columns):
                corr = " ".join(f"{C[i, j]:6.3f}" for j in range(i))
                rows.append((t.group if i == 0 else "", c, sd[i] ** 2, sd[i], corr))
        if "sigma" in self.spec.extra:
            rows.append(("Residual", "", self.sigma**2, self.sigma, ""))
        wg = max(8, *(len(r[0]) for r in rows)) + 1
        wn = max(6, *(len(r[1]) for r in rows)) + 1
        lines = [
            "Random effects:",
            f" {'Groups':<{wg}}{'Name':<{wn}}{'Variance':>12}{'Std.Dev.':>12}  Corr",
        ]
        for g, name, var, sd, corr in rows:
            lines.append(f" {g:<{wg}}{name:<{wn}}{var:>12.6g}{sd:>12.6g}  {corr}".rstrip())
        groups = ", ".join(f"{f}, {n}" for f, n in self.spec.factors)
        lines.append(f"Number of obs: {int(self.n_obs)}, groups: {groups}")
        return lines

    def summary(self, level: float = 0.95) -> str:
        """lme4's `summary(m)` layout: the fit, the random effects, then the fixed effects (Wald z
        tests; lme4 prints t values without p-values) and the variance parameters."""
        self._require_single("summary")
        sp = self.spec
        kind = {"lmer": "Linear mixed model", "glmer": "Generalized linear mixed model"}[sp.kind]
        crit = "REML criterion" if sp.estimation == "REML" else "Deviance (-2 lnL)"
        dropped = int(self.n_missing) + int(self.n_zero_weight)
        head = [
            ("Formula", sp.formula),
            ("Family", sp.family),
            ("Estimation", sp.estimation),
            ("Observations", f"{int(self.n_obs)}" + (f" ({dropped} dropped)" if dropped else "")),
            (crit, f"{-2.0 * float(self.loglik):.6f}"),
            ("Log-likelihood", f"{float(self.loglik):.6f} (df={self.n_params})"),
            ("AIC", f"{float(self.aic):.4f}"),
            ("BIC", f"{float(self.bic):.4f}"),
            ("Method", f"{self.method}, {int(self.n_iter)} iterations"),
            ("Status", self.message),
        ]
        lines = head_lines(f"{kind} fit by {sp.estimation} (jaxmle)", head)
        lines += ["", *self._random_block(), "", "Fixed effects:"]
        p = sp.n_fixed
        sections = {p: "Variance parameters (Wald standard errors from the observed information):"}
        lines += table_lines(self.names, self.table(level), level, sections=sections)
        return "\n".join(lines)
