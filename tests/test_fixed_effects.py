"""Fixed effects by `fit(index=...)`: against pyfixest, R (glm with dummies, sandwich) and the dense
Newton fit with explicit dummies; dropping, normalisation, the result's covariance block, vmap,
and every host-side error.

References (tests/reference/fixed_effects/, made by the committed scripts there): a simulated
one-way logit panel, a simulated two-way Poisson (gravity-style: exporter-year and importer-year,
two years), and R plm::Males (union membership, person effects, never-switching persons dropped).
pyfixest's iid covariance with `ssc(k_adj=False)` is the covariate block of the inverse information;
its CRV1 with `ssc(k_adj=False)` is jaxmle's cov="cluster" (G/(G-1)). Fits are module-scoped: one
compile per model shape.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import jaxmle as jm

REFERENCE = Path(__file__).parent / "reference"
# Estimates: agreement with the references to ~1e-6 relative (the standard); pyfixest and
# R were run to 1e-14, and jaxmle's own tolerance leaves ~1e-6 standard errors at most.
EST_RTOL = 1e-6
# Covariances: functions of the estimate and of the information, ~1e-6 relative.
COV_RTOL = 1e-6
# Hessian-free methods stop on their own criteria (L-BFGS's estimate of the scaled gradient);
# they reach the same maximum to ~1e-8 relative in estimates and SEs on these data.
METHOD_RTOL = 1e-6


def logit_fe(theta, obs):
    eta = obs["x"] @ theta["b"] + theta["a"][obs["g"]]
    return obs["y"] * eta - jm.log1pexp(eta)


def poisson_2fe(theta, obs):
    eta = obs["x"] @ theta["b"] + theta["a"][obs["exporter"]] + theta["c"][obs["importer"]]
    return obs["y"] * eta - jnp.exp(eta)


def _fixture(name):
    return json.loads((REFERENCE / "fixed_effects" / name).read_text())


def _csv(path):
    return pd.read_csv(REFERENCE / path)


def _close(actual, expected, rtol, what):
    actual, expected = np.asarray(actual, float), np.asarray(expected, float)
    scale = np.max(np.abs(expected))
    assert np.max(np.abs(actual - expected)) <= rtol * scale, (what, actual, expected)


# ---------------------------------------------------------------- data and fits (module scope)


@pytest.fixture(scope="module")
def logit_panel():
    df = _csv("data/fe_logit_panel.csv")
    data = {
        "x": df[["x0", "x1", "x2"]].to_numpy(),
        "y": df["y"].to_numpy(float),
        "g": df["firm"].to_numpy(np.int32),
    }
    return df, data


@pytest.fixture(scope="module")
def logit_fit(logit_panel):
    _, data = logit_panel
    init = {"a": np.zeros(100), "b": np.zeros(3)}
    return jm.fit(logit_fe, init, data, index={"a": "g"}, groups=data["g"])


@pytest.fixture(scope="module")
def poisson_panel():
    df = _csv("data/fe_poisson_panel.csv")
    data = {
        "x": df[["x0", "x1"]].to_numpy(),
        "y": df["y"].to_numpy(float),
        "exporter": df["exporter"].to_numpy(np.int32),
        "importer": df["importer"].to_numpy(np.int32),
    }
    return df, data


@pytest.fixture(scope="module")
def poisson_fit(poisson_panel):
    _, data = poisson_panel
    init = {"a": np.zeros(60), "b": np.zeros(2), "c": np.zeros(40)}
    index = {"a": "exporter", "c": "importer"}
    return jm.fit(poisson_2fe, init, data, index=index, groups=data["exporter"])


@pytest.fixture(scope="module")
def males():
    df = _csv("data/males.csv")
    codes, persons = pd.factorize(df["nr"])
    data = {
        "x": df[["exper", "married", "wage", "health"]].to_numpy(float),
        "y": df["union"].to_numpy(float),
        "g": codes.astype(np.int32),
    }
    init = {"a": np.zeros(len(persons)), "b": np.zeros(4)}
    return df, jm.fit(logit_fe, init, data, index={"a": "g"}, groups=data["g"])


# ---------------------------------------------------------------- references


def test_logit_panel_equals_pyfixest(logit_fit):
    ref = _fixture("pf_logit_panel.json")
    res = logit_fit
    assert bool(res.converged), res.message
    assert float(res.n_obs) == ref["n_obs"]
    assert int(res.effects.n_dropped[0]) == ref["dropped_levels"]
    assert int(res.effects.n_dropped_rows) == ref["dropped_rows"]
    _close(res.params["b"], ref["params"], EST_RTOL, "estimates")
    _close(res.cov, ref["cov_iid_no_k_adj"], COV_RTOL, "iid, ssc(k_adj=False)")
    _close(res.covariance("cluster"), ref["cov_crv1_firm_no_k_adj"], COV_RTOL, "CRV1 by firm")
    # pyfixest's default iid SEs carry (N - 1) / (N - K), K = covariates + every kept level
    n, k = ref["n_obs"], 3 + ref["k_fe"]
    _close(np.asarray(res.se["b"]) * np.sqrt((n - 1) / (n - k)), ref["se_default"], COV_RTOL, "se")


@pytest.mark.slow
def test_logit_panel_equals_the_dense_newton_fit_with_dummies(logit_panel, logit_fit):
    """The concentrated fit is the full maximum: the dense Newton fit with one dummy per kept
    level, on the kept rows (its se_for block also exercises the dense path of SubsetResult)."""
    df, data = logit_panel
    const = df.groupby("firm")["y"].agg(["min", "max"])
    kept = const.index[const["min"] < const["max"]]
    rows = df["firm"].isin(kept).to_numpy()
    codes = pd.Index(kept).get_indexer(df["firm"][rows]).astype(np.int32)
    dense_data = {"x": data["x"][rows], "y": data["y"][rows], "g": codes}
    init = {"a": np.zeros(len(kept)), "b": np.zeros(3)}
    dense = jm.fit(logit_fe, init, dense_data, groups=codes, se_for=["b"])
    assert isinstance(dense, jm.SubsetResult) and bool(dense.converged)
    _close(logit_fit.params["b"], dense.params["b"], EST_RTOL, "estimates")
    _close(np.asarray(logit_fit.params["a"])[kept], dense.params["a"], EST_RTOL, "effects")
    for kind in ("hessian", "sandwich", "cluster"):
        _close(logit_fit.covariance(kind), dense.covariance(kind), COV_RTOL, kind)
    assert np.isnan(np.asarray(logit_fit.params["a"])[np.setdiff1d(np.arange(100), kept)]).all()
    np.testing.assert_allclose(float(logit_fit.loglik), float(dense.loglik), rtol=1e-10)


def test_two_way_poisson_equals_pyfixest_and_normalises_per_component(poisson_panel, poisson_fit):
    ref = _fixture("pf_poisson_panel.json")
    df, _ = poisson_panel
    res = poisson_fit
    assert bool(res.converged), res.message
    assert float(res.n_obs) == ref["n_obs"]
    _close(res.params["b"], ref["params"], EST_RTOL, "estimates")
    _close(res.cov, ref["cov_iid_no_k_adj"], COV_RTOL, "iid")
    _close(res.covariance("cluster"), ref["cov_crv1_exporter_no_k_adj"], COV_RTOL, "CRV1")
    # exporter-year and importer-year: one constant per year; the importers are the smaller set,
    # their lowest level in each year is the reference, held at exactly 0
    assert res.effects.n_references.tolist() == [0, ref["n_components"]]
    references = df.groupby("year")["importer"].min().to_numpy()
    assert (np.asarray(res.params["c"])[references] == 0).all()
    assert np.isnan(np.asarray(res.params["a"])[5])  # the exporter-year with no trade
    assert "reference level" in res.summary() and "dropped (constant outcome)" in res.summary()


@pytest.mark.slow
def test_males_equals_r_glm_with_person_dummies_and_pyfixest(males):
    _, res = males
    ref = _fixture("r_males_logit.json")
    assert bool(res.converged), res.message
    assert int(res.effects.n_dropped[0]) == ref["n_persons"] - ref["n_persons_kept"]
    assert float(res.n_obs) == ref["n_obs_kept"]
    np.testing.assert_allclose(float(res.loglik), ref["loglik"], rtol=1e-10)
    _close(res.params["b"], ref["params"], EST_RTOL, "estimates")
    for kind in ("hessian", "sandwich", "cluster"):
        _close(res.covariance(kind), ref[f"cov_{kind}"], COV_RTOL, kind)
    pf_ref = _fixture("pf_males_logit.json")
    _close(res.covariance("cluster"), pf_ref["cov_crv1_nr_no_k_adj"], COV_RTOL, "pyfixest CRV1")
    assert res.n_params == 4 + ref["n_persons_kept"]  # AIC counts the estimated effects


# ---------------------------------------------------------------- methods and the generic path


@pytest.mark.slow
def test_lbfgs_with_index_reaches_the_same_maximum(logit_panel, logit_fit):
    _, data = logit_panel
    init = {"a": np.zeros(100), "b": np.zeros(3)}
    res = jm.fit(logit_fe, init, data, index={"a": "g"}, groups=data["g"], method="lbfgs")
    assert bool(res.converged), res.message
    assert int(res.n_iter) > 5  # L-BFGS, not Newton
    _close(res.params["b"], logit_fit.params["b"], METHOD_RTOL, "estimates")
    _close(res.cov, logit_fit.cov, METHOD_RTOL, "cov")
    assert float(res.scaled_gradient) < 1e-12


@pytest.mark.slow
def test_newton_cg_with_index_reaches_the_same_maximum(logit_panel, logit_fit):
    _, data = logit_panel
    init = {"a": np.zeros(100), "b": np.zeros(3)}
    res = jm.fit(logit_fe, init, data, index={"a": "g"}, groups=data["g"], method="newton-cg")
    assert bool(res.converged), res.message
    _close(res.params["b"], logit_fit.params["b"], METHOD_RTOL, "estimates")
    _close(res.covariance("cluster"), logit_fit.covariance("cluster"), METHOD_RTOL, "cluster")


@pytest.mark.slow
def test_vmap_equals_a_loop_and_drops_levels_per_fit(logit_panel, logit_fit):
    _, data = logit_panel
    init = {"a": np.zeros(100), "b": np.zeros(3)}
    ys = np.stack([data["y"], data["y"][::-1]])
    ys[1, data["g"] == 11] = 1.0  # one more constant level in the second draw

    def one(y):
        d = {**data, "y": y}
        return jm.fit(logit_fe, init, d, index={"a": "g"}, groups=data["g"], n_groups=100)

    with jax.enable_x64(True):
        batch = jax.jit(jax.vmap(one))(jnp.asarray(ys))
    assert batch.status.tolist() == [0, 0]
    _close(batch.params["b"][0], logit_fit.params["b"], 1e-12, "vmap lane 0")
    _close(batch.cov[0], logit_fit.cov, 1e-10, "vmap lane 0 cov")
    second = jm.fit(logit_fe, init, {**data, "y": ys[1]}, index={"a": "g"}, groups=data["g"])
    _close(batch.params["b"][1], second.params["b"], 1e-12, "vmap lane 1")
    assert int(batch.effects.n_dropped[1, 0]) == int(second.effects.n_dropped[0])
    assert "constant outcome" in batch[1].summary()


def test_results_of_one_model_share_a_treedef(logit_panel, logit_fit):
    _, data = logit_panel
    init = {"a": np.zeros(100), "b": np.zeros(3)}
    other = jm.fit(logit_fe, init, {**data, "y": data["y"][::-1]}, index={"a": "g"},
                   groups=data["g"])  # fmt: skip
    assert jax.tree.structure(other) == jax.tree.structure(logit_fit)
    assert logit_fit.cov.shape == (3, 3) and logit_fit.information.shape == (3, 3)
    assert np.isnan(np.asarray(logit_fit.se["a"])).all()


def test_inference_on_the_block(logit_fit):
    res = logit_fit
    t = jm.wald_test(res, "b[0] = b[1]")
    v = np.asarray(res.cov)
    d = float(res.params["b"][0] - res.params["b"][1])
    np.testing.assert_allclose(float(t.statistic), d**2 / (v[0, 0] + v[1, 1] - 2 * v[0, 1]))
    delta = jm.delta_method(res, lambda p: p["b"][0] * 2.0)
    np.testing.assert_allclose(float(delta.se), 2.0 * np.sqrt(v[0, 0]))
    with pytest.raises(ValueError, match="outside the covariance block"):
        jm.wald_test(res, "a[0] = 0")
    with pytest.raises(ValueError, match="k x k opg"):
        res.with_cov("opg")
    sandwich = res.with_cov("sandwich")
    assert sandwich.cov_type == "sandwich" and np.isnan(np.asarray(sandwich.se["a"])).all()


# ---------------------------------------------------------------- host-side errors (no fitting)


@pytest.fixture
def tiny():
    rng = np.random.default_rng(0)
    n = 40
    data = {"x": rng.normal(size=(n, 2)), "y": (rng.random(n) < 0.5) * 1.0,
            "g": rng.integers(0, 5, n).astype(np.int32)}  # fmt: skip
    return data, {"a": np.zeros(5), "b": np.zeros(2)}


def intercept_fe(theta, obs):
    eta = theta["b0"] + obs["x"] @ theta["b"] + theta["a"][obs["g"]]
    return obs["y"] * eta - jm.log1pexp(eta)


def sum_of_effects(theta, obs):
    eta = obs["x"] @ theta["b"] + theta["a"][obs["g"]] + 0.1 * jnp.sum(theta["a"])
    return obs["y"] * eta - jm.log1pexp(eta)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda d, i: ({}, {"index": {"z": "g"}}), KeyError, "not a key of init"),
        (lambda d, i: ({}, {"index": {"a": "h"}}), KeyError, "data lacks"),
        (lambda d, i: ({"g": d["g"] * 2}, {}), ValueError, "holds codes 0..8"),
        (lambda d, i: ({"g": d["g"] * 1.0}, {}), TypeError, "integer array of codes"),
        (lambda d, i: ({}, {"fixed": {"a": 0.0}}), ValueError, "cannot also be fixed"),
        (lambda d, i: ({}, {"se_for": ["a"]}), ValueError, "indexed key"),
        (lambda d, i: ({}, {"method": "bhhh"}), ValueError, "does not take index"),
        (lambda d, i: ({}, {"cov": "opg"}), ValueError, "full k x k opg"),
        (lambda d, i: ({}, {"se_for": ["nope"]}), KeyError, "not keys of init"),
    ],
)
def test_bad_index_input_is_refused_before_fitting(tiny, change, error, match):
    data, init = tiny
    new_data, options = change(data, init)
    options = {"index": {"a": "g"}, **options}
    with pytest.raises(error, match=match):
        jm.fit(logit_fe, init, {**data, **new_data}, **options)


def test_a_parameter_the_effects_absorb_is_named(tiny):
    data, init = tiny
    with pytest.raises(ValueError, match="b0 is absorbed by the effects a"):
        jm.fit(intercept_fe, {**init, "b0": 0.0}, data, index={"a": "g"})


def test_a_log_density_that_reads_the_effects_otherwise_is_refused(tiny):
    data, init = tiny
    with pytest.raises(ValueError, match="does not describe this log-density"):
        jm.fit(sum_of_effects, init, data, index={"a": "g"})


def test_hessian_free_methods_ask_for_se_for_when_parameters_are_many():
    n, g = 50, 600
    data = {"x": np.ones((n, 1)), "y": np.ones(n), "g": np.arange(n, dtype=np.int32) % g}
    init = {"a": np.zeros(g), "b": np.zeros(1)}
    with pytest.raises(ValueError, match="name the parameters of interest with se_for"):
        jm.fit(logit_fe, init, data, method="lbfgs")


@pytest.mark.slow
def test_profile_of_a_covariate_equals_statsmodels_with_an_offset():
    """Profiles refit with b[0] held (another free mask through the structured fit); the
    reference is statsmodels Logit with firm dummies and b[0] x0 as an offset."""
    import statsmodels.api as sm

    rng = np.random.default_rng(0)
    n, g = 600, 30
    x = rng.normal(size=(n, 2))
    firm = rng.integers(0, g, n).astype(np.int32)
    eta = x @ np.array([0.5, -0.3]) + rng.normal(size=g)[firm]
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))) * 1.0
    init = {"a": np.zeros(g), "b": np.zeros(2)}
    res = jm.fit(logit_fe, init, {"x": x, "y": y, "g": firm}, index={"a": "g"})
    values = float(res.params["b"][0]) + np.array([-0.2, 0.1, 0.3])
    design = np.hstack([np.eye(g)[firm], x[:, 1:]])
    ref = [
        sm.Logit(y, design, offset=v * x[:, 0]).fit(disp=0, method="newton", tol=1e-12).llf
        for v in values
    ]
    np.testing.assert_allclose(jm.profile_loglik(res, "b[0]", values), ref, rtol=1e-10)
