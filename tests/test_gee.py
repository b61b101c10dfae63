"""jaxmle.gee against geepack (tests/reference/gee/geepack_*.json: ohio, dietox, respiratory, epil,
seizure; every corstr) and statsmodels GEE (sm_*.json), its invariants (row order, buckets, chunks),
its result (covariance kinds, pytree, inference) and bad input.

Fixtures listed in FAST run by default; the rest (every other structure, family, weights, offsets,
gaps) are marked slow, since each data set and structure compiles its own program.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

import jaxmle as jm
import jaxmle._clusters as clusters

REFERENCE = Path(__file__).parent / "reference" / "gee"

# geepack's fixed point at epsilon 1e-12 and ours at tol 1e-10 (relative change) agree to ~1e-10;
# the tolerances: estimates ~1e-6 relative (with a floor of 1e-7 standard errors for
# near-zero coefficients), standard errors ~1e-5
PARAM_RTOL, PARAM_ATOL_SE = 1e-6, 1e-7
SE_RTOL = 1e-5
# alpha is a correlation (|alpha| < 1): absolute; the scale and QIC relative
ALPHA_ATOL, SCALE_RTOL, QIC_RTOL = 1e-6, 1e-6, 1e-6
# whole covariance matrices, relative to their largest entry
COV_TOL = 1e-5

# one compiled program per data set and structure (~5 s each on an idle core): the default run
# covers the exchangeable structure (every covariance kind, alpha, scale, and QIC, whose refit is an
# independence GEE); every other structure, family, weights, offsets and gaps run under `slow`
FAST = ["ohio_exchangeable"]
ALL = sorted(p.stem.removeprefix("geepack_") for p in REFERENCE.glob("geepack_*.json"))
SLOW = [n for n in ALL if n not in FAST]
FACTORS = {"Cu": "Cu", "trt": "trt", "treat": "treat", "sex": "sex"}  # character columns in R


@functools.cache
def fixture(name):
    fx = json.loads((REFERENCE / f"geepack_{name}.json").read_text())
    return fx, pd.read_csv(REFERENCE / fx["dataset"])


def jaxmle_formula(fx, df):
    """R's formula with character columns as C(v) and offset(log(t)) as an offset array."""
    formula, offset = fx["formula"], None
    if "offset(log(t))" in formula:
        formula, offset = formula.replace("offset(log(t)) + ", ""), np.log(df["t"].to_numpy())
    for v in FACTORS:
        if v in df.columns and not pd.api.types.is_numeric_dtype(df[v]):
            formula = re.sub(rf"\b{v}\b", f"C({v})", formula)
    return formula, offset


def r_name(name, df):
    """jaxmle's name of an R coefficient: (Intercept) -> Intercept, CuCu035 -> C(Cu)[T.Cu035]."""
    parts = []
    for part in name.split(":"):
        if part == "(Intercept)":
            part = "Intercept"
        for v in FACTORS:
            if (
                v in df.columns
                and not pd.api.types.is_numeric_dtype(df[v])
                and part.startswith(v)
                and part != v
            ):
                part = f"C({v})[T.{part[len(v) :]}]"
        parts.append(part)
    return ":".join(parts)


@functools.cache
def fitted(name, **options):
    fx, df = fixture(name)
    formula, offset = jaxmle_formula(fx, df)
    return jm.gee(
        formula, df, family=fx["family"].lower(), link=fx["link"], groups=fx["id"],
        corstr=fx["corstr"], time=fx["time"], weights=fx["weights"], offset=offset, **options,
    )  # fmt: skip


def ordered(res, fx, df):
    """Indices of R's coefficients in jaxmle's order."""
    names = [r_name(n, df) for n in fx["coef_names"]]
    assert sorted(names) == sorted(res.names), (names, res.names)
    return [res.names.index(n) for n in names]


def assert_cov(got, want, what):
    got, want = np.asarray(got), np.asarray(want)
    err = np.max(np.abs(got - want)) / np.max(np.abs(want))
    assert err < COV_TOL, f"{what}: max difference {err:.2e} of the largest entry"


def check_against_geepack(name):
    fx, df = fixture(name)
    res = fitted(name)
    assert int(res.status) == jm.Status.SUCCESSFUL, res.message
    assert res.cov_type == "robust"
    idx = ordered(res, fx, df)
    beta = np.asarray(list(res.params.values()))[idx]
    se = np.asarray(list(res.se.values()))[idx]
    want_se = np.asarray(fx["se"])
    want_beta = np.asarray(fx["beta"])
    err = np.abs(beta - want_beta) / (PARAM_RTOL * np.abs(want_beta) + PARAM_ATOL_SE * want_se)
    assert np.all(err <= 1.0), f"coefficients differ from geepack: {beta} vs {want_beta}"
    np.testing.assert_allclose(se, want_se, rtol=SE_RTOL)
    np.testing.assert_allclose(
        np.atleast_1d(res.alpha), np.atleast_1d(fx["alpha"]), atol=ALPHA_ATOL
    )
    np.testing.assert_allclose(float(res.scale), fx["gamma"], rtol=SCALE_RTOL)
    sub = np.ix_(idx, idx)
    assert_cov(res.cov[sub], fx["vbeta"], "robust (vbeta)")
    assert_cov(res.covariance("naive")[sub], fx["vbeta_naiv"], "naive (vbeta.naiv)")
    assert_cov(res.covariance("bias_reduced")[sub], fx["bias_reduced"], "bias_reduced")
    qic = res.qic()
    want = fx["qic"]
    if fx["family"] == "Gamma":  # geepack's Gamma quasi-likelihood has a misplaced parenthesis
        np.testing.assert_allclose(qic["Quasi Lik"], fx["quasi_gamma_correct"], rtol=QIC_RTOL)
        np.testing.assert_allclose(qic["CIC"], want["CIC"], rtol=QIC_RTOL)
    else:
        for key in ("QIC", "QICu", "Quasi Lik", "CIC", "params", "QICC"):
            np.testing.assert_allclose(qic[key], want[key], rtol=QIC_RTOL, err_msg=key)
    assert int(res.n_clusters) == fx["n_clusters"] and int(res.n_obs) == fx["n_obs"]


@pytest.mark.parametrize("name", FAST)
def test_geepack(name):
    check_against_geepack(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_geepack_slow(name):
    check_against_geepack(name)


def test_fixtures_are_consistent():
    """The fixture script's own checks: its direct algebra reproduces geepack's vbeta and
    vbeta.naiv, its R iteration reproduces geepack's estimates, and geepack converged."""
    for name in ALL:
        fx, _ = fixture(name)
        assert fx["error"] == 0, name
        assert fx["robust_check"] < 1e-12 and fx["naive_check"] < 1e-12, name
        if fx.get("direct_check") is not None:
            assert fx["direct_check"] < 1e-10, name


# ---------------------------------------------------------------- statsmodels


@pytest.mark.parametrize(
    ("name", "kinds"),
    [
        ("ohio_exchangeable", ("robust", "bias_reduced")),
        pytest.param("epil_exchangeable", ("robust", "bias_reduced"), marks=pytest.mark.slow),
        pytest.param("ohio_gaps_exchangeable", ("robust", "bias_reduced"), marks=pytest.mark.slow),
        pytest.param(
            "dietox_exchangeable", ("robust", "bias_reduced", "naive"), marks=pytest.mark.slow
        ),
    ],
)
def test_statsmodels(name, kinds):
    """statsmodels GEE with ddof_scale=0 has geepack's exchangeable fixed point; its naive
    covariance is comparable only where it estimates the scale (gaussian)."""
    sm = json.loads((REFERENCE / f"sm_{name}.json").read_text())
    res = fitted(name)
    idx = [res.names.index(n) for n in sm["coef_names"]]
    beta = np.asarray(list(res.params.values()))[idx]
    np.testing.assert_allclose(beta, sm["params"], rtol=PARAM_RTOL)
    np.testing.assert_allclose(float(res.alpha[0]), sm["dep_params"], atol=ALPHA_ATOL)
    for kind in kinds:
        assert_cov(res.covariance(kind)[np.ix_(idx, idx)], sm[f"cov_{kind}"], kind)


# ---------------------------------------------------------------- invariants


@pytest.mark.parametrize(
    ("name", "corstr"),
    [
        ("ohio_exchangeable", "exchangeable"),
        pytest.param("ohio_gaps_ar1", "ar1", marks=pytest.mark.slow),
    ],
)
def test_row_order_does_not_matter(name, corstr):
    """Shuffled rows (clusters no longer contiguous, times out of order) give the same fit."""
    df = fixture(name)[1]
    res = fitted(name)
    shuffled = df.sample(frac=1.0, random_state=1)
    again = jm.gee("resp ~ age + smoke", shuffled, family="binomial", groups="id",
                   corstr=corstr, time="age")  # fmt: skip
    np.testing.assert_allclose(again.coef, res.coef, rtol=1e-10)
    np.testing.assert_allclose(again.cov, res.cov, rtol=1e-9)
    np.testing.assert_allclose(float(again.alpha[0]), float(res.alpha[0]), rtol=1e-10)


@pytest.mark.slow
def test_buckets_and_chunks_give_the_same_fit(monkeypatch):
    """Clusters of 1-4 rows: power-of-two buckets = one bucket per size; chunked sums = one chunk."""
    df = fixture("ohio_exchangeable")[1]
    keep = (df["id"] % 4 != 0) | (df["age"] <= df["id"] % 3 - 2)  # clusters of sizes 1, 2, 3, 4
    sub = df[keep]
    assert set(sub.groupby("id").size()) == {1, 2, 3, 4}

    def fit(**kw):
        return jm.gee("resp ~ age + smoke", sub, family="binomial", groups="id",
                      corstr="exchangeable", **kw)  # fmt: skip

    pow2 = fit()
    chunked = fit(chunk_size=37)
    monkeypatch.setattr(clusters, "_EXACT_BUCKETS", 10)
    exact = fit()
    for other in (chunked, exact):
        np.testing.assert_allclose(other.coef, pow2.coef, rtol=1e-12)
        np.testing.assert_allclose(other.cov, pow2.cov, rtol=1e-10)
        np.testing.assert_allclose(other.covariance("bias_reduced"),
                                   pow2.covariance("bias_reduced"), rtol=1e-10)  # fmt: skip


# ---------------------------------------------------------------- the result


def test_result_kinds_and_inference():
    res = fitted("ohio_exchangeable")
    naive = res.with_cov("naive")
    assert naive.cov_type == "naive"
    np.testing.assert_allclose(np.asarray(list(naive.se.values())),
                               np.sqrt(np.diag(res.covariance("naive"))))  # fmt: skip
    np.testing.assert_allclose(res.with_cov("robust").cov, res.cov)
    test = jm.wald_test(res, "age = 0, smoke = 0", cov="bias_reduced")
    assert test.df == 2 and test.cov_type == "bias_reduced" and 0 < float(test.pvalue) < 1
    ratio = jm.delta_method(res, lambda p: p["age"] / p["smoke"])
    assert np.isfinite(float(ratio.se))
    with pytest.raises(ValueError, match="unknown cov"):
        res.with_cov("opg")
    text = res.summary()
    assert "exchangeable" in text and "Clusters" in text and "converged" in text
    assert float(res.correlation) == float(res.alpha[0])


@pytest.mark.slow
def test_unstructured_correlation_is_a_matrix():
    unstr = fitted("ohio_unstructured")
    assert unstr.correlation.shape == (4, 4) and unstr.alpha.shape == (6,)
    np.testing.assert_allclose(np.diag(unstr.correlation), 1.0)


def test_result_is_a_pytree():
    """Two fits of one model share a treedef; results pass through jit."""
    res = fitted("ohio_exchangeable")
    df = fixture("ohio_exchangeable")[1]
    other = jm.gee("resp ~ age + smoke", df.assign(resp=df["resp"][::-1].to_numpy()),
                   family="binomial", groups="id", corstr="exchangeable", time="age")  # fmt: skip
    assert jax.tree.structure(res) == jax.tree.structure(other)
    with jax.enable_x64(True):
        se = jax.jit(lambda r: jax.numpy.sqrt(jax.numpy.diagonal(r.cov)))(res)
    np.testing.assert_allclose(se, np.asarray(list(res.se.values())))


@pytest.mark.slow
def test_non_convergence_is_flagged():
    res = fitted("ohio_ar1", max_iter=2)
    assert int(res.status) == jm.Status.GEE_MAX_ITER
    assert "GEE iteration" in res.summary()


# ---------------------------------------------------------------- bad input


def test_bad_input():
    df = fixture("ohio_exchangeable")[1]
    fit = functools.partial(jm.gee, "resp ~ age + smoke", df, family="binomial", groups="id")
    with pytest.raises(ValueError, match="unknown corstr"):
        fit(corstr="toeplitz")
    with pytest.raises(ValueError, match="supports the families"):
        jm.gee("resp ~ age", df, family="negative_binomial", groups="id")
    with pytest.raises(ValueError, match="duplicates within a cluster: cluster 0 has two rows"):
        fit(corstr="ar1", time=np.where(df["age"] == 1, 0, df["age"]))
    with pytest.raises(ValueError, match="every cluster has one observation"):
        fit(corstr="ar1", groups=np.arange(len(df)))
    with pytest.raises(KeyError, match="not a column"):
        fit(corstr="ar1", time="visit")
    with pytest.raises(ValueError, match="needs groups"):
        jm.gee("resp ~ age", df, family="binomial", groups=None)
    with pytest.raises(ValueError, match="tol must"):
        fit(tol=0)
    # unstructured: times -2 and 1 never observed together in a cluster
    sub = df[~((df["age"] == 1) & (df["id"] % 2 == 0)) & ~((df["age"] == -2) & (df["id"] % 2 == 1))]
    with pytest.raises(ValueError, match="no cluster is observed at both time -2 and time 1"):
        jm.gee("resp ~ age", sub, family="binomial", groups="id", corstr="unstructured", time="age")


@pytest.mark.slow
def test_missing_time_rows_are_dropped():
    df = fixture("ohio_exchangeable")[1].astype({"age": float})
    df.loc[[3, 7], "age"] = np.nan
    res = jm.gee("resp ~ smoke", df, family="binomial", groups="id", corstr="exchangeable",
                 time="age")  # fmt: skip
    assert int(res.n_obs) == len(df) - 2 and int(res.n_missing) == 2
