"""jm.fit_mixed against glmmTMB (TMB: Laplace with exact AD derivatives), lme4 and statsmodels MixedLM
on data R ships: Laplace and adaptive quadrature (cbpp, grouseticks), crossed factors (Penicillin,
grouseticks with three factors), a random slope (sleepstudy), boundary fits (a zero variance, a
correlation of +1), ranef, the covariance kinds from per-group scores, and bad input.

References (tests/reference/mixed/make_mixed_fixtures.R, make_ranef_fixture.R,
make_statsmodels_mixedlm.py): glmmTMB's fit polished by Newton steps on TMB's exact gradient, its
covariance the inverse of that gradient's Jacobian mapped to our parameters by the delta method: an
exact-Hessian reference for the standard errors. lme4's glmer reports standard errors from a
finite-difference Hessian of its deviance (`vcov(m)`, `use.hessian = TRUE`), so they are compared
with a tolerance that says so. lme4's adaptive quadrature (nAGQ > 1) has no glmmTMB twin: its
fixtures are lme4's tight fits, polished by Newton on lme4's own deviance function.
"""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import mixed_models as mm
import numpy as np
import pytest

import jaxmle as jm
from jaxmle._mixed import _mixed_compiled

REF = Path(__file__).parent / "reference" / "mixed"
# glmmTMB polished to its exact-gradient optimum agrees with us to ~1e-11 (estimates) and ~1e-8
# (SEs); these leave room for platform rounding, not for a wrong integral.
EST_RTOL = 1e-6
SE_RTOL = 1e-5
LOGLIK_ATOL = 1e-6
# lme4's Laplace for the Poisson GLMM sits 5.7e-6 lnL units and ~4e-6 (relative) from glmmTMB's
# and ours (which agree to 1e-10): lme4's PIRLS stops at its own tolerance.
LME4_POISSON_RTOL = 2e-5
# glmer's SEs: a finite-difference Hessian of its deviance (lme4 `deriv12`) at its optimum; refitted
# with tight tolerances they agree with the exact ones to 1.2e-6 (cbpp) and 4.3e-5 (grouseticks)
GLMER_SE_RTOL = 1e-4


def fixture(name):
    with open(REF / f"{name}.json") as f:
        return json.load(f)


def flat(res, keys):
    """res's estimates in the order of `keys` (the fixtures' order)."""
    return np.concatenate([np.ravel(np.asarray(res.params[k])) for k in keys])


def order(res, keys):
    """Indices into res.coef / res.cov of the parameters in the order of `keys`."""
    idx = []
    for k in keys:
        idx += [i for i, n in enumerate(res.names) if n == k or n.startswith(k + "[")]
    return np.array(idx)


def check_tmb(res, ref, keys):
    """Estimates, lnL and the full covariance against a polished glmmTMB fixture."""
    assert bool(res.converged), res.message
    np.testing.assert_allclose(flat(res, keys), ref["params"], rtol=EST_RTOL)
    assert abs(float(res.loglik) - ref["loglik"]) < LOGLIK_ATOL
    ix = order(res, keys)
    cov = np.asarray(res.cov)[np.ix_(ix, ix)]
    se_ref = np.sqrt(np.diagonal(ref["cov"]))
    np.testing.assert_allclose(np.sqrt(np.diagonal(cov)), se_ref, rtol=SE_RTOL)
    # off-diagonals on the correlation scale (a near-zero covariance has no relative accuracy)
    np.testing.assert_allclose(
        cov / np.outer(se_ref, se_ref), np.asarray(ref["cov"]) / np.outer(se_ref, se_ref),
        atol=SE_RTOL,
    )  # fmt: skip


GLMM_KEYS = ("beta", "sigma")


@pytest.fixture(scope="module")
def cbpp():
    data, herd, init = mm.cbpp()
    res = jm.fit_mixed(
        mm.binomial_logit, mm.std_normal, init, 0.0, data, herd, lower={"sigma": 0.0}
    )
    return data, herd, init, res


# ------------------------------------------------------------------- Laplace, one factor (cbpp)


def test_cbpp_laplace_matches_glmmtmb(cbpp):
    *_, res = cbpp
    check_tmb(res, fixture("mixed_cbpp"), GLMM_KEYS)
    assert res.n_groups == {"group": 15}


def test_cbpp_laplace_matches_lme4(cbpp):
    *_, res = cbpp
    ref = fixture("mixed_cbpp")
    pol = ref["polished"]["laplace"]
    np.testing.assert_allclose(flat(res, GLMM_KEYS), pol["beta"] + [pol["theta"]], rtol=EST_RTOL)
    assert abs(float(res.loglik) - pol["loglik"]) < LOGLIK_ATOL
    # glmer with its default optimiser stops 2.8e-4 lnL units short of the maximum
    assert float(res.loglik) > ref["lme4"]["default"]["loglik"] + 1e-4
    # glmer's SEs come from a finite-difference Hessian: close to the exact ones at a tight fit
    # (at its default settings they differ by up to 1.3%: the Hessian is taken where bobyqa stopped)
    se = np.sqrt(np.diagonal(np.asarray(res.cov)))[:4]
    np.testing.assert_allclose(se, ref["lme4"]["bobyqa"]["se_beta"], rtol=GLMER_SE_RTOL)


def test_cbpp_ranef_matches_lme4(cbpp):
    *_, res = cbpp
    ref = fixture("mixed_cbpp_ranef")
    mode, sd = res.ranef(condvar=True)["group"]
    sigma = float(res.params["sigma"])  # lme4's b = sigma u; our effects are u
    assert list(res.group_labels["group"]) == ref["herd"]
    np.testing.assert_allclose(sigma * mode, ref["mode"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(sigma * sd, ref["condsd"], rtol=1e-5)
    assert np.all(np.asarray(res.re_found["group"]))


def test_covariance_kinds_from_group_scores(cbpp):
    *_, res = cbpp
    s = np.asarray(res.score_groups)
    assert s.shape == (15, 5)
    np.testing.assert_allclose(s.sum(0), np.asarray(res.score), atol=1e-8)
    a_inv = np.asarray(res.cov)
    np.testing.assert_allclose(res.covariance("opg"), np.linalg.inv(s.T @ s), rtol=1e-8)
    np.testing.assert_allclose(res.covariance("sandwich"), a_inv @ s.T @ s @ a_inv, rtol=1e-8)
    np.testing.assert_allclose(
        res.covariance("cluster"), np.asarray(res.covariance("sandwich")) * 15 / 14, rtol=1e-12
    )


def test_summary_and_inference(cbpp):
    *_, res = cbpp
    text = res.summary()
    assert "Laplace" in text and "group 15" in text and "sigma" in text
    w = jm.wald_test(res, "beta[1] = beta[2]")
    assert np.isfinite(float(w.statistic))
    d = jm.delta_method(res, lambda p: p["sigma"] ** 2)
    np.testing.assert_allclose(float(d.se), 2 * float(res.params["sigma"]) * float(res.se["sigma"]))


def test_same_shape_new_data_does_not_retrace(cbpp):
    data, herd, init, res = cbpp
    before = _mixed_compiled._cache_size()
    y = np.minimum(data["y"] + 1, data["n"])
    again = jm.fit_mixed(
        mm.binomial_logit, mm.std_normal, init, 0.0, {**data, "y": y}, herd, lower={"sigma": 0.0}
    )
    assert _mixed_compiled._cache_size() == before
    assert bool(again.converged) and float(again.params["beta"][0]) > float(res.params["beta"][0])


# ------------------------------------------------------------------- adaptive Gauss-Hermite


@pytest.mark.slow  # the default run keeps a cheaper check of this feature
def test_cbpp_agq10_matches_lme4():
    data, herd, init = mm.cbpp()
    res = jm.fit_mixed(
        mm.binomial_logit, mm.std_normal, init, 0.0, data, herd, n_quad=10, lower={"sigma": 0.0}
    )
    pol = fixture("mixed_cbpp")["polished"]["agq10"]
    assert bool(res.converged)
    np.testing.assert_allclose(flat(res, GLMM_KEYS), pol["beta"] + [pol["theta"]], rtol=EST_RTOL)
    # lme4's nAGQ deviance drops the saturated lnL; the fixture adds it back
    assert abs(float(res.loglik) - pol["loglik"]) < LOGLIK_ATOL
    assert "adaptive Gauss-Hermite, 10 points" in res.summary()


# ------------------------------------------------------------------- crossed factors (LMM)

PEN_KEYS = ("beta", "sigma", "sd")


@pytest.mark.slow  # the default run keeps a cheaper check of this feature
def test_penicillin_crossed_matches_glmmtmb_and_lme4():
    data, groups, init = mm.penicillin()
    res = jm.fit_mixed(
        mm.normal_crossed, {"plate": mm.std_normal, "sample": mm.std_normal}, init,
        {"plate": 0.0, "sample": 0.0}, data, groups, lower={"sigma": 0.0, "sd": 0.0},
    )  # fmt: skip
    ref = fixture("mixed_penicillin")
    check_tmb(res, ref, PEN_KEYS)
    assert res.n_groups == {"plate": 24, "sample": 6}
    # lme4's theta = sd / sigma; its two optimisers agree to 6 digits
    lme = ref["lme4"]["bobyqa"]
    sd = np.asarray(res.params["sd"]) / float(res.params["sigma"])
    np.testing.assert_allclose(sd, lme["theta"], rtol=1e-5)
    assert abs(float(res.loglik) - lme["loglik"]) < LOGLIK_ATOL
    # crossed factors couple the groups: no per-group scores, hessian only
    with pytest.raises(ValueError, match="independent"):
        res.covariance("sandwich")


# ------------------------------------------------------------------- boundary


@pytest.mark.slow  # the default run keeps a cheaper check of this feature
def test_zero_variance_boundary_is_the_glm():
    """infert by matched set: glmer's fit is singular (sigma = 0), so the GLMM's maximum is the
    logistic GLM's: beta, lnL and beta's covariance (conditional on sigma = 0) equal R glm's."""
    data, stratum, init = mm.infert()
    res = jm.fit_mixed(
        mm.binomial_logit, mm.std_normal, init, 0.0, data, stratum, lower={"sigma": 0.0}
    )
    ref = fixture("mixed_infert_boundary")
    assert ref["singular"] and ref["lme4"]["theta"] == 0
    assert int(res.status) == int(jm.Status.BOUNDARY) and bool(res.converged)
    assert float(res.params["sigma"]) == 0.0
    assert list(np.asarray(res.at_bound)) == [False, False, False, True]
    np.testing.assert_allclose(np.asarray(res.params["beta"]), ref["params"], rtol=EST_RTOL)
    assert abs(float(res.loglik) - ref["loglik"]) < LOGLIK_ATOL
    np.testing.assert_allclose(np.asarray(res.cov)[:3, :3], ref["cov"], rtol=SE_RTOL)
    assert np.isnan(float(res.se["sigma"]))
    assert "on its bound" in res.summary() and "singular" in res.message


# ------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def small():
    data, herd, init = mm.cbpp()
    return data, herd, init


def test_bad_labels_and_group_counts(small):
    data, herd, init = small
    fit = jm.fit_mixed
    args = (mm.binomial_logit, mm.std_normal, init, 0.0, data)
    with pytest.raises(ValueError, match="NaN or inf labels"):
        bad = herd.astype(float)
        bad[3] = np.nan
        fit(*args, bad)
    with pytest.raises(ValueError, match=r"shape \(N,\)"):
        fit(*args, herd[:-1])
    with pytest.raises(ValueError, match=r"n_groups=14 .* 15 distinct labels"):
        fit(*args, herd, n_groups=14)
    with pytest.raises(ValueError, match="one level"):
        fit(*args, np.zeros(len(herd)))
    with pytest.raises(ValueError, match=r"integer codes 0\.\.G-1 and n_groups=G"):
        jax.jit(lambda g: fit(*args, g).coef)(jnp.asarray(herd - 1))


def test_bad_re_init_and_options(small):
    data, herd, init = small
    fit = jm.fit_mixed
    crossed = {"a": herd, "b": herd % 3}
    with pytest.raises(ValueError, match="re_init must be a dict with the same keys"):
        fit(mm.binomial_logit, {"a": mm.std_normal, "b": mm.std_normal}, init, 0.0, data, crossed)
    with pytest.raises(ValueError, match="re_logpdf must be a dict with the same keys"):
        fit(mm.binomial_logit, {"a": mm.std_normal}, init, {"a": 0.0, "b": 0.0}, data, crossed)
    with pytest.raises(TypeError, match="re_logpdf must be one function"):
        fit(mm.binomial_logit, {"a": mm.std_normal}, init, 0.0, data, herd)
    with pytest.raises(ValueError, match="no random effects"):
        fit(mm.binomial_logit, mm.std_normal, init, {}, data, herd)
    with pytest.raises(ValueError, match="must return a scalar for ONE row"):
        fit(lambda t, u, o: jnp.zeros(2) * u, mm.std_normal, init, 0.0, data, herd)
    with pytest.raises(ValueError, match="must return a scalar for one group's effects"):
        fit(mm.binomial_logit, lambda t, u: jnp.atleast_1d(u), init, 0.0, data, herd)
    with pytest.raises(ValueError, match="quadrature points per group"):
        fit(mm.binomial_logit, mm.std_normal, init, np.zeros(5), data, herd, n_quad=8)
    with pytest.raises(ValueError, match=r"n_quad > 1.* one grouping factor"):
        fit(mm.binomial_logit, {"a": mm.std_normal, "b": mm.std_normal}, init,
            {"a": 0.0, "b": 0.0}, data, crossed, n_quad=3)  # fmt: skip
    with pytest.raises(ValueError, match="n_quad must be a positive int"):
        fit(mm.binomial_logit, mm.std_normal, init, 0.0, data, herd, n_quad=0)
    with pytest.raises(ValueError, match="independent groups"):
        fit(mm.binomial_logit, {"a": mm.std_normal, "b": mm.std_normal}, init,
            {"a": 0.0, "b": 0.0}, data, crossed, method="bhhh")  # fmt: skip
    with pytest.raises(KeyError, match="not keys of init"):
        fit(mm.binomial_logit, mm.std_normal, init, 0.0, data, herd, lower={"tau": 0.0})
    with pytest.raises(ValueError, match="outside its bounds for sigma"):
        fit(mm.binomial_logit, mm.std_normal, {**init, "sigma": -1.0}, 0.0, data, herd,
            lower={"sigma": 0.0})  # fmt: skip
    with pytest.raises(ValueError, match="newton' or 'bhhh'"):
        fit(mm.binomial_logit, mm.std_normal, init, 0.0, data, herd, method="bfgs")


# ------------------------------------------------------------------- slow: the other references


@pytest.mark.slow
def test_grouseticks_poisson_laplace_and_agq():
    data, groups = mm.grouseticks()
    init = {"beta": np.zeros(4), "sigma": 1.0}
    ref = fixture("mixed_grouseticks")
    res = jm.fit_mixed(
        mm.poisson_log, mm.std_normal, init, 0.0, data, groups["brood"], lower={"sigma": 0.0}
    )
    check_tmb(res, ref, GLMM_KEYS)
    se = np.sqrt(np.diagonal(np.asarray(res.cov)))[:4]
    np.testing.assert_allclose(se, ref["lme4"]["bobyqa"]["se_beta"], rtol=GLMER_SE_RTOL)
    pol = ref["polished"]["laplace"]
    np.testing.assert_allclose(
        flat(res, GLMM_KEYS), pol["beta"] + [pol["theta"]], rtol=LME4_POISSON_RTOL
    )
    agq = jm.fit_mixed(
        mm.poisson_log, mm.std_normal, init, 0.0, data, groups["brood"], n_quad=10,
        lower={"sigma": 0.0},
    )  # fmt: skip
    pol = ref["polished"]["agq10"]
    np.testing.assert_allclose(
        flat(agq, GLMM_KEYS), pol["beta"] + [pol["theta"]], rtol=LME4_POISSON_RTOL
    )
    assert abs(float(agq.loglik) - pol["loglik"]) < 1e-4


@pytest.mark.slow
def test_grouseticks_three_factors_match_glmmtmb():
    """brood within location, plus an observation-level effect (index: as many levels as rows,
    which a Poisson GLMM identifies, unlike a Gaussian one)."""
    data, groups = mm.grouseticks()
    res = jm.fit_mixed(
        mm.poisson_crossed, dict.fromkeys(groups, mm.std_normal),
        {"beta": np.zeros(4), "sd": np.full(3, 0.5)}, dict.fromkeys(groups, 0.0), data, groups,
        lower={"sd": 0.0},
    )  # fmt: skip
    check_tmb(res, fixture("mixed_grouseticks3"), ("beta", "sd"))


SLOPE_KEYS = ("beta", "sigma", "L")


@pytest.mark.slow
def test_sleepstudy_random_slope_matches_glmmtmb_lme4_statsmodels():
    data, subject, init = mm.sleepstudy()
    res = jm.fit_mixed(
        mm.normal_slope, mm.std_normal, init, np.zeros(2), data, subject, lower=mm.SLOPE_LOWER
    )
    ref = fixture("mixed_sleepstudy")
    check_tmb(res, ref, SLOPE_KEYS)
    assert abs(float(res.loglik) - ref["lme4"]["bobyqa"]["loglik"]) < LOGLIK_ATOL
    sm = fixture("sm_mixedlm_sleepstudy")
    np.testing.assert_allclose(flat(res, ("beta",)), sm["params"]["beta"], rtol=EST_RTOL)
    # MixedLM's L-BFGS stops where lnL is flat to 1.5e-10: its covariance entry L[1] sits 4.7e-5
    # (relative) from glmmTMB's and ours, which agree to 1e-8
    np.testing.assert_allclose(flat(res, ("sigma", "L")),
                               [sm["params"]["sigma"], *sm["params"]["L"]], rtol=1e-4)  # fmt: skip
    assert abs(float(res.loglik) - sm["loglik"]) < LOGLIK_ATOL


@pytest.mark.slow
def test_correlation_boundary_reaches_plus_one():
    """b1 = 0.4 b0 exactly: lme4's ML fit is singular with theta_3 = 0 (correlation +1)."""
    data, g, init = mm.corr_boundary()
    res = jm.fit_mixed(
        mm.normal_slope, mm.std_normal, init, np.zeros(2), data, g, lower=mm.SLOPE_LOWER
    )
    ref = fixture("mixed_corr_boundary")
    assert ref["lme4"]["bobyqa"]["singular"]
    assert int(res.status) == int(jm.Status.BOUNDARY)
    assert float(res.params["L"][2]) == 0.0 and list(np.asarray(res.at_bound)).count(True) == 1
    np.testing.assert_allclose(flat(res, SLOPE_KEYS)[:5], ref["params"][:5], rtol=1e-5)
    assert float(res.loglik) >= ref["loglik"] - 1e-9


@pytest.mark.slow
def test_vmap_lr_and_profile(cbpp, x64):
    data, herd, init, res = cbpp
    codes = jnp.asarray(herd - 1)

    def one(y):
        return jm.fit_mixed(mm.binomial_logit, mm.std_normal, init, 0.0, {**data, "y": y},
                            codes, n_groups=15, lower={"sigma": 0.0})  # fmt: skip

    ys = np.stack([data["y"], np.minimum(data["y"] + 1, data["n"])])
    batch = jax.jit(jax.vmap(one))(ys)
    assert batch.batch_shape == (2,)
    np.testing.assert_allclose(batch[0].coef, res.coef, rtol=1e-8)
    # LR against the model without the random effect (sigma fixed at 0): a boundary null, whose
    # p-value is half the chi2(1) one (Self & Liang 1987)
    held = jm.fit_mixed(mm.binomial_logit, mm.std_normal, {**init, "sigma": 0.0}, 0.0, data, herd,
                        fixed={"sigma": 0.0}, lower={"sigma": 0.0})  # fmt: skip
    lr = jm.lr_test(held, res)
    assert lr.df == 1 and float(lr.statistic) > 3.84
    ci = jm.profile_ci(res, "sigma")
    assert ci[0] < float(res.params["sigma"]) < ci[1]
