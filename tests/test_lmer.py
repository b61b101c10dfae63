"""jm.lmer against R lme4 (tight refits), glmmTMB and statsmodels MixedLM fixtures
(tests/reference/mixed/lmer_*.json), lme4's formula grammar, the result's accessors, and bad input.

Fits are cached per fixture, and few compiled programs serve them all (REML and ML share one,
levels are padded to buckets). The default run compiles one: the sleepstudy random slope (REML, ML),
its weighted fit and the simulated correlation +1 boundary fit. Penicillin (crossed), Pastes (nested)
and the Pastes zero-variance boundary fit share a second, the uncorrelated slopes a third; those and
the fits with programs of their own are marked slow.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import jaxmle as jm
from jaxmle._lme4formula import parse
from jaxmle._lmmfit import fit_lmm

REFERENCE = Path(__file__).parent / "reference"

# ---------------------------------------------------------------- tolerances
# R's reference is lmer refitted at tight tolerances by two optimisers (they agree on the
# fixed effects to >= 8 digits, on lnL to >= 11.5, on theta to 4.4-6 digits: lnL is flat in theta).
FIXEF_RTOL = 1e-6
SE_RTOL = 1e-5  # sigma^2 (R_X'R_X)^-1 moves with theta's last R digits
VARCOMP_RTOL = 1e-4  # the tolerance for variance components (R's theta: ~5 digits)
VARCOMP_ATOL = 1e-6  # in units of sigma: a component at 0 (R stops at ~1e-8, we reach 0)
LOGLIK_RTOL = 1e-9
RANEF_TOL = 1e-5  # conditional modes and SDs, relative to the largest |mode| / SD of the factor
# glmmTMB's variance-parameter SEs: the same observed information at its own optimum (~1e-6 away)
TMB_SE_RTOL = 1e-4

DEFAULT = [
    "lmer_sleepstudy_corr_reml",
    "lmer_sleepstudy_corr_ml",
    "lmer_sleepstudy_weights_offset_reml",
    "lmer_simulated_cor1_singular_reml",
]
# programs shared among themselves: crossed and nested; the uncorrelated slopes
SLOW_SHARED = [
    "lmer_sleepstudy_uncorr_reml",
    "lmer_sleepstudy_uncorr_ml",
    "lmer_penicillin_crossed_reml",
    "lmer_penicillin_crossed_ml",
    "lmer_pastes_nested_reml",
    "lmer_pastes_sample_batch_ml",
    "lmer_pastes_sample_cask_singular_reml",
]
# programs of their own: three correlated effects; one random intercept
SLOW = [
    "lmer_sleepstudy_quadratic_ml",
    "lmer_dyestuff2_singular_reml",
    "lmer_pastes_cask_singular_reml",
]


def r_name(name: str) -> str:
    """R's column name -> formulaic's."""
    return name.replace("(Intercept)", "Intercept").replace("I(Days^2)", "I(Days ** 2)")


@functools.cache
def fixture(name):
    fx = json.loads((REFERENCE / "mixed" / f"{name}.json").read_text())
    return fx, pd.read_csv(REFERENCE / fx["dataset"])


@functools.cache
def fitted(name):
    fx, df = fixture(name)
    return jm.lmer(
        fx["formula"],
        df,
        reml=fx["reml"],
        weights=fx["weights"] or None,
        offset=fx["offset"] or None,
    )


def check_against_r(name):
    fx, _ = fixture(name)
    m = fitted(name)
    p = len(fx["fixef"])
    assert m.names[:p] == tuple(r_name(n) for n in fx["fixef_names"])
    est = np.asarray(m.coef)[:p]
    se = np.asarray([m.se[n] for n in m.names[:p]])
    np.testing.assert_allclose(est, fx["fixef"], rtol=FIXEF_RTOL, atol=1e-7 * np.min(se))
    np.testing.assert_allclose(se, fx["se"], rtol=SE_RTOL)
    np.testing.assert_allclose(np.asarray(m.cov)[:p, :p], fx["vcov"], rtol=SE_RTOL, atol=1e-12)
    # lnL: R's logLik(m); never below R's optimum (beyond rounding)
    np.testing.assert_allclose(float(m.loglik), fx["loglik"], rtol=LOGLIK_RTOL)
    assert float(m.loglik) >= fx["loglik"] - LOGLIK_RTOL * abs(fx["loglik"])
    np.testing.assert_allclose([float(m.aic), float(m.bic)], [fx["aic"], fx["bic"]], rtol=1e-9)
    assert m.n_params == fx["df"]
    assert int(m.n_obs) == fx["nobs"]
    # VarCorr: the same rows in the same order
    vc, ref = m.varcorr(), fx["varcorr"]
    assert list(vc.columns) == ["grp", "var1", "var2", "vcov", "sdcor"]
    assert list(vc.grp) == ref["grp"]
    assert [v if isinstance(v, str) else "" for v in vc.var1] == [r_name(v) for v in ref["var1"]]
    assert [v if isinstance(v, str) else "" for v in vc.var2] == [r_name(v) for v in ref["var2"]]
    sigma = fx["sigma"]
    is_sd = np.asarray([v == "" for v in ref["var2"]])
    np.testing.assert_allclose(
        vc.sdcor[is_sd],
        np.asarray(ref["sdcor"])[is_sd],
        rtol=VARCOMP_RTOL,
        atol=VARCOMP_ATOL * sigma,
    )
    finite = ~is_sd & np.isfinite(np.asarray(ref["sdcor"], float))
    np.testing.assert_allclose(
        vc.sdcor[finite], np.asarray(ref["sdcor"])[finite], rtol=VARCOMP_RTOL
    )
    np.testing.assert_allclose(m.sigma, sigma, rtol=VARCOMP_RTOL)
    assert m.n_groups == fx["ngrps"]
    assert bool(m.singular) == fx["singular"]
    assert bool(m.converged)
    # ranef with conditional SDs, matched by level label
    ours = m.ranef(condvar=True)
    assert list(ours) == list(fx["ranef"])
    for f, r in fx["ranef"].items():
        frame = ours[f].loc[r["levels"]]
        q = len(r["columns"])
        assert list(frame.columns[:q]) == [r_name(c) for c in r["columns"]]
        vals, ref_vals = frame.iloc[:, :q].to_numpy(), np.asarray(r["values"], float)
        atol = max(RANEF_TOL * np.max(np.abs(ref_vals)), VARCOMP_ATOL * sigma)
        np.testing.assert_allclose(vals, ref_vals, atol=atol, rtol=0)
        sds, ref_sds = frame.iloc[:, q:].to_numpy(), np.asarray(r["condsd"], float)
        atol = max(RANEF_TOL * np.max(ref_sds), VARCOMP_ATOL * sigma)
        np.testing.assert_allclose(sds, ref_sds, atol=atol, rtol=0)


@pytest.mark.parametrize("name", DEFAULT)
def test_matches_lme4(name):
    check_against_r(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW_SHARED + SLOW)
def test_matches_lme4_slow(name):
    check_against_r(name)


def test_r_optimisers_agree():
    """The fixtures are trustworthy to the digits the tolerances assume."""
    for name in DEFAULT + SLOW_SHARED + SLOW:
        agree = fixture(name)[0]["agreement_digits"]
        assert agree["loglik"] >= 11.5, name
        assert agree["fixef"] >= 5.5, name


# ---------------------------------------------------------------- glmmTMB, statsmodels


@pytest.mark.parametrize("name", ["lmer_sleepstudy_corr_ml", "lmer_sleepstudy_corr_reml"])
def test_variance_parameter_se_match_glmmtmb(name):
    """Our Wald SEs of (sd, cor, sigma), mapped by the delta method to glmmTMB's (log sd,
    cor / sqrt(1 - cor^2), log sigma^2), equal glmmTMB's from its exact Hessian."""
    fx, _ = fixture(name)
    tmb = fx["glmmTMB"]
    m = fitted(name)
    np.testing.assert_allclose(float(m.loglik), tmb["loglik"], rtol=LOGLIK_RTOL)
    sd0, sd1, cor, sigma = (float(m.params[n]) for n in m.names[2:])
    se = {n: float(m.se[n]) for n in m.names[2:]}
    ours = [
        2.0 * se["sigma"] / sigma,
        se["sd(Intercept|Subject)"] / sd0,
        se["sd(Days|Subject)"] / sd1,
        se["cor(Intercept,Days|Subject)"] * (1.0 - cor**2) ** -1.5,
    ]
    np.testing.assert_allclose(ours, tmb["se_par"][2:], rtol=TMB_SE_RTOL)


@pytest.mark.parametrize("reml", [True, False])
def test_matches_statsmodels(reml):
    sm = json.loads(
        (REFERENCE / "mixed" / f"lmer_sm_sleepstudy_{'reml' if reml else 'ml'}.json").read_text()
    )
    m = fitted(f"lmer_sleepstudy_corr_{'reml' if reml else 'ml'}")
    np.testing.assert_allclose(np.asarray(m.coef)[:2], sm["fe_params"], rtol=FIXEF_RTOL)
    np.testing.assert_allclose([m.se["Intercept"], m.se["Days"]], sm["bse_fe"], rtol=SE_RTOL)
    vc = m.varcorr()
    cov_re = np.asarray(sm["cov_re"])
    np.testing.assert_allclose(vc.vcov[:3], [cov_re[0, 0], cov_re[1, 1], cov_re[0, 1]], rtol=1e-4)
    np.testing.assert_allclose(m.sigma**2, sm["scale"], rtol=VARCOMP_RTOL)
    np.testing.assert_allclose(float(m.loglik), sm["llf"], rtol=LOGLIK_RTOL)


# ---------------------------------------------------------------- behaviour


def test_reml_and_ml_share_one_program():
    fitted("lmer_sleepstudy_corr_reml")
    size = fit_lmm._cache_size()
    fitted("lmer_sleepstudy_corr_ml")
    fitted("lmer_simulated_cor1_singular_reml")  # 30 levels, padded like 18: same program
    assert fit_lmm._cache_size() == size


def test_row_order_does_not_matter():
    fx, df = fixture("lmer_sleepstudy_corr_reml")
    ref = fitted("lmer_sleepstudy_corr_reml")
    shuffled = df.sample(frac=1.0, random_state=3)
    m = jm.lmer(fx["formula"], shuffled)
    np.testing.assert_allclose(np.asarray(m.coef), np.asarray(ref.coef), rtol=1e-9)
    np.testing.assert_allclose(float(m.loglik), float(ref.loglik), rtol=1e-12)
    a, b = m.ranef()["Subject"], ref.ranef()["Subject"]
    pd.testing.assert_frame_equal(a.loc[b.index], b, rtol=1e-8)


@pytest.mark.parametrize(
    "name",
    [
        "lmer_simulated_cor1_singular_reml",
        pytest.param("lmer_pastes_sample_cask_singular_reml", marks=pytest.mark.slow),
    ],
)
def test_boundary_fits_are_reported(name):
    m = fitted(name)
    assert bool(m.singular) and bool(m.converged)
    assert m.status == jm.Status.BOUNDARY
    assert "boundary" in m.summary()
    # the variance parameters have no Wald SE there; the fixed effects keep theirs
    p = len(m.spec.coef_names)
    assert np.isnan(np.asarray(m.cov)[p:, p:]).all()
    assert np.isfinite(np.asarray(m.cov)[:p, :p]).all()
    vc = m.varcorr()
    if name == "lmer_simulated_cor1_singular_reml":
        assert float(vc.sdcor[2]) == pytest.approx(1.0, abs=1e-12)
    else:
        assert float(vc.sdcor[1]) == 0.0


def test_summary():
    text = fitted("lmer_sleepstudy_corr_reml").summary()
    for piece in ("Random effects:", "Fixed effects:", "Residual", "Subject", "REML criterion"):
        assert piece in text
    assert text.index("Random effects:") < text.index("Fixed effects:")


@pytest.mark.slow
def test_summary_and_lr_test():
    corr, uncorr = fitted("lmer_sleepstudy_corr_ml"), fitted("lmer_sleepstudy_uncorr_ml")
    text = corr.summary()
    for piece in ("Random effects:", "Fixed effects:", "Residual", "Subject", "Log-likelihood"):
        assert piece in text
    assert text.index("Random effects:") < text.index("Fixed effects:")
    t = jm.lr_test(uncorr, corr)  # the correlation: one parameter
    assert t.df == 1
    np.testing.assert_allclose(
        float(t.statistic), 2 * (float(corr.loglik) - float(uncorr.loglik)), rtol=1e-12
    )
    w = jm.wald_test(corr, "Days = 10")
    assert np.isfinite(float(w.statistic))


@pytest.mark.slow
def test_crossed_and_nested_structure():
    pen = fitted("lmer_penicillin_crossed_reml")
    assert pen.n_groups == {"plate": 24, "sample": 6}
    pastes = fitted("lmer_pastes_nested_reml")
    assert pastes.n_groups == {"cask:batch": 30, "batch": 10}
    assert list(pastes.ranef()["cask:batch"].index[:2]) == ["a:A", "a:B"]  # lme4's order


# ---------------------------------------------------------------- the grammar


def test_grammar_expansions():
    f = parse("y ~ x * z + (x + z || g) + (1 | a/b) + (0 + x | c:d)")
    assert f.fixed() == "y ~ x * z"
    terms = [(t.expr, t.factor, t.variables) for t in f.terms]
    assert terms == [
        ("1", "g", ("g",)),
        ("0 + x", "g", ("g",)),
        ("0 + z", "g", ("g",)),
        ("1", "b:a", ("b", "a")),
        ("1", "a", ("a",)),
        ("0 + x", "c:d", ("c", "d")),
    ]
    assert parse("y ~ (1 | g)").fixed_rhs == "1"
    assert parse("y ~ 0 + x + (1 | g)").fixed_rhs == "0 + x"
    assert parse("cbind(s, n - s) ~ x + (1 | g)").cbind == ("s", "n - s")
    assert [t.factor for t in parse("y ~ (1 | a/b/c)").terms] == ["c:b:a", "b:a", "a"]


@pytest.mark.parametrize(
    "formula, match",
    [
        ("y ~ x", "no random-effect terms"),
        ("y ~ x + 1 | g", "in parentheses"),
        ("y ~ (1 | a + b)", "invalid grouping factor"),
        ("y ~ (0 | g)", "no random effects"),
        ("y ~ x - (1 | g)", "added with"),
        ("y ~ ( | g)", "empty side"),
        ("y ~ x + (1 | g", "unbalanced"),
        ("~ x + (1 | g)", "one response"),
        ("y ~ (x | g | h)", "more than one bar"),
        ("cbind(s) ~ (1 | g)", "two count expressions"),
    ],
)
def test_formulas_lme4_rejects(formula, match):
    with pytest.raises(ValueError, match=match):
        parse(formula)


# ---------------------------------------------------------------- bad input (before any fitting)


@pytest.fixture(scope="module")
def sleep():
    return fixture("lmer_sleepstudy_corr_reml")[1]


def test_missing_variables_are_named(sleep):
    with pytest.raises(KeyError, match="grouping factor 'Subj'"):
        jm.lmer("Reaction ~ Days + (1 | Subj)", sleep)
    with pytest.raises(KeyError, match=r"term \(Dayz \| Subject\) uses \['Dayz'\]"):
        jm.lmer("Reaction ~ Days + (Dayz | Subject)", sleep)
    with pytest.raises(KeyError, match="Dayz"):
        jm.lmer("Reaction ~ Dayz + (1 | Subject)", sleep)


def test_bad_factors_are_refused(sleep):
    one = sleep.assign(g="a")
    with pytest.raises(ValueError, match="1 level"):
        jm.lmer("Reaction ~ Days + (1 | g)", one)
    per_row = sleep.assign(g=np.arange(len(sleep)))
    with pytest.raises(ValueError, match="as many levels as observations"):
        jm.lmer("Reaction ~ Days + (1 | g)", per_row)
    with pytest.raises(ValueError, match="number of random effects"):
        jm.lmer("Reaction ~ Days + (Days | Subject)", sleep[sleep.Days < 2])
    nan_label = sleep.astype({"Subject": object})
    nan_label.loc[5, "Subject"] = None
    with pytest.raises(ValueError, match=r"missing label.*row 5"):
        jm.lmer("Reaction ~ Days + (1 | Subject)", nan_label)
    with pytest.raises(ValueError, match="glmer"):
        jm.lmer("cbind(Reaction, Days) ~ 1 + (1 | Subject)", sleep)
    with pytest.raises(TypeError, match="reml"):
        jm.lmer("Reaction ~ Days + (1 | Subject)", sleep, reml="yes")
