"""Tests, delta method, profile likelihood, transforms and model comparison (jaxmle._inference).

References: R (lmtest::waldtest/lrtest, car::linearHypothesis/deltaMethod, anova(test = "Rao"),
AIC/BIC, profile bounds by glm/survreg/bbmle::mle2 refits and uniroot) and statsmodels (wald_test,
t_test, the nonlinear delta method, GLM score_test, compare_lr_test/compare_lm_test, NB2 in
alpha), made by the scripts in tests/reference/inference/; closed forms; and a vmapped size study.

Fits are module-scoped and the log-densities module-level, so each (model, held-parameter mask) is
compiled once for the whole file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from jax.scipy.special import gammaln
from scipy.optimize import brentq
from scipy.stats import chi2

import jaxmle as jm

HERE = Path(__file__).parent / "reference" / "inference"
R_FX = json.loads((HERE / "r_inference.json").read_text())
SM_FX = json.loads((HERE / "sm_inference.json").read_text())
DATA = Path(__file__).parent / "reference" / "data"

# Statistics, p-values and delta-method numbers: the standard is ~1e-6 relative. The two
# sides evaluate the same closed formula at estimates that agree to ~1e-7 (Newton stops within
# ~1e-6 standard errors of the maximum), so differences are ~1e-8 to 1e-7.
STAT_RTOL = 1e-6
# Profile bounds: standard ~1e-5; both sides root-find to <1e-9 of a standard error.
PROFILE_RTOL = 1e-5
# bbmle's own confint(method = "uniroot") stops at uniroot's default tol (~1.2e-4 on the
# parameter), so it is checked only to this, against the tight bounds above.
BBMLE_DEFAULT_RTOL = 1e-4
# Estimates and standard errors against closed forms or statsmodels (as in test_reference.py).
EST_RTOL = 1e-6
SE_RTOL = 1e-5
CUT95 = chi2.ppf(0.95, 1) / 2


def assert_test(res, ref, label, df=None):
    np.testing.assert_allclose(
        float(res.statistic), ref["statistic"], rtol=STAT_RTOL, err_msg=label
    )
    if "pvalue" in ref:
        np.testing.assert_allclose(float(res.pvalue), ref["pvalue"], rtol=STAT_RTOL, err_msg=label)
    assert int(res.df) == (ref["df"] if df is None else df), label


# ---------------------------------------------------------------- log-densities (one observation)


def linear_logit(theta, obs):
    """eta = sum_k theta[k] * obs[k]: parameters named like the covariates (car/lmtest style)."""
    eta = sum(theta[k] * obs[k] for k in theta)
    return obs["low"] * eta - jnp.logaddexp(0.0, eta)


def split_logit(theta, obs):
    eta = obs["X"] @ theta["b"] + obs["Z"] @ theta["g"]
    return obs["y"] * eta - jnp.logaddexp(0.0, eta)


def normal_hp(theta, obs):
    mu = obs["X"] @ theta["b"] + theta["hp"] * obs["hp"]
    z = (obs["y"] - mu) * jnp.exp(-theta["log_sigma"])
    return -0.5 * z**2 - theta["log_sigma"] - 0.5 * jnp.log(2 * jnp.pi)


def normal_predict(theta, obs):
    mu = obs["X"] @ theta["b"] + theta["hp"] * obs["hp"]
    return jnp.stack([mu, theta["log_sigma"]])


def normal_fisher(eta, obs):
    """Fisher information of N(mu, exp(2 s)) in (mu, s): diag(exp(-2 s), 2)."""
    return jnp.diag(jnp.stack([jnp.exp(-2.0 * eta[1]), 2.0]))


def weibull(theta, obs):
    s = jnp.exp(theta["log_scale"])
    w = (jnp.log(obs["t"]) - obs["X"] @ theta["b"]) / s
    return obs["d"] * (w - jnp.log(s) - jnp.log(obs["t"])) - jnp.exp(w)


def negbin2(theta, obs):
    th = 1.0 / theta["alpha"]
    eta = obs["X"] @ theta["b"]
    lmt = jnp.log(th + jnp.exp(eta))
    y = obs["y"]
    return (
        gammaln(y + th)
        - gammaln(th)
        - gammaln(y + 1.0)
        + th * (jnp.log(th) - lmt)
        + y * (eta - lmt)
    )


def bernoulli(theta, obs):
    return obs["y"] * jnp.log(theta["p"]) + (1 - obs["y"]) * jnp.log1p(-theta["p"])


def normal_natural(theta, obs):
    z = (obs["y"] - theta["mu"]) / theta["sigma"]
    return -0.5 * z**2 - jnp.log(theta["sigma"]) - 0.5 * jnp.log(2 * jnp.pi)


def saturating(theta, obs):
    """y ~ N(a (1 - exp(-b x)), exp(2 log_s)): as b -> inf the mean is the constant a."""
    mu = theta["a"] * (1.0 - jnp.exp(-theta["b"] * obs["x"]))
    z = (obs["y"] - mu) * jnp.exp(-theta["log_s"])
    return -0.5 * z**2 - theta["log_s"] - 0.5 * jnp.log(2 * jnp.pi)


def sqrt_variance(theta, obs):
    """y ~ N(mu, (1 + sqrt(v))^2): lnL is finite at v = 0 and NaN below it."""
    sd = 1.0 + jnp.sqrt(theta["v"])
    z = (obs["y"] - theta["mu"]) / sd
    return -0.5 * z**2 - jnp.log(sd) - 0.5 * jnp.log(2 * jnp.pi)


def sim_logit(theta, obs):
    eta = obs["x"] @ theta["b"] + obs["z"] @ theta["g"]
    return obs["y"] * eta - jnp.logaddexp(0.0, eta)


# ---------------------------------------------------------------- fits (module-scoped)

BW_COVARIATES = ("lwt", "smoke", "ht", "age", "ptl", "ui")


@pytest.fixture(scope="module")
def bw():
    df = pd.read_csv(DATA / "birthwt.csv")
    data = {c: df[c].to_numpy(float) for c in ("low", *BW_COVARIATES)}
    data["const"] = np.ones(len(df))
    init = {k: 0.0 for k in ("const", *BW_COVARIATES)}
    full = jm.fit(linear_logit, init, data)
    restricted = jm.fit(linear_logit, init, data, fixed={"age": 0.0, "ptl": 0.0, "ui": 0.0})
    null = jm.fit(
        linear_logit,
        init,
        data,
        fixed={"age": 0.0, "ptl": 0.0, "ui": 0.0, "smoke": 0.0, "ht": 0.0},
    )
    for res in (full, restricted, null):
        assert bool(res.converged), res.message
    return {"data": data, "init": init, "full": full, "restricted": restricted, "null": null}


@pytest.fixture(scope="module")
def spector():
    df = pd.read_csv(DATA / "spector.csv")
    X = np.column_stack([np.ones(len(df)), df[["GPA", "TUCE", "PSI"]].to_numpy(float)])
    data = {"X": X[:, :2], "Z": X[:, 2:], "y": df["GRADE"].to_numpy(float)}
    init = {"b": jnp.zeros(2), "g": jnp.zeros(2)}
    full = jm.fit(split_logit, init, data)
    restricted = jm.fit(split_logit, init, data, fixed={"g": jnp.zeros(2)})
    return {"data": data, "full": full, "restricted": restricted}


@pytest.fixture(scope="module")
def mtcars():
    df = pd.read_csv(DATA / "mtcars.csv")
    data = {
        "X": np.column_stack([np.ones(len(df)), df["wt"].to_numpy(float)]),
        "hp": df["hp"].to_numpy(float),
        "y": df["mpg"].to_numpy(float),
    }
    init = {"b": jnp.array([30.0, 0.0]), "hp": 0.0, "log_sigma": 1.0}
    opts = {"expected": (normal_predict, normal_fisher)}
    full = jm.fit(normal_hp, init, data, **opts)
    restricted = jm.fit(normal_hp, init, data, fixed={"hp": 0.0}, **opts)
    return {"data": data, "full": full, "restricted": restricted}


# ---------------------------------------------------------------- Wald


def test_wald_matches_lmtest_and_car(bw):
    full, ref = bw["full"], R_FX["birthwt_logit"]
    assert_test(jm.wald_test(full, "age = 0, ptl = 0, ui = 0"), ref["wald"], "waldtest")
    robust = jm.wald_test(full, "age, ptl, ui", cov="sandwich")  # "= 0" may be left out
    assert_test(robust, ref["wald_hc0"], "waldtest vcov = sandwich")
    text = jm.wald_test(full, "smoke = ht, ptl = 0")
    assert_test(text, ref["linear_hypothesis"], "linearHypothesis")
    assert_test(
        jm.wald_test(full, ["smoke - ht", "2*ptl = 0"], cov="sandwich"),
        ref["linear_hypothesis_hc0"],
        "linearHypothesis vcov. = sandwich",
    )
    # the same restriction as a matrix over the flattened parameters (res.names order)
    R = np.zeros((2, len(full.names)))
    R[0, full.names.index("smoke")], R[0, full.names.index("ht")] = 1.0, -1.0
    R[1, full.names.index("ptl")] = 1.0
    np.testing.assert_allclose(jm.wald_test(full, R).statistic, text.statistic, rtol=1e-14)
    assert "of smoke = ht, ptl = 0: chi2(2)" in str(text)


def test_wald_and_delta_match_statsmodels(spector):
    full, ref = spector["full"], SM_FX["spector_logit"]
    np.testing.assert_allclose(full.coef, ref["params"], rtol=EST_RTOL)
    assert_test(jm.wald_test(full, "b[1] = g[0], g[1] = 0"), ref["wald"], "wald_test")
    assert_test(jm.wald_test(full, "b[1] = g[0], g[1] = 0", cov="sandwich"), ref["wald_hc0"], "HC0")
    # t_test: a single linear combination is a z test (delta method of a linear g)
    for key, g, cov in [
        ("t_diff", lambda p: p["b"][1] - p["g"][0], None),
        ("t_psi_hc0", lambda p: p["g"][1], "sandwich"),
    ]:
        t = jm.delta_method(full, g, cov=cov).table()
        np.testing.assert_allclose(t["estimate"][0], ref[key]["effect"], rtol=EST_RTOL)
        np.testing.assert_allclose(t["std_err"][0], ref[key]["sd"], rtol=STAT_RTOL)
        np.testing.assert_allclose(t["z"][0], ref[key]["z"], rtol=STAT_RTOL)
        np.testing.assert_allclose(t["p_value"][0], ref[key]["pvalue"], rtol=STAT_RTOL)

    def g(p):
        return jnp.stack([p["b"][1] * p["g"][1], p["g"][0] / p["b"][1]])

    nl = ref["nonlinear"]
    assert_test(jm.wald_test(full, g), nl, "nonlinear wald")
    d = jm.delta_method(full, g)
    np.testing.assert_allclose(d.estimate, nl["estimate"], rtol=EST_RTOL)
    np.testing.assert_allclose(d.cov, nl["cov"], rtol=SE_RTOL)
    hc0 = ref["nonlinear_hc0_r"]
    assert_test(jm.wald_test(full, g, r=jnp.array(hc0["r"]), cov="sandwich"), hc0, "nl HC0, r")


def test_delta_method_matches_car(bw):
    full, ref = bw["full"], R_FX["birthwt_logit"]
    d = jm.delta_method(full, lambda p: p["smoke"] / p["ht"])
    np.testing.assert_allclose(d.estimate, ref["delta_ratio"]["estimate"], rtol=EST_RTOL)
    np.testing.assert_allclose(d.se, ref["delta_ratio"]["se"], rtol=STAT_RTOL)

    def odds_ratio(p):
        return {"smoke": jnp.exp(p["smoke"]), "ht": jnp.exp(p["ht"])}

    d = jm.delta_method(full, odds_ratio, cov="sandwich")
    ref_hc0 = ref["delta_exp_smoke_hc0"]
    np.testing.assert_allclose(d.estimate["smoke"], ref_hc0["estimate"], rtol=EST_RTOL)
    np.testing.assert_allclose(d.se["smoke"], ref_hc0["se"], rtol=STAT_RTOL)
    assert d.names == ("ht", "smoke") and d.cov.shape == (2, 2)
    assert "smoke" in d.summary() and list(d.to_frame().index) == ["ht", "smoke"]


# ---------------------------------------------------------------- LR, comparison, score


def test_lr_test_and_comparison_table_match_lmtest(bw):
    ref = R_FX["birthwt_logit"]
    assert_test(jm.lr_test(bw["restricted"], bw["full"]), ref["lr"], "lrtest")
    table = jm.compare(
        {"lwt": bw["null"], "+ smoke, ht": bw["restricted"], "+ age, ptl, ui": bw["full"]}
    )
    r3 = ref["lr3"]
    np.testing.assert_allclose(table.loglik, r3["loglik"], rtol=1e-9)
    np.testing.assert_array_equal(table.k, r3["k"])
    np.testing.assert_allclose(table.aic, r3["aic"], rtol=1e-9)
    np.testing.assert_allclose(table.bic, r3["bic"], rtol=1e-9)
    np.testing.assert_allclose(table.lr[1:], r3["statistic"], rtol=STAT_RTOL)
    np.testing.assert_array_equal(table.df[1:], r3["df"])
    np.testing.assert_allclose(table.pvalue[1:], r3["pvalue"], rtol=STAT_RTOL)
    assert np.isnan(table.lr[0]) and "+ smoke, ht" in str(table)
    assert list(table.to_frame().columns[:2]) == ["loglik", "k"]


def test_lr_and_lm_match_statsmodels_ols(mtcars):
    ref = SM_FX["mtcars_ols"]
    assert_test(jm.lr_test(mtcars["restricted"], mtcars["full"]), ref["lr"], "compare_lr_test")
    # compare_lm_test(demean=False) is the LM test with the expected information of (b, sigma)
    lm = jm.score_test(mtcars["restricted"], cov="expected")
    assert_test(lm, ref["lm_expected"], "compare_lm_test")


def test_score_test_matches_rao_and_statsmodels(bw, spector):
    assert_test(jm.score_test(bw["restricted"]), R_FX["birthwt_logit"]["rao"], "anova Rao")
    ref = SM_FX["spector_logit"]
    restricted = spector["restricted"]
    assert_test(jm.score_test(restricted), ref["score"], "GLM score_test")
    assert_test(jm.score_test(restricted, cov="sandwich"), ref["score_robust"], "_lm_robust")
    np.testing.assert_allclose(
        jm.score_test(restricted, cov="opg").statistic,
        ref["score_opg"]["statistic"],
        rtol=STAT_RTOL,
    )


@pytest.mark.slow  # the default run keeps a cheaper check of this feature
def test_score_test_of_a_separately_written_restricted_model(bw):
    """The restricted model written on its own; theta_tilde embeds its estimate in the full one."""
    small = {k: 0.0 for k in ("const", "lwt", "smoke", "ht")}
    res_r = jm.fit(linear_logit, small, bw["data"])
    theta = {**{k: float(v) for k, v in res_r.params.items()}, "age": 0.0, "ptl": 0.0, "ui": 0.0}
    held = ["age", "ptl", "ui"]  # optional for cov="hessian"; here it shares one compiled program
    lm = jm.score_test(res_r, linear_logit, theta, bw["data"], fixed=held)
    assert_test(lm, R_FX["birthwt_logit"]["rao"], "anova Rao, separate model")
    robust = jm.score_test(res_r, linear_logit, theta, bw["data"], cov="sandwich", fixed=held)
    np.testing.assert_allclose(
        robust.statistic, jm.score_test(bw["restricted"], cov="sandwich").statistic, rtol=1e-6
    )
    assert jm.lr_test(res_r, bw["full"]).df == 3  # a separate model nests by parameter count
    with pytest.raises(ValueError, match="restricted estimate"):
        jm.score_test(res_r, linear_logit, {**theta, "smoke": 0.0}, bw["data"], fixed=held)
    with pytest.raises(ValueError, match="needs to know which parameters"):
        jm.score_test(res_r, linear_logit, theta, bw["data"], cov="sandwich")


# ---------------------------------------------------------------- profile likelihood


@pytest.mark.parametrize(
    ("name", "key", "level"),
    [("smoke", "profile_smoke", 0.95), ("ui", "profile_ui_90", 0.9)],
)
def test_profile_ci_matches_glm_refits(bw, name, key, level):
    ci = jm.profile_ci(bw["full"], name, level)
    np.testing.assert_allclose(ci, R_FX["birthwt_logit"][key], rtol=PROFILE_RTOL)
    assert not (ci.open_lower or ci.open_upper) and ci.note == ""


@pytest.mark.slow  # the default run keeps a cheaper check of this feature
def test_profile_ci_matches_survreg_and_bbmle(mtcars):
    df = pd.read_csv(DATA / "lung.csv")
    data = {
        "X": np.column_stack([np.ones(len(df)), df[["age", "sex", "ph.ecog"]].to_numpy(float)]),
        "t": df["time"].to_numpy(float),
        "d": df["event"].to_numpy(float),
    }
    res = jm.fit(weibull, {"b": jnp.array([5.0, 0.0, 0.0, 0.0]), "log_scale": 0.0}, data)
    ref = R_FX["lung_weibull"]  # (profile_age is in the fixture too; one mask here saves time)
    np.testing.assert_allclose(
        jm.profile_ci(res, "log_scale"), ref["profile_log_scale"], rtol=PROFILE_RTOL
    )
    # bbmle::mle2 on mtcars, the same normal model (b0, b_wt, b_hp, log_sigma)
    full, ref = mtcars["full"], R_FX["mtcars_normal_bbmle"]
    np.testing.assert_allclose(float(full.loglik), ref["loglik"], rtol=1e-10)
    for name, key in [("b[1]", "b_wt"), ("log_sigma", "log_sigma")]:
        ci = jm.profile_ci(full, name)
        np.testing.assert_allclose(ci, ref[f"profile_{key}"], rtol=PROFILE_RTOL)
        np.testing.assert_allclose(ci, ref[f"bbmle_uniroot_{key}"], rtol=BBMLE_DEFAULT_RTOL)
    # closed form for a regression coefficient: RSS(b) = RSS_hat exp(chi2_1 / n) at the bounds, so
    # |b - b_hat| = sqrt(RSS_hat (exp(chi2_1 / n) - 1) [(X'X)^-1]_jj): wider than Wald's 1.96 se
    X = np.column_stack([mtcars["data"]["X"], mtcars["data"]["hp"]])
    y = mtcars["data"]["y"]
    beta, rss = np.linalg.lstsq(X, y, rcond=None)[:2]
    half = math.sqrt(rss[0] * math.expm1(2 * CUT95 / y.size) * np.linalg.inv(X.T @ X)[1, 1])
    ci = jm.profile_ci(full, "b[1]")
    np.testing.assert_allclose(ci, [beta[1] - half, beta[1] + half], rtol=PROFILE_RTOL)
    assert half > 1.96 * float(full.se["b"][1])


def test_profile_that_levels_off_is_open_on_that_side():
    """b -> inf gives the constant-mean model; its lnL is within the cut-off of the maximum."""
    rng = np.random.default_rng(3)
    x = np.repeat(np.arange(1.0, 6.0), 5)
    y = 2.0 * (1.0 - np.exp(-3.0 * x)) + 0.2 * rng.normal(size=x.size)
    res = jm.fit(saturating, {"a": 1.0, "b": 1.0, "log_s": 0.0}, {"x": x, "y": y})
    assert bool(res.converged), res.message
    n = y.size

    def profile_closed_form(b):  # linear in a given b; sigma^2 = RSS / n
        g = 1.0 - np.exp(-b * x)
        a = g @ y / (g @ g)
        return -0.5 * n * (np.log(2 * np.pi * np.mean((y - a * g) ** 2)) + 1.0)

    ll_inf = -0.5 * n * (np.log(2 * np.pi * np.var(y)) + 1.0)  # b = inf: a = mean(y)
    ll_hat = float(res.loglik)
    assert ll_hat - ll_inf < CUT95  # so the upper side is open
    ci = jm.profile_ci(res, "b")
    assert ci.open_upper and ci.upper == math.inf and not ci.open_lower
    assert "levels off" in ci.note and "open above" in repr(ci)
    b_hat = float(res.params["b"])
    lower = brentq(lambda b: profile_closed_form(b) - (ll_hat - CUT95), 1e-3, b_hat, xtol=1e-14)
    np.testing.assert_allclose(ci.lower, lower, rtol=PROFILE_RTOL)


def test_profile_that_leaves_the_parameter_range_is_open_there():
    e = np.random.default_rng(7).normal(size=20)
    y = 1.12 * (e - e.mean()) / e.std()  # sd 1.12: v_hat = 0.12^2, lnL_hat - lnL(0) = 0.28
    res = jm.fit(sqrt_variance, {"mu": 0.0, "v": 0.05}, {"y": y})
    assert bool(res.converged), res.message
    n, ss = y.size, np.sum((y - y.mean()) ** 2)

    def loglik(v):  # mu_hat = mean(y) whatever v
        sd = 1.0 + np.sqrt(v)
        return -n * np.log(sd) - ss / (2 * sd**2) - 0.5 * n * np.log(2 * np.pi)

    ll_hat = float(res.loglik)
    assert ll_hat - loglik(0.0) < CUT95  # lnL at the edge v = 0 is still above the cut-off
    ci = jm.profile_ci(res, "v")
    assert ci.open_lower and ci.lower == -math.inf
    assert "not finite beyond v = " in ci.note
    v_hat = (math.sqrt(ss / n) - 1.0) ** 2
    upper = brentq(lambda v: loglik(v) - (ll_hat - CUT95), v_hat, 10.0, xtol=1e-15)
    np.testing.assert_allclose(ci.upper, upper, rtol=PROFILE_RTOL)


def test_profile_plot_draws_the_profile_and_the_cutoff(bw):
    mpl = pytest.importorskip("matplotlib")
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    full = bw["full"]
    ax = jm.profile_plot(full, "smoke")
    curve, wald = ax.lines[0], ax.lines[1]
    x, y = curve.get_data()
    np.testing.assert_allclose(y, jm.profile_loglik(full, "smoke", x), rtol=1e-10)
    np.testing.assert_allclose(y.max(), float(full.loglik), atol=0.05)  # grid point near the max
    cut = next(line for line in ax.lines if line.get_linestyle() == "--")
    np.testing.assert_allclose(cut.get_ydata()[0], float(full.loglik) - CUT95, rtol=1e-12)
    assert np.all(wald.get_ydata() <= float(full.loglik) + 1e-12)
    plt.close(ax.figure)


# ---------------------------------------------------------------- transforms


def test_transformed_fit_reports_natural_parameters_like_statsmodels():
    """NB2 in alpha itself (statsmodels' parametrisation), optimised in log alpha."""
    df = pd.read_csv(DATA / "quine.csv")
    cols = ["EthN", "SexM", "AgeF1", "AgeF2", "AgeF3", "LrnSL"]
    data = {
        "X": np.column_stack([np.ones(len(df)), df[cols].to_numpy(float)]),
        "y": df["Days"].to_numpy(float),
    }
    res = jm.fit_transformed(
        negbin2, {"b": jnp.zeros(7), "alpha": 1.0}, data, {"alpha": jm.positive()}
    )
    assert bool(res.converged), res.message
    ref = SM_FX["quine_nb2"]
    order = [*range(1, 8), 0]  # ravel order is (alpha, b[0..6]); statsmodels' is (b, alpha)
    np.testing.assert_allclose(res.coef[np.array(order)], ref["params"], rtol=EST_RTOL)
    for kind, key in [("hessian", "cov_hessian"), ("sandwich", "cov_sandwich")]:
        cov = np.asarray(res.covariance(kind))[np.ix_(order, order)]
        np.testing.assert_allclose(np.sqrt(np.diag(cov)), np.sqrt(np.diag(ref[key])), rtol=SE_RTOL)
        np.testing.assert_allclose(cov, ref[key], atol=1e-5 * np.abs(ref[key]).max())
    np.testing.assert_allclose(res.cov, res.covariance("hessian"), rtol=1e-8, atol=1e-14)


@pytest.mark.slow  # the default run keeps a cheaper check of this feature
def test_transforms_closed_forms_and_profile_on_the_natural_scale(rng):
    y = (rng.random(60) < 0.3).astype(float)
    res = jm.fit_transformed(bernoulli, {"p": 0.5}, {"y": y}, {"p": jm.interval(0.0, 1.0)})
    n, p = y.size, y.mean()
    np.testing.assert_allclose(res.params["p"], p, rtol=EST_RTOL)
    np.testing.assert_allclose(res.se["p"], math.sqrt(p * (1 - p) / n), rtol=SE_RTOL)

    def loglik(q):
        return n * (p * math.log(q) + (1 - p) * math.log(1 - q))

    target = loglik(p) - CUT95
    ci = jm.profile_ci(res, "p")  # profiled in logit(p), reported in p: invariant
    lower, upper = (brentq(lambda q: loglik(q) - target, *ab) for ab in ((1e-9, p), (p, 1 - 1e-9)))
    np.testing.assert_allclose(ci, (lower, upper), rtol=PROFILE_RTOL)

    z = rng.normal(3.0, 2.0, size=80)
    res = jm.fit_transformed(
        normal_natural, {"mu": 0.0, "sigma": 1.0}, {"y": z}, {"sigma": jm.positive()}
    )
    s = z.std()
    np.testing.assert_allclose(
        [res.params["mu"], res.params["sigma"]], [z.mean(), s], rtol=EST_RTOL
    )
    np.testing.assert_allclose(
        [res.se["mu"], res.se["sigma"]], [s / math.sqrt(80), s / math.sqrt(160)], rtol=SE_RTOL
    )
    # a Wald test on the natural scale: sigma = 2
    np.testing.assert_allclose(
        jm.wald_test(res, "sigma = 2").statistic,
        ((s - 2) / (s / math.sqrt(160))) ** 2,
        rtol=STAT_RTOL,
    )


def test_transform_rejects_infeasible_values():
    y = np.array([0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"init\['p'\] = 1.5 is outside the range \(0, 1\)"):
        jm.fit_transformed(bernoulli, {"p": 1.5}, {"y": y}, {"p": jm.interval(0, 1)})
    with pytest.raises(ValueError, match=r"fixed\['sigma'\].*outside the range \(0, inf\)"):
        jm.fit_transformed(
            normal_natural,
            {"mu": 0.0, "sigma": 1.0},
            {"y": y},
            {"sigma": jm.positive()},
            fixed={"sigma": 0.0},
        )
    with pytest.raises(KeyError, match="not keys of init"):
        jm.fit_transformed(bernoulli, {"p": 0.5}, {"y": y}, {"q": jm.positive()})
    with pytest.raises(ValueError, match="lower < upper"):
        jm.interval(1.0, 0.0)


# ---------------------------------------------------------------- bad input


def test_restriction_errors_name_what_is_wrong(bw):
    full = bw["full"]
    with pytest.raises(KeyError, match=r"unknown parameter 'smok'.*did you mean 'smoke'"):
        jm.wald_test(full, "smok = 0")
    with pytest.raises(ValueError, match=r"rank-deficient.*'smoke - ht \+ ptl - ui = 0'"):
        jm.wald_test(full, "smoke = ht, ptl = ui, smoke - ht + ptl - ui = 0, ptl - ui = 0")
    with pytest.raises(ValueError, match="inconsistent"):
        jm.wald_test(full, "smoke = 0, 2*smoke = 1")
    with pytest.raises(ValueError, match="must be linear"):
        jm.wald_test(full, "smoke * ht = 0")
    with pytest.raises(ValueError, match="involves no parameter"):
        jm.wald_test(full, "smoke - smoke = 1")
    with pytest.raises(ValueError, match=r"R must be \(q, 7\)"):
        jm.wald_test(full, np.ones((2, 3)))
    with pytest.raises(ValueError, match="held fixed"):
        jm.wald_test(bw["restricted"], "age = 0")
    with pytest.raises(ValueError, match="rank 1 < 2"):
        jm.wald_test(full, lambda p: jnp.stack([p["smoke"], 2 * p["smoke"]]))
    with pytest.raises(ValueError, match="unknown cov"):
        jm.wald_test(full, "smoke = 0", cov="robust")


def test_lr_and_score_refuse_what_cannot_be_tested(bw, spector):
    with pytest.raises(ValueError, match="did you swap them"):
        jm.lr_test(bw["full"], bw["restricted"])
    with pytest.raises(ValueError, match=r"different data: N = 32 \(restricted\) vs 189"):
        jm.lr_test(spector["restricted"], bw["full"])
    other = {**bw["data"], "low": bw["data"]["low"][::-1].copy()}  # same shapes: no recompile
    res_other = jm.fit(linear_logit, bw["init"], other)
    with pytest.raises(ValueError, match=r"on different data \(data\['low'\]"):
        jm.lr_test(bw["restricted"], res_other)
    with pytest.raises(ValueError, match="holds no parameter fixed"):
        jm.score_test(bw["full"])
    with pytest.raises(ValueError, match="needs the model's expected information"):
        jm.score_test(bw["restricted"], cov="expected")
    with pytest.raises(KeyError, match="no parameter 'b\\[9\\]'"):
        jm.profile_ci(bw["full"], "b[9]")
    with pytest.raises(ValueError, match="held fixed in this fit"):
        jm.profile_ci(bw["restricted"], "age")


# ---------------------------------------------------------------- jit, vmap and batches


def test_tests_on_a_batch_equal_tests_one_by_one_and_under_jit(bw, spector):
    fits = [bw["restricted"], bw["full"]]
    # stacked on the host (numpy keeps float64; jnp.stack with 64-bit off would round to float32)
    stacked = [jax.tree.map(lambda *x: np.stack(x), f, f) for f in fits]
    one = jm.lr_test(*fits)
    batch = jm.lr_test(*stacked)
    assert batch.statistic.shape == (2,)
    np.testing.assert_allclose(batch.statistic, float(one.statistic), rtol=1e-12)
    w = jm.wald_test(stacked[1], "smoke = ht")
    np.testing.assert_allclose(w.pvalue, jm.wald_test(bw["full"], "smoke = ht").pvalue, rtol=1e-12)
    d = jm.delta_method(stacked[1], lambda p: p["smoke"] / p["ht"])
    assert d.cov.shape == (2, 1, 1)
    lm = jm.score_test(stacked[0])
    np.testing.assert_allclose(lm.statistic, jm.score_test(bw["restricted"]).statistic, rtol=1e-12)
    # jit converts float64 inputs to float32 when JAX's 64-bit flag is off: a float64 test under
    # the user's own jit needs the flag on (with it off the test runs, in float32)
    with jax.enable_x64(True):
        jitted = jax.jit(lambda r: jm.wald_test(r, "b[1] = g[0]", cov="sandwich"))(spector["full"])
    eager = jm.wald_test(spector["full"], "b[1] = g[0]", cov="sandwich")
    np.testing.assert_allclose(jitted.statistic, eager.statistic, rtol=1e-12)
    with pytest.raises(ValueError, match="jit/vmap"):
        jm.profile_ci(stacked[1], "smoke")


N_SIM, N_SMALL, REPS, REPS_AGREE = 800, 100, 2000, 400


def _replication(key, n_used):
    """One data set under H0: g = 0 (logit, 3 + 2 coefficients); the first n_used rows count."""
    kx, kz, ky = jax.random.split(key, 3)
    x = jnp.column_stack([jnp.ones(N_SIM), jax.random.normal(kx, (N_SIM, 2))])
    z = jax.random.normal(kz, (N_SIM, 2))
    y = jax.random.bernoulli(ky, jax.nn.sigmoid(x @ jnp.array([0.3, 0.5, -0.5]))).astype(float)
    data = {"x": x, "y": y, "z": z}
    w = (jnp.arange(N_SIM) < n_used).astype(float)
    init = {"b": jnp.zeros(3), "g": jnp.zeros(2)}
    full = jm.fit(sim_logit, init, data, weights=w)
    restricted = jm.fit(sim_logit, init, data, weights=w, fixed={"g": jnp.zeros(2)})
    tests = {
        "wald": jm.wald_test(full, "g[0] = 0, g[1] = 0"),
        "lr": jm.lr_test(restricted, full),
        "score": jm.score_test(restricted),
        "wald_robust": jm.wald_test(full, "g[0], g[1]", cov="sandwich"),
        "score_robust": jm.score_test(restricted, cov="sandwich"),
    }
    ok = full.converged & restricted.converged
    return {k: t.statistic for k, t in tests.items()}, {k: t.pvalue for k, t in tests.items()}, ok


@pytest.mark.slow  # the default run keeps a cheaper check of this feature
def test_classical_tests_have_nominal_size_and_agree_asymptotically():
    """2,000 replications under H0 in one compiled call: each test rejects 5% +- 1.5% (3 Monte
    Carlo s.e.), and W - LR, LM - LR shrink like n^-1/2 (n = 100 vs 800)."""
    keys = jax.random.split(jax.random.key(2026), REPS)
    n_used = jnp.concatenate([jnp.full(REPS, N_SIM), jnp.full(REPS_AGREE, N_SMALL)])
    lanes = jnp.concatenate([keys, keys[:REPS_AGREE]])
    stats, pvalues, ok = jax.jit(jax.vmap(_replication))(lanes, n_used)
    ok = np.asarray(ok)
    assert ok[:REPS].mean() > 0.995 and ok[REPS:].mean() > 0.98  # n = 100 may separate, rarely
    for name, p in pvalues.items():
        rate = float(np.mean(np.asarray(p)[:REPS][ok[:REPS]] < 0.05))
        assert 0.035 <= rate <= 0.065, f"{name}: rejection rate {rate:.4f} at n = {N_SIM}"
    big = np.flatnonzero(ok[:REPS_AGREE])
    small = np.flatnonzero(ok[REPS:]) + REPS
    lr = np.asarray(stats["lr"])
    for name in ("wald", "score"):
        s = np.asarray(stats[name])
        gap_big = np.median(np.abs(s[big] - lr[big]))
        gap_small = np.median(np.abs(s[small] - lr[small]))
        assert gap_big < gap_small / 2, f"{name}: |{name} - LR| {gap_big:.3g} vs {gap_small:.3g}"
        assert np.corrcoef(s[big], lr[big])[0, 1] > 0.99
