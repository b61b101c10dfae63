"""jaxmle.gmm against R gmm and linearmodels IVGMM on the Mroz wage equation (tests/reference/gmm/):
two-step, iterated, identity, centred, clustered; a nonlinear exponential-mean IV model against R gmm;
Hansen's J; bad input."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import jaxmle as jm

REFERENCE = Path(__file__).parent / "reference"
# estimates ~1e-6 relative, covariances to 1e-5 of their largest entry; J to 1e-6 relative. The
# identity-weighted step is ill-conditioned (G'G has condition number ~1e13 on these unscaled
# moments): R's own answer differs from a long-double solution by 2e-8.
PARAM_RTOL, COV_TOL, J_RTOL = 1e-6, 1e-5, 1e-6


def reference(name):
    return json.loads((REFERENCE / "gmm" / f"{name}.json").read_text())


@functools.cache
def mroz():
    df = pd.read_csv(REFERENCE / "data" / "mroz.csv")
    work = df.dropna(subset=["lwage"])
    data = {
        "y": work["lwage"].to_numpy(float),
        "x": np.column_stack([np.ones(len(work)), work[["exper", "expersq", "educ"]]]),
        "z": np.column_stack(
            [np.ones(len(work)), work[["exper", "expersq", "motheduc", "fatheduc", "huseduc"]]]
        ),
    }
    z = data["z"]
    return data, np.linalg.inv(z.T @ z / len(z)), work["age"].to_numpy()


def iv_moments(theta, obs):
    return obs["z"] * (obs["y"] - obs["x"] @ theta["b"])


@functools.cache
def fitted(weighting, **options):
    data, w_2sls, age = mroz()
    if options.pop("clustered", False):
        options["groups"] = age
    if weighting != "identity":
        options["weight_matrix"] = w_2sls  # R gmm and linearmodels start from 2SLS
    return jm.gmm(iv_moments, {"b": np.zeros(4)}, data, weighting=weighting, **options)


def rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


def check(res, ref, cov):
    assert int(res.status) == jm.Status.SUCCESSFUL, res.message
    np.testing.assert_allclose(res.coef, ref["params"], rtol=PARAM_RTOL)
    assert rel(res.covariance(cov), ref["cov"]) < COV_TOL
    np.testing.assert_allclose(float(res.j_stat), ref["j_stat"], rtol=J_RTOL)
    assert int(res.j_df) == ref["j_df"] == 2


@pytest.mark.parametrize(
    ("weighting", "options", "r_name", "lm_name"),
    [
        ("two-step", {}, "r_linear_two_step", "lm_two_step"),
        pytest.param("iterated", {}, "r_linear_iterated", "lm_iterated", marks=pytest.mark.slow),
        pytest.param(
            "two-step",
            {"center": True},
            "r_linear_two_step_centered",
            "lm_two_step_center",
            marks=pytest.mark.slow,
        ),
        pytest.param("identity", {}, "r_linear_identity", None, marks=pytest.mark.slow),
    ],
)
def test_linear_iv(weighting, options, r_name, lm_name):
    """R gmm's covariance: efficient (G'S^-1G)^-1/n after two-step / iterated, the sandwich after
    identity; linearmodels': the sandwich with the last step's W."""
    res = fitted(weighting, **options)
    check(res, reference(r_name), "robust" if weighting == "identity" else "efficient")
    if lm_name:
        check(res, reference(lm_name), "robust")
    assert res.cov_type == "robust" and res.weighting == weighting


@pytest.mark.slow
def test_iterated_is_a_fixed_point():
    res = fitted("iterated")
    assert int(res.n_steps) > 2
    assert rel(res.covariance("robust"), res.covariance("efficient")) < 1e-8


@pytest.mark.slow
def test_clustered():
    """Cluster sums in S (weight_type="clustered") and in the covariance, as linearmodels."""
    check(fitted("two-step", clustered=True), reference("lm_two_step_clustered"), "robust")


@pytest.mark.slow
def test_nonlinear_exponential_iv():
    ref = reference("r_exponential_two_step")
    df = pd.read_csv(REFERENCE / "data" / "mroz.csv")
    data = {
        "y": df["hours"].to_numpy(float) / 1000,
        "x": np.column_stack([np.ones(len(df)), df[["educ", "exper", "expersq", "kidslt6",
                                                    "nwifeinc"]]]),
        "z": np.column_stack([np.ones(len(df)), df[["exper", "expersq", "kidslt6", "nwifeinc",
                                                    "motheduc", "fatheduc", "huseduc"]]]),
    }  # fmt: skip

    def moments(theta, obs):
        return obs["z"] * (obs["y"] - jnp.exp(obs["x"] @ theta["b"]))

    res = jm.gmm(moments, {"b": np.asarray(ref["t0"])}, data, cov="efficient")
    assert ref["grad_norm"] < 1e-7  # R's answer is a minimum
    check(res, {**ref, "j_df": 2}, "efficient")
    text = res.summary()
    assert "Hansen's J" in text and "two-step" in text
    assert float(jm.wald_test(res, "b[1] = 0").pvalue) < 0.05


def test_bad_input():
    data = mroz()[0]
    with pytest.raises(ValueError, match=r"more parameters \(4\) than moment conditions \(3\)"):
        jm.gmm(lambda t, o: o["z"][:3] * (o["y"] - o["x"] @ t["b"]), {"b": np.zeros(4)}, data)
    with pytest.raises(ValueError, match="weight_matrix is singular"):
        jm.gmm(iv_moments, {"b": np.zeros(4)}, data, weighting="one-step",
               weight_matrix=np.diag([1.0, 1, 1, 1, 1, 0]))  # fmt: skip
    with pytest.raises(ValueError, match="weight_matrix must be 6 x 6"):
        jm.gmm(iv_moments, {"b": np.zeros(4)}, data, weight_matrix=np.eye(5))
    with pytest.raises(ValueError, match="unknown weighting"):
        jm.gmm(iv_moments, {"b": np.zeros(4)}, data, weighting="cue")


@pytest.mark.slow
def test_singular_weight_is_flagged():
    data = mroz()[0]

    def duplicated(theta, obs):  # a moment repeated: S is singular, W = S^-1 does not exist
        m = iv_moments(theta, obs)
        return jnp.concatenate([m, m[-1:]])

    res = jm.gmm(duplicated, {"b": np.zeros(4)}, data, weight_matrix=np.eye(7) + 0.0)
    assert int(res.status) == jm.Status.SINGULAR_WEIGHT
    assert "weighting matrix" in res.message
    with pytest.raises(RuntimeError, match=r"jaxmle\.gmm: .*weighting matrix"):
        jm.gmm(duplicated, {"b": np.zeros(4)}, data, weight_matrix=np.eye(7) + 0.0, throw=True)
