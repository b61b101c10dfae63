"""jaxmle.glm against R's glm / MASS::glm.nb and statsmodels GLM fixtures (tests/reference/glm/), the
Newton = Fisher scoring = IRLS path for a canonical link, the result's behaviour, and bad input.

Each fixture is fitted once (cached): the default fit reproduces R's `summary(glm)` (dispersion-scaled
expected information), and the pure-MLE numbers come from the same fit (`res.covariance("expected")`)
or, for the negative binomial, from one refit with `dispersion="mle"`.
"""

from __future__ import annotations

import functools
import json
import math
from collections import OrderedDict
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest
import scipy.stats as st
import statsmodels.api as sm
import statsmodels.formula.api as smf
from scipy.special import polygamma

import jaxmle as jm
from jaxmle._glm import GLMResult

REFERENCE = Path(__file__).parent / "reference"

# ---------------------------------------------------------------- tolerances (as tests/test_reference.py)
# coefficients ~1e-6 relative, with an absolute floor of 1e-7 standard errors for near-zero ones
PARAM_RTOL, PARAM_ATOL_SE = 1e-6, 1e-7
# standard errors ~1e-5 relative; the whole covariance to 1e-5 of its largest entry
SE_RTOL, COV_SCALED_TOL = 1e-5, 1e-5
# deviance, Pearson chi2, lnL: sums over N in float64 at (nearly) the same estimate
STAT_RTOL = 1e-8
# R's predict: linear predictor and mean to the coefficient tolerance, their standard errors to SE_RTOL
PREDICT_RTOL = 1e-6

R_FIXTURES = [
    "r_glm_binomial_logit_birthwt",
    "r_glm_binomial_cloglog_birthwt",
    "r_glm_binomial_probit_menarche",
    "r_glm_poisson_insurance",
    "r_glm_gaussian_weights_mtcars",
    "r_glm_gaussian_log_mtcars",
    "r_glm_gamma_inverse_mtcars",
    "r_glm_gamma_log_airquality",
    "r_glm_gamma_log_weights_airquality",
    "r_glm_negbin_quine",
]
SM_FIXTURES = ["sm_glm_binomial_star98", "sm_glm_gamma_scotland"]


@functools.cache
def fixture(name):
    fx = json.loads((REFERENCE / "glm" / f"{name}.json").read_text())
    return fx, pd.read_csv(REFERENCE / fx["dataset"])


def offset_of(fx, df):
    """R's offset(log(Holders)), passed as an array."""
    return np.log(df["Holders"].to_numpy()) if fx.get("offset") else None


@functools.cache
def fitted(name, dispersion=None):
    fx, df = fixture(name)
    return jm.glm(
        fx["formula"],
        df,
        family=fx["family"],
        link=fx["link"],
        weights=fx.get("weights"),
        offset=offset_of(fx, df),
        dispersion=dispersion,
    )


def assert_coef(est, ref, se_ref, label):
    est, ref = np.asarray(est), np.asarray(ref)
    err = np.abs(est - ref)
    bad = err > PARAM_RTOL * np.abs(ref) + PARAM_ATOL_SE * se_ref
    assert not bad.any(), f"{label}: {est[bad]} vs {ref[bad]}"


def assert_cov(cov, ref, label):
    cov, ref = np.asarray(cov), np.asarray(ref)
    se, se_ref = np.sqrt(np.diagonal(cov)), np.sqrt(np.diagonal(ref))
    np.testing.assert_allclose(se, se_ref, rtol=SE_RTOL, err_msg=f"{label}: standard errors")
    np.testing.assert_allclose(cov, ref, atol=COV_SCALED_TOL * np.max(np.abs(ref)), err_msg=label)


def coef_of(res):
    return np.array([float(res.params[name]) for name in res.coef_names])


# ---------------------------------------------------------------- R


@pytest.mark.parametrize("name", R_FIXTURES)
def test_r_glm_summary(name):
    """Coefficients, summary(glm) covariance, deviances, Pearson chi2, dispersion, lnL, AIC, n."""
    fx, _ = fixture(name)
    res = fitted(name)
    p = len(fx["coef"])
    cov_ref = np.asarray(fx["cov_summary"])
    assert bool(res.converged), res.message
    assert len(res.coef_names) == p and res.names[:p] == res.coef_names
    assert_coef(coef_of(res), fx["coef"], np.sqrt(np.diagonal(cov_ref)), name)
    assert_cov(np.asarray(res.cov)[:p, :p], cov_ref, name)
    np.testing.assert_allclose(
        [float(res.se[n]) for n in res.coef_names], np.sqrt(np.diagonal(cov_ref)), rtol=SE_RTOL
    )
    for ours, key in [
        (res.deviance, "deviance"),
        (res.null_deviance, "null_deviance"),
        (res.pearson_chi2, "pearson_chi2"),
        (res.dispersion, "dispersion"),
    ]:
        np.testing.assert_allclose(float(ours), fx[key], rtol=STAT_RTOL, err_msg=key)
    # lnL at the MLE: R's logLik, except for Gamma (R plugs in phi = deviance/n; the reference is
    # the lnL at MASS::gamma.shape's ML shape)
    np.testing.assert_allclose(
        float(res.loglik), fx.get("loglik_mle", fx["loglik_r"]), rtol=STAT_RTOL
    )
    if fx["family"] != "gamma":
        np.testing.assert_allclose(float(res.aic), fx["aic_r"], rtol=STAT_RTOL)
    assert int(res.n_obs) == fx["nobs"] and res.n_dropped == fx["n_dropped"]
    assert float(res.df_resid) == fx["df_residual"] and float(res.df_null) == fx["df_null"]
    expected_type = {
        "gaussian": "expected, Pearson dispersion",
        "gamma": "expected, Pearson dispersion",
        "binomial": "expected",
        "poisson": "expected",
    }.get(fx["family"], "expected; theta: observed information at fixed mu (MASS::glm.nb)")
    assert res.cov_type == expected_type


@pytest.mark.parametrize("name", [n for n in R_FIXTURES if "gaussian" in n or "gamma" in n])
def test_r_glm_pure_mle(name):
    """The same fit's unscaled expected-information covariance and its ML scale / shape."""
    fx, _ = fixture(name)
    res = fitted(name)
    p = len(fx["coef"])
    mle_cov = np.asarray(res.covariance("expected"))
    assert_cov(mle_cov[:p, :p], fx["cov_mle"], f"{name} ML covariance")
    extra = "scale" if fx["family"] == "gaussian" else "shape"
    np.testing.assert_allclose(float(res.params[extra]), fx[f"{extra}_mle"], rtol=PARAM_RTOL)
    np.testing.assert_allclose(math.sqrt(mle_cov[p, p]), fx[f"{extra}_se_mle"], rtol=SE_RTOL)
    # dispersion="mle" reuses the compiled program (same model) and labels the kind
    pure = fitted(name, "mle")
    assert pure.cov_type == "expected"
    np.testing.assert_array_equal(np.asarray(pure.cov), mle_cov)
    value = float(res.params[extra])
    phi_mle = 1 / value if extra == "shape" else value**2
    np.testing.assert_allclose(float(pure.dispersion), phi_mle, rtol=1e-14)


def test_r_negative_binomial_theta():
    """glm.nb's theta and SE.theta (observed information at fixed mu) by default; with
    dispersion="mle" the expected information, which for theta is the exact series below."""
    fx, _ = fixture("r_glm_negbin_quine")
    res = fitted("r_glm_negbin_quine")
    np.testing.assert_allclose(float(res.params["theta"]), fx["theta"], rtol=PARAM_RTOL)
    np.testing.assert_allclose(float(res.se["theta"]), fx["theta_se"], rtol=SE_RTOL)
    pure = fitted("r_glm_negbin_quine", "mle")
    assert pure.cov_type == "expected"
    p = len(fx["coef"])
    assert_coef(coef_of(pure), fx["coef"], np.sqrt(np.diagonal(fx["cov_summary"])), "NB, mle")
    assert_cov(np.asarray(pure.cov)[:p, :p], fx["cov_summary"], "NB beta block, pure MLE")
    mu = np.asarray(res.predict()["response"])
    th = float(res.params["theta"])
    info = 0.0
    for m in mu:  # E[(d ln f / d theta)^2] by summation over y
        y = np.arange(st.nbinom(th, th / (th + m)).isf(1e-20) + 50)
        s = polygamma(0, y + th) - polygamma(0, th) + math.log(th) + 1 - math.log(th + m)
        s -= (y + th) / (m + th)
        info += st.nbinom(th, th / (th + m)).pmf(y) @ s**2
    np.testing.assert_allclose(float(pure.se["theta"]), 1 / math.sqrt(info), rtol=SE_RTOL)


@pytest.mark.parametrize("name", R_FIXTURES)
def test_r_predict(name):
    """R predict(m, newdata, type = "link" / "response", se.fit = TRUE) on a few rows."""
    fx, df = fixture(name)
    res = fitted(name)
    rows = fx["predict_rows"]
    newdata = df.iloc[rows]
    off = offset_of(fx, df)
    pred = res.predict(newdata, offset=None if off is None else off[rows])
    assert list(pred.index) == list(newdata.index)
    for col, key, tol in [
        ("link", "predict_link", PREDICT_RTOL),
        ("se_link", "predict_se_link", SE_RTOL),
        ("response", "predict_response", PREDICT_RTOL),
        ("se_response", "predict_se_response", SE_RTOL),
    ]:
        np.testing.assert_allclose(pred[col].to_numpy(), fx[key], rtol=tol, err_msg=col)


# ---------------------------------------------------------------- statsmodels


@pytest.mark.parametrize("name", SM_FIXTURES)
def test_statsmodels_glm(name):
    fx, df = fixture(name)
    res = jm.glm(fx["formula"], df, family=fx["family"], link=fx["link"], weights=fx["weights"])
    p = len(fx["coef"])
    assert res.coef_names[1:] == tuple(fx["coef_names"][1:])
    assert_coef(coef_of(res), fx["coef"], np.asarray(fx["bse"]), name)
    assert_cov(np.asarray(res.cov)[:p, :p], fx["cov"], name)
    for ours, key in [
        (res.deviance, "deviance"),
        (res.null_deviance, "null_deviance"),
        (res.pearson_chi2, "pearson_chi2"),
        (res.dispersion, "scale"),
    ]:
        np.testing.assert_allclose(float(ours), fx[key], rtol=STAT_RTOL, err_msg=key)
    if fx["family"] == "binomial":  # statsmodels' Gamma llf plugs in the Pearson scale
        np.testing.assert_allclose(float(res.loglik), fx["llf"], rtol=STAT_RTOL)
        # dispersion="pearson": quasibinomial standard errors, phi = X2 / df times the ML cov (R's
        # quasibinomial; statsmodels' scale="X2" leaves the trials out of X2 for a 2-column endog)
        quasi = jm.glm(fx["formula"], df, family="binomial", weights=fx["weights"],
                       dispersion="pearson")  # fmt: skip
        phi = fx["pearson_chi2"] / fx["df_resid"]
        assert quasi.cov_type == "expected, Pearson dispersion"
        np.testing.assert_allclose(float(quasi.dispersion), phi, rtol=STAT_RTOL)
        assert_cov(quasi.cov, phi * np.asarray(fx["cov"]), "quasibinomial")


def test_interaction_against_statsmodels_live():
    """Interactions and categoricals name and estimate as in statsmodels' formula GLM."""
    _, df = fixture("r_glm_poisson_insurance")
    off = np.log(df["Holders"].to_numpy())
    df = df.assign(logH=off)
    res = jm.glm("Claims ~ Group * Age", df, family="poisson", offset="logH")
    ref = smf.glm("Claims ~ Group * Age", df, family=sm.families.Poisson(), offset=off).fit(
        tol=1e-14
    )
    assert res.coef_names == tuple(ref.params.index)
    assert_coef(coef_of(res), ref.params.to_numpy(), ref.bse.to_numpy(), "Group * Age")
    np.testing.assert_allclose(
        [float(res.se[n]) for n in res.coef_names], ref.bse.to_numpy(), rtol=SE_RTOL
    )
    np.testing.assert_allclose(float(res.deviance), ref.deviance, rtol=STAT_RTOL)
    # the offset as a column name predicts from newdata's column
    pred = res.predict(df.iloc[:3])
    np.testing.assert_allclose(
        pred["response"], ref.predict(df.iloc[:3], offset=off[:3]), rtol=1e-8
    )


# ---------------------------------------------------------------- Newton = Fisher scoring = IRLS


def test_newton_fisher_irls_same_path():
    """Canonical link: -H = I at every theta, so one Newton step, one Fisher scoring step and one
    IRLS step (weighted least squares on the working response) are the same, from any point."""
    fx, df = fixture("r_glm_binomial_logit_birthwt")
    X = np.asarray(fitted("r_glm_binomial_logit_birthwt").problem.data["X"])
    y = df["low"].to_numpy(float)

    def irls_step(eta):  # z = eta + (y - mu) / (d mu/d eta), W = mu (1 - mu): a WLS fit
        mu = 1 / (1 + np.exp(-eta))
        w = mu * (1 - mu)
        z = eta + (y - mu) / w
        return np.linalg.solve((X * w[:, None]).T @ X, (X * w[:, None]).T @ z)

    mustart = (y + 0.5) / 2  # R's binomial initialize; glm starts from one IRLS step from it
    beta = irls_step(np.log(mustart / (1 - mustart)))
    for _ in range(3):
        at = jm.glm(fx["formula"], df, family="binomial", start=beta, max_iter=0)  # one program
        assert int(at.n_iter) == 0
        np.testing.assert_allclose(np.asarray(at.coef), beta, atol=0)
        info, expected = np.asarray(at.information), np.asarray(at.expected_information)
        np.testing.assert_allclose(info, expected, rtol=1e-12, atol=1e-12 * np.abs(info).max())
        newton = beta + np.linalg.solve(info, np.asarray(at.score))
        fisher = beta + np.linalg.solve(expected, np.asarray(at.score))
        irls = irls_step(X @ beta)
        np.testing.assert_allclose(newton, irls, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(fisher, irls, rtol=1e-10, atol=1e-12)
        beta = irls
    # the fit took these three steps from the same start: its estimate is IRLS's third iterate
    res = fitted("r_glm_binomial_logit_birthwt")
    assert int(res.n_iter) == 3
    np.testing.assert_allclose(np.asarray(res.coef), beta, rtol=1e-12)


# ---------------------------------------------------------------- the result


def test_result_behaves_like_a_fit_result():
    res = fitted("r_glm_gamma_log_airquality")
    assert isinstance(res, GLMResult) and isinstance(res, jm.FitResult)
    assert isinstance(res.params, OrderedDict)
    assert res.names == ("Intercept", "Temp", "np.log(Wind)", "Solar.R", "shape")
    assert list(res.params) == list(res.names) == list(res.se)
    assert list(jax.tree.leaves(res.params)) == [res.params[n] for n in res.names]
    frame = res.to_frame()
    assert list(frame.index) == list(res.names)
    np.testing.assert_allclose(frame["std_err"], [float(res.se[n]) for n in res.names])
    text = res.summary()
    parts = ["gamma, link log", "42 with missing values dropped", "expected, Pearson dispersion"]
    for part in [*parts, "Null deviance", "Solar.R", "shape"]:
        assert part in text, part
    # with_cov switches kind: R's unscaled expected-information covariance at the ML shape
    fx, _ = fixture("r_glm_gamma_log_airquality")
    p = len(fx["coef"])
    mle = res.with_cov("expected")
    assert isinstance(mle, GLMResult) and mle.cov_type == "expected"
    assert_cov(np.asarray(mle.cov)[:p, :p], fx["cov_mle"], "with_cov('expected') vs R")


def test_same_shapes_reuse_the_program():
    """New data of the same shape: no new compile. Scaling y by c under a log link moves only the
    intercept, by ln c (and sigma by the factor c): an exact invariance of the MLE."""
    from jaxmle._fit import _fit_compiled

    fx, df = fixture("r_glm_gaussian_log_mtcars")
    res = fitted("r_glm_gaussian_log_mtcars")
    size = _fit_compiled._cache_size()
    scaled = jm.glm(fx["formula"], df.assign(mpg=1.5 * df["mpg"]), link="log")
    assert _fit_compiled._cache_size() == size
    shift = np.zeros(len(res.names))
    shift[0] = math.log(1.5)
    expected = np.asarray(res.coef) + shift
    expected[-1] = 1.5 * float(res.params["scale"])
    np.testing.assert_allclose(np.asarray(scaled.coef), expected, rtol=1e-9, atol=1e-12)


def test_offset_and_weights_by_name_or_array():
    fx, df = fixture("r_glm_gaussian_weights_mtcars")
    by_name = fitted("r_glm_gaussian_weights_mtcars")
    by_array = jm.glm(fx["formula"], df, weights=df["carb"].to_numpy())
    np.testing.assert_allclose(np.asarray(by_array.coef), np.asarray(by_name.coef), rtol=1e-13)


def test_missing_values_and_zero_weights_are_dropped_and_counted():
    fx, df = fixture("r_glm_gaussian_weights_mtcars")
    df = df.copy()
    df.loc[3, "hp"] = np.nan
    df.loc[5, "carb"] = np.nan
    df.loc[7, "carb"] = 0.0
    res = jm.glm(fx["formula"], df, weights="carb")
    ref = jm.glm(fx["formula"], df.drop(index=[3, 5, 7]), weights="carb")
    assert res.n_dropped == 3 and int(res.n_obs) == len(df) - 3
    assert "2 with missing values, 1 with zero weight dropped" in res.summary()
    np.testing.assert_allclose(np.asarray(res.coef), np.asarray(ref.coef), rtol=1e-13)


# ---------------------------------------------------------------- bad input, before any fitting


def test_bad_input():
    _, df = fixture("r_glm_poisson_insurance")
    with pytest.raises(ValueError, match="unknown family 'poison'"):
        jm.glm("Claims ~ Group", df, family="poison")
    with pytest.raises(ValueError, match="unknown link 'logitt'"):
        jm.glm("Claims ~ Group", df, family="binomial", link="logitt")
    with pytest.raises(ValueError, match="link 'probit' is not available for the poisson family"):
        jm.glm("Claims ~ Group", df, family="poisson", link="probit")
    with pytest.raises(KeyError, match=r"the formula names \['Colour'\]"):
        jm.glm("Claims ~ Group + Colour", df, family="poisson")
    with pytest.raises(ValueError, match="formula must be a string 'y ~ x1 \\+ x2'"):
        jm.glm("Group + Age", df, family="poisson")
    with pytest.raises(KeyError, match="offset='Exposure' is not a column"):
        jm.glm("Claims ~ Group", df, family="poisson", offset="Exposure")
    with pytest.raises(ValueError, match="weights must be a column name or an array of shape"):
        jm.glm("Claims ~ Group", df, family="poisson", weights=np.ones(3))
    with pytest.raises(ValueError, match="unknown dispersion"):
        jm.glm("Claims ~ Group", df, family="poisson", dispersion="quasi")
    bad = df.assign(Claims=df["Claims"] - 40)
    with pytest.raises(ValueError, match="outside the support of the poisson family"):
        jm.glm("Claims ~ Group", bad, family="poisson")
    with pytest.raises(ValueError, match=r"proportions in \[0, 1\]"):
        jm.glm("Claims ~ Group", df, family="binomial")
    with pytest.raises(ValueError, match="outside the support of the gamma family"):
        jm.glm("Claims ~ Group", df.assign(Claims=df["Claims"] * 0.0), family="gamma")
    with pytest.raises(ValueError, match="weights must be finite and >= 0"):
        jm.glm("Claims ~ Group", df.assign(w=-1.0), family="poisson", weights="w")
    # collinearity names the columns and the relation
    dup = df.assign(H2=2.0 * df["Holders"], H3=df["Holders"] + 1.0)
    with pytest.raises(ValueError, match=r"H2 = \+2\*Holders"):
        jm.glm("Claims ~ Holders + H2", dup, family="poisson")
    with pytest.raises(ValueError, match=r"H3 = \+1\*Intercept \+1\*Holders"):
        jm.glm("Claims ~ Holders + H3", dup, family="poisson")
    unused = df.assign(Group=pd.Categorical(df["Group"], categories=["G1", "G2", "G3", "G4", "G5"]))
    with pytest.raises(ValueError, match=r"\['Group\[T.G5\]'\] are all zero"):
        jm.glm("Claims ~ Group", unused, family="poisson")
    with pytest.raises(ValueError, match="newdata does not fit"):
        fitted("r_glm_poisson_insurance").predict(
            df.assign(Group="G9").iloc[:2], offset=np.zeros(2)
        )
    with pytest.raises(ValueError, match="pass offset= for newdata"):
        fitted("r_glm_poisson_insurance").predict(df.iloc[:2])
