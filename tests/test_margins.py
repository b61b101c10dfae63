"""jm.margins against statsmodels `get_margeff` (logit, Poisson) and closed forms (a factor's contrasts),
for jm.glm results and for a log-density and fn written by hand; `at`, weights, and bad input."""

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
# estimates from fits that agree to ~1e-9 relative; statsmodels' standard errors come from a
# numerical Jacobian of the effects (complex step or finite differences), good to ~1e-7
EST_RTOL, SE_RTOL = 1e-6, 1e-5


@pytest.fixture(scope="module")
def fx():
    return json.loads((REFERENCE / "margins" / "sm_margins.json").read_text())


def frame(fx, name):
    return pd.read_csv(REFERENCE / fx[name]["dataset"])


@pytest.fixture(scope="module")
def spector(fx):
    df = frame(fx, "spector_logit")
    return df, jm.glm(fx["spector_logit"]["formula"], df, family="binomial")


def as_array(m, names):
    return np.array([float(m.estimate[n]) for n in names]), np.array(
        [float(m.se[n]) for n in names]
    )


@pytest.mark.parametrize("at", ["overall", "mean"])
def test_glm_logit_equals_statsmodels(spector, fx, at):
    _, res = spector
    ref = fx["spector_logit"]
    m = jm.margins(res, at=None if at == "overall" else "mean")
    assert m.names == tuple(ref["names"])
    est, se = as_array(m, ref["names"])
    np.testing.assert_allclose(est, ref[at]["estimate"], rtol=EST_RTOL)
    np.testing.assert_allclose(se, ref[at]["se"], rtol=SE_RTOL)


def logit(theta, obs):
    eta = theta["b0"] + obs["x"] @ theta["b"]
    return obs["y"] * eta - jnp.logaddexp(0.0, eta)


@pytest.fixture(scope="module")
def plain(spector):
    df, _ = spector
    x = df[["GPA", "TUCE", "PSI"]].to_numpy(float)
    return jm.fit(logit, {"b0": 0.0, "b": np.zeros(3)}, {"x": x, "y": df["GRADE"].to_numpy(float)})


def test_any_model_fn_and_data(spector, plain, fx):
    """A log-density and a probability written by hand: the same effects as the GLM front end."""
    df, _ = spector
    ref = fx["spector_logit"]
    res = plain

    def prob(theta, obs):
        eta = theta["b0"] + theta["b"] @ jnp.stack([obs["GPA"], obs["TUCE"], obs["PSI"]])
        return jax.nn.sigmoid(eta)

    m = jm.margins(res, prob, df)  # GRADE is a column prob does not read: not reported
    assert list(m.estimate) == ["GPA", "TUCE", "PSI"]
    est, se = as_array(m, ref["names"])
    np.testing.assert_allclose(est, ref["overall"]["estimate"], rtol=EST_RTOL)
    np.testing.assert_allclose(se, ref["overall"]["se"], rtol=SE_RTOL)
    only = jm.margins(res, prob, df, variables=["GPA"], types={"PSI": "continuous"})
    assert list(only.estimate) == ["GPA"]


@pytest.mark.slow
@pytest.mark.parametrize("at", ["overall", "mean"])
def test_glm_poisson_equals_statsmodels(fx, at):
    ref = fx["randhie_poisson"]
    res = jm.glm(ref["formula"], frame(fx, "randhie_poisson"), family="poisson")
    m = jm.margins(res, at=None if at == "overall" else "mean")
    est, se = as_array(m, ref["names"])
    np.testing.assert_allclose(est, ref[at]["estimate"], rtol=EST_RTOL)
    np.testing.assert_allclose(se, ref[at]["se"], rtol=SE_RTOL)


@pytest.mark.slow
def test_factor_contrasts_closed_form(fx):
    """C(race): each level against the first, all dummies of the factor set together (Stata's
    `margins r.race`), against the closed form; the same through fn over the text column."""
    ref = fx["birthwt_race_logit"]
    df = frame(fx, "birthwt_race_logit")
    res = jm.glm(ref["formula"], df, family="binomial")
    m = jm.margins(res)
    assert m.estimate["C(race)"].shape == (2,)
    np.testing.assert_allclose(m.estimate["C(race)"], ref["race"]["estimate"], rtol=EST_RTOL)
    np.testing.assert_allclose(m.se["C(race)"], ref["race"]["se"], rtol=SE_RTOL)
    np.testing.assert_allclose(m.estimate["age"], ref["age"]["estimate"], rtol=EST_RTOL)
    np.testing.assert_allclose(m.se["age"], ref["age"]["se"], rtol=SE_RTOL)
    assert "C(race)[T.other]" in m.names

    b = res.params

    def prob(theta, obs):  # race arrives as codes 0..2 in sorted order: black, other, white
        eta = theta["Intercept"] + theta["age"] * obs["age"] + theta["lwt"] * obs["lwt"]
        eta += theta["smoke"] * obs["smoke"]
        eta += jnp.where(obs["race"] == 1, theta["C(race)[T.other]"], 0.0)
        eta += jnp.where(obs["race"] == 2, theta["C(race)[T.white]"], 0.0)
        return jax.nn.sigmoid(eta)

    by_hand = jm.margins(res, prob, df, variables=["race", "age"])
    assert by_hand.names == ("race[other]", "race[white]", "age")
    np.testing.assert_allclose(by_hand.estimate["race"], ref["race"]["estimate"], rtol=EST_RTOL)
    np.testing.assert_allclose(by_hand.se["race"], ref["race"]["se"], rtol=SE_RTOL)
    assert set(b) >= {"C(race)[T.other]", "C(race)[T.white]"}


@pytest.mark.slow
def test_predictions_at_a_grid_equal_the_delta_method(spector):
    df, res = spector
    m = jm.margins(res, effect="prediction", at={"PSI": [0, 1], "GPA": [2.5, 3.5]})
    assert m.estimate["prediction"].shape == (4,)
    X = np.column_stack([np.ones(len(df)), df[["GPA", "TUCE", "PSI"]].to_numpy(float)])

    def mean_at(gpa, psi):
        def g(p):
            b = jnp.stack([p["Intercept"], p["GPA"], p["TUCE"], p["PSI"]])
            Xa = jnp.asarray(X).at[:, 1].set(gpa).at[:, 3].set(psi)
            return jnp.mean(jax.nn.sigmoid(Xa @ b))

        return jm.delta_method(res, g)

    for i, (psi, gpa) in enumerate([(0, 2.5), (0, 3.5), (1, 2.5), (1, 3.5)]):
        d = mean_at(gpa, psi)
        np.testing.assert_allclose(m.estimate["prediction"][i], d.estimate, rtol=1e-12)
        np.testing.assert_allclose(m.se["prediction"][i], d.se, rtol=1e-10)
    assert m.names[1] == "prediction @ PSI=0, GPA=3.5"
    lo, hi = m.conf_int()
    assert np.all(lo["prediction"] < m.estimate["prediction"])
    assert np.all(hi["prediction"] > m.estimate["prediction"])
    slopes = jm.margins(res, at={"PSI": [0, 1]}, variables=["GPA"])
    assert slopes.estimate["GPA"].shape == (2,)


def test_weights_are_replicated_rows(spector):
    df, res = spector
    w = np.arange(len(df)) % 3
    m = jm.margins(res, data=df, weights=w)
    rows = df.loc[df.index.repeat(w)].reset_index(drop=True)
    expanded = jm.margins(res, data=rows)
    for k in m.estimate:
        np.testing.assert_allclose(m.estimate[k], expanded.estimate[k], rtol=1e-12)
        np.testing.assert_allclose(m.se[k], expanded.se[k], rtol=1e-10)


def test_other_covariance_and_presentation(spector):
    _, res = spector
    robust = jm.margins(res, cov="sandwich")
    assert robust.cov_type == "sandwich"
    assert not np.allclose(robust.se["GPA"], jm.margins(res).se["GPA"])
    text = robust.summary()
    assert "Average marginal effects" in text and "GPA" in text
    assert list(robust.to_frame().index) == ["GPA", "TUCE", "PSI"]


@pytest.mark.slow
def test_glm_interactions_are_not_split(fx):
    df = frame(fx, "birthwt_race_logit")
    res = jm.glm("low ~ age * lwt + smoke", df, family="binomial")
    m = jm.margins(res)
    assert list(m.estimate) == ["smoke"]
    assert any("age:lwt" in n for n in m.notes)
    with pytest.raises(ValueError, match="interactions"):
        jm.margins(res, variables=["age"])


def test_bad_input(spector, plain):
    df, res = spector
    with pytest.raises(ValueError, match="unknown effect"):
        jm.margins(res, effect="elasticity")
    with pytest.raises(KeyError, match="not columns of data"):
        jm.margins(res, variables=["nope"])
    with pytest.raises(ValueError, match="types="):
        jm.margins(res, types={"GPA": "binary"})
    with pytest.raises(ValueError, match="needs data="):
        jm.margins(res, lambda t, o: o["GPA"])
    with pytest.raises(KeyError, match="at names"):
        jm.margins(res, at={"nope": 1})
    with pytest.raises(ValueError, match="weights"):
        jm.margins(res, weights=np.ones(3))
    with pytest.raises(TypeError, match=r"only a jm\.glm"):
        jm.margins(plain)
    with pytest.raises(ValueError, match="depends on none"):
        jm.margins(plain, lambda t, o: jax.nn.sigmoid(t["b0"]), df)
    with pytest.raises(ValueError, match="types"):
        jm.margins(plain, lambda t, o: o["GPA"] * t["b0"], df, types={"GPA": "ordinal"})
