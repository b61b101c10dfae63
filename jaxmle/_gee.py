"""gee(): generalised estimating equations from a formula, with geepack's definitions.

    res = jm.gee("resp ~ age + smoke", df, family="binomial", groups="id", corstr="exchangeable")

The formula, families and links are `jm.glm`'s (`_design`, `families.glm_family`); the rows are put
into clusters on the host (`_clusters`: any row order), the working correlation is a `_corstr` entry,
and the fit is one compiled program (`_geefit`). Defaults reproduce R `geepack::geeglm(formula,
family, data, id, waves = time, corstr)` at its fixed point: coefficients, `summary()` standard errors
(std.err = "san.se"), `vbeta.naiv`, the scale ("gamma", sum w r^2 / N, estimated for every family),
alpha, and `QIC()`.
"""

from __future__ import annotations

import dataclasses
import sys
from collections import OrderedDict
from collections.abc import Mapping
from functools import partial
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from ._clusters import build_layout
from ._corstr import get_corstr
from ._covariance import CovKind, check_kind
from ._design import as_frame, build_design, caller_context, check_collinear, column_or_array
from ._geefit import GEE_KINDS, GEEPieces, fit_gee
from ._results import FitResult, result_class, static, with_handles
from ._tables import head_lines, table_lines
from .families._glmfamily import GLMFamily, glm_family

# a chunk of clusters holds about this many grid slots (the sums stream through it)
_CHUNK_SLOTS = 2**18
GEE_FAMILIES = ("gaussian", "binomial", "poisson", "gamma")


@dataclasses.dataclass(frozen=True)
class GEESpec:
    """What a GEE is, by value (static in the result)."""

    formula: str
    family: GLMFamily
    corstr: str
    coef_names: tuple[str, ...]
    response_name: str
    groups: str
    time: str | None


@dataclasses.dataclass(frozen=True, eq=False)
class GEEData:
    """The clusters as the compiled program takes them (a host-side handle, for `qic()`)."""

    buckets: tuple
    ctx: dict
    n_waves: int
    chunks: tuple
    max_iter: int
    tol: float


@result_class
class GEEResult(FitResult):
    """A GEE fit. `params`, `se` keyed by the formula's names; `cov`, `se` of `cov_type` ("robust" by
    default; `with_cov("naive")`, `with_cov("bias_reduced")`).

    alpha         the working-correlation parameters, geepack's `geese$alpha` order
    correlation   alpha as a scalar (exchangeable, ar1; 0 for independence), or the K x K matrix
                  (unstructured)
    scale         phi = sum_j w_j r_j^2 / sum_j w_j (geepack `geese$gamma`)
    information   A = phi^-1 sum_g D_g' R_g^-1 D_g, so `covariance("naive")` = A^-1
    n_clusters, max_cluster_size, n_iter; `scaled_gradient` holds the last relative change.
    `loglik` is NaN (a GEE has none); `qic()` gives geepack's QIC.
    """

    alpha: jax.Array
    correlation: jax.Array
    scale: jax.Array
    bias_reduced_meat: jax.Array
    n_clusters: jax.Array
    max_cluster_size: jax.Array
    n_missing: jax.Array
    gee: GEESpec = static()

    cov_kinds: ClassVar[Mapping[str, CovKind]] = GEE_KINDS
    _handles: ClassVar[tuple[str, ...]] = ("_problem", "_gee_data")
    _gee_data: ClassVar[Any] = None

    @property
    def family(self) -> GLMFamily:
        return self.gee.family

    def pieces(self) -> GEEPieces:
        return GEEPieces(
            self.information, self.meat, self.bias_reduced_meat, self.score_groups, self.n_obs
        )

    def available(self) -> dict[str, bool]:
        return {"groups": True, "expected": False}

    def qic(self) -> dict[str, float]:
        """geepack `QIC(fit)`: QIC = -2 (Q - tr(Omega_I V_r)), QICu = -2 (Q - p), QICC = QIC +
        2 kq (kq + 1) / (G - kq - 1) with kq = p + len(alpha).

        Q is the quasi-likelihood at the fitted means, unscaled and unweighted (binomial
        sum y ln(mu/(1-mu)) + ln(1-mu), poisson sum y ln mu - mu, gaussian -sum (y-mu)^2/2, gamma
        sum -y/mu - ln mu); Omega_I = A of the independence GEE refitted to the same data (the
        inverse of its vbeta.naiv), V_r this fit's robust covariance. geepack's Gamma quasi-likelihood
        is sum(-y/(mu - log(mu))) (a misplaced parenthesis); jaxmle uses the correct one.
        """
        self._require_single("qic")
        data = self._gee_data
        if data is None:
            raise ValueError("qic() needs the data: call it on the result jm.gee returned")
        p = len(self.gee.coef_names)
        beta = jnp.stack([jnp.asarray(self.params[n]) for n in self.gee.coef_names])
        with jax.enable_x64(True):
            quasi = float(_quasi(self.family, beta, data.buckets))
            indep = fit_gee(
                data.buckets, data.ctx, fam=self.family, corstr=get_corstr("independence"),
                n_waves=data.n_waves, chunks=data.chunks, max_iter=data.max_iter, tol=data.tol,
                cov="robust",  # only its A is used; "robust" shares gee()'s default program
            )  # fmt: skip
            robust = np.asarray(self.covariance("robust"))[:p, :p]
            trace = float(np.trace(np.asarray(indep.information) @ robust))
        kq = p + int(np.size(self.alpha))
        qic = -2.0 * (quasi - trace)
        g = int(self.n_clusters)
        return {
            "QIC": qic,
            "QICu": -2.0 * (quasi - p),
            "Quasi Lik": quasi,
            "CIC": trace,
            "params": float(p),
            "QICC": qic + 2.0 * kq * (kq + 1) / (g - kq - 1),
        }

    def summary(self, level: float = 0.95) -> str:
        """Formula, family, working correlation, clusters, scale, alpha; the coefficient table."""
        self._require_single("summary")
        info, fam = self.gee, self.gee.family
        alpha = np.asarray(self.alpha)
        if info.corstr == "unstructured":
            corr = f"{alpha.size} pairs, from {alpha.min():.4g} to {alpha.max():.4g}"
        elif alpha.size:
            corr = f"{float(alpha[0]):.6g}"
        else:
            corr = "(none)"
        n_text = f"{int(self.n_obs)}" + (
            f" ({int(self.n_missing)} with missing values dropped)" if int(self.n_missing) else ""
        )
        head = [
            ("Formula", info.formula),
            ("Family", f"{fam.name}, link {fam.link.name}"),
            ("Correlation", f"{info.corstr}, alpha {corr}"),
            ("Observations", n_text),
            ("Clusters", f"{int(self.n_clusters)} (max size {int(self.max_cluster_size)})"),
            ("Scale", f"{float(self.scale):.6g}"),
            ("Covariance", self.cov_label()),
            ("Iterations", f"{int(self.n_iter)}"),
            ("Status", self.message),
        ]
        lines = head_lines("Generalized estimating equations (jaxmle)", head)
        lines += table_lines(self.names, self.table(level), level)
        return "\n".join(lines)


# the quasi-likelihood Q(y; mu) = int_y^mu (y - t) / V(t) dt (up to terms free of mu), unscaled
QUASI = {
    "binomial": lambda y, mu: y * jnp.log(mu / (1 - mu)) + jnp.log1p(-mu),
    "poisson": lambda y, mu: y * jnp.log(mu) - mu,
    "gaussian": lambda y, mu: -0.5 * (y - mu) ** 2,
    "gamma": lambda y, mu: -y / mu - jnp.log(mu),
}


@partial(jax.jit, static_argnames="fam")
def _quasi(fam, beta, buckets):
    """sum_j Q(y_j; mu_j) over the real slots of every bucket (unweighted, as geepack's QIC)."""
    total = 0.0
    for g in buckets:
        q = QUASI[fam.name](g["y"], fam.mean(g["X"] @ beta + g["offset"]))
        total = total + jnp.sum(jnp.where(g["mask"] > 0, q, 0.0))
    return total


def gee(
    formula: str,
    data,
    family="gaussian",
    link=None,
    *,
    groups,
    corstr: str = "independence",
    time=None,
    weights=None,
    offset=None,
    cov: str = "robust",
    max_iter: int = 100,
    tol: float = 1e-10,
    chunk_size: int | None = None,
) -> GEEResult:
    """Fit a GEE: `gee("y ~ x1 + C(g)", df, family="binomial", groups="id", corstr="ar1", time="t")`.

    Equals R `geepack::geeglm(formula, family, data, id = groups, waves = time, corstr, weights,
    control = geese.control(epsilon = tol))` at its fixed point: `coef`, `summary()` std.err,
    `geese$vbeta.naiv`, `geese$gamma` (res.scale), `geese$alpha` (res.alpha), `QIC()` (res.qic()).

    Args:
      formula, data, family, link, offset: as `jm.glm` (families gaussian, binomial, poisson, gamma;
        R's link names).
      groups: column name or (N,) array of cluster labels (R's id). Rows need not be sorted.
      corstr: "independence" | "exchangeable" | "ar1" | "unstructured".
      time: column name or (N,) array ordering the rows within a cluster (R's waves); its distinct
        values are coded 0..K-1 in sorted order, so a missing time is a gap (ar1 counts it,
        unstructured skips its pairs). Without it, a cluster's rows are in data order.
      weights: column name or (N,) array of prior weights, entering as W^1/2 R^-1 W^1/2 (geepack;
        binomial trials with y a proportion). Zero-weight rows stay in their cluster.
      cov: "robust" (default, geepack san.se), "naive" (vbeta.naiv) or "bias_reduced"
        (Mancl-DeRouen); all three via `res.with_cov(kind)` afterwards.
      tol: convergence when the largest change of the coefficients, the scale and alpha (relative
        to max(1, |value|)) is below tol (geepack's epsilon; its default 1e-4 stops ~1e-5 short
        of the fixed point).
      chunk_size: clusters per chunk of the sums (default: ~256k grid slots).
    """
    fam = glm_family(family, link)
    if fam.name not in GEE_FAMILIES:
        raise ValueError(f"gee supports the families {GEE_FAMILIES}, not {fam.name!r}")
    structure = get_corstr(corstr)
    check_kind(GEE_KINDS, cov, has={"groups": True})
    if isinstance(max_iter, bool) or not (isinstance(max_iter, int) and max_iter >= 1):
        raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
    if not (isinstance(tol, (int, float)) and 0 < tol < 1):
        raise ValueError(f"tol must lie in (0, 1), got {tol!r}")
    frame = as_frame(data)
    context = caller_context(sys._getframe(1))
    if groups is None:
        raise ValueError("gee needs groups= (the cluster labels: a column name or an array)")
    time_values, _ = column_or_array(time, frame, "time")
    n_time_missing = 0
    if time_values is not None:  # rows without a time are dropped like rows with a missing value
        missing = np.asarray(frame.__class__({"t": time_values})["t"].isna())
        if missing.any():
            n_time_missing = int(missing.sum())
            frame = frame.loc[~missing]
            time_values = np.asarray(time_values)[~missing]
    d = build_design(formula, frame, offset, weights, groups, context, drop_zero_weights=False)
    fam.check_response(d.y, d.w, d.response_name)
    check_collinear(d.X.T @ d.X, d.names)
    if time_values is not None:
        keep = frame.index.get_indexer(d.index)
        time_values = np.asarray(time_values)[keep]
    mustart = np.asarray(fam.mustart(d.y, d.w), float)
    mu_pad = float(np.mean(mustart))
    with jax.enable_x64(True):
        eta_pad = float(fam.link.linkfun(mu_pad))
    layout = build_layout(
        d.groups, time_values,
        {"X": d.X, "y": d.y, "offset": d.offset, "w": d.w, "mustart": mustart},
        {"y": mu_pad, "offset": eta_pad, "mustart": mu_pad},
        by_wave=structure.name == "unstructured", min_pairs=structure.name != "independence",
    )  # fmt: skip
    with jax.enable_x64(True):
        buckets = tuple({k: jnp.asarray(v) for k, v in b.items()} for b in layout.buckets)
        ctx = {
            "patterns": jnp.asarray(layout.patterns),
            "max_size": jnp.asarray(float(layout.sizes.max())),
        }
        if chunk_size is None:
            chunks = tuple(max(1, _CHUNK_SLOTS // b["mask"].shape[1]) for b in buckets)
        else:
            chunks = (int(chunk_size),) * len(buckets)
        out = fit_gee(
            buckets, ctx, fam=fam, corstr=structure, n_waves=layout.n_waves, chunks=chunks,
            max_iter=max_iter, tol=float(tol), cov=cov,
        )  # fmt: skip
        res = _result(out, d, fam, structure, formula, groups, time, layout, cov, n_time_missing)
    handle = GEEData(buckets, ctx, layout.n_waves, chunks, max_iter, float(tol))
    return with_handles(res, _gee_data=handle)


def _result(out, d, fam, structure, formula, groups, time, layout, cov, n_time_missing):
    names = d.names
    p = len(names)
    spec = GEESpec(
        formula, fam, structure.name, names, d.response_name,
        groups if isinstance(groups, str) else "groups", time if isinstance(time, str) else None,
    )  # fmt: skip
    nan_kk = np.full((p, p), np.nan)
    return GEEResult(
        params=OrderedDict(zip(names, out.beta, strict=True)),
        se=OrderedDict(zip(names, out.se, strict=True)),
        cov=out.cov,
        loglik=jnp.asarray(np.nan),
        score=out.score,
        information=out.information,
        expected_information=jnp.asarray(nan_kk),
        opg=out.meat,
        meat=out.meat,
        score_groups=jnp.asarray(np.zeros((0, p))),
        n_obs=jnp.asarray(float(d.X.shape[0])),
        n_iter=out.n_iter,
        n_damped=jnp.asarray(0),
        start_rows=jnp.asarray(0, jnp.int32),
        scaled_gradient=out.change,
        status=out.status,
        alpha=out.alpha,
        correlation=out.correlation,
        scale=out.scale,
        bias_reduced_meat=out.bias_reduced_meat,
        n_clusters=jnp.asarray(layout.n_clusters),
        max_cluster_size=jnp.asarray(int(layout.sizes.max())),
        n_missing=jnp.asarray(d.n_missing + n_time_missing),
        names=names,
        free=(True,) * p,
        method="geepack",
        cov_type=cov,
        gee=spec,
    )
