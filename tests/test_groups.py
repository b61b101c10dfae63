"""jm.fit_groups: conditional logit and Cox partial likelihood against R survival, the covariance
kinds from per-group scores, the bucketed layout, vmap, inference functions, and bad input."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import jaxmle as jm
from jaxmle._groups import factorize, group_index

REF = Path(__file__).parent / "reference"
# R's coxph runs to eps = 1e-14 on the partial lnL: its estimates sit within ~1e-8 (relative) of
# the maximum, and both sides' covariances are exact inverses at their own estimate.
COEF_RTOL = 1e-6
LOGLIK_ATOL = 1e-8
# covariances compared on the correlation scale (entries divided by se_i se_j): a near-zero
# covariance has no relative accuracy of its own
COV_ATOL = 1e-5


def fixture(name):
    with open(REF / "mixed" / f"groups_{name}.json") as f:
        return json.load(f)


def clogit(theta, rows, mask):
    """Conditional logit of a matched set with one case (R clogit, exact = Breslow here)."""
    eta = rows["x"] @ theta["b"]
    lse = jax.nn.logsumexp(jnp.where(mask > 0, eta, -jnp.inf))
    return jnp.sum(mask * rows["case"] * (eta - lse))


def cox_breslow(theta, rows, mask):
    """Cox partial likelihood of one stratum, Breslow ties: sum_events eta_i - ln sum_{t_j >= t_i}."""
    eta = rows["x"] @ theta["b"]
    t = rows["time"]
    at_risk = (t[None, :] >= t[:, None]) & (mask[None, :] > 0)
    lse = jax.nn.logsumexp(jnp.where(at_risk, eta[None, :], -jnp.inf), axis=1)
    return jnp.sum(mask * rows["event"] * (eta - lse))


@pytest.fixture(scope="module")
def infert():
    df = pd.read_csv(REF / "data" / "infert.csv")
    data = {"x": df[["spontaneous", "induced"]].to_numpy(float), "case": df["case"].to_numpy(float)}
    return data, df["stratum"].to_numpy()


@pytest.fixture(scope="module")
def lung():
    df = pd.read_csv(REF / "data" / "lung_inst.csv")
    data = {
        "x": df[["age", "sex", "ph.ecog"]].to_numpy(float),
        "time": df["time"].to_numpy(float),
        "event": df["event"].to_numpy(float),
    }
    return data, df["inst"].to_numpy()


@pytest.fixture(scope="module")
def clogit_fit(infert):
    data, strata = infert
    return jm.fit_groups(clogit, {"b": np.zeros(2)}, data, strata)


def corr_scale(cov, ref):
    se = np.sqrt(np.diagonal(ref))
    return np.asarray(cov) / np.outer(se, se), np.asarray(ref) / np.outer(se, se)


def check_against(res, ref, robust_kind="sandwich"):
    np.testing.assert_allclose(np.asarray(res.coef), ref["params"], rtol=COEF_RTOL)
    assert abs(float(res.loglik) - ref["loglik"]) < LOGLIK_ATOL
    np.testing.assert_allclose(*corr_scale(res.cov, ref["vcov"]), atol=COV_ATOL)
    if ref["robust"] is not None:
        robust = res.covariance(robust_kind)
        np.testing.assert_allclose(*corr_scale(robust, ref["robust"]), atol=COV_ATOL)


def test_clogit_matches_r(clogit_fit):
    assert clogit_fit.converged
    assert clogit_fit.score_groups.shape == (83, 2)  # one score per matched set
    check_against(clogit_fit, fixture("clogit_infert"))


def test_cox_one_risk_set_matches_r(lung):
    data, _ = lung
    res = jm.fit_groups(cox_breslow, {"b": np.zeros(3)}, data, np.zeros(len(data["time"])))
    assert res.converged and res.score_groups.shape == (1, 3)
    check_against(res, fixture("coxph_lung"))


def test_cox_strata_unequal_sizes_match_r(lung):
    data, inst = lung
    res = jm.fit_groups(cox_breslow, {"b": np.zeros(3)}, data, inst)
    # 18 institutions of 2..36 rows: several size buckets, one program
    assert len(res.problem.blocks) > 1
    check_against(res, fixture("coxph_lung_strata"))
    # cluster = sandwich x G/(G-1) (Stata's convention; R's coxph has no factor)
    np.testing.assert_allclose(
        res.covariance("cluster"), res.covariance("sandwich") * 18 / 17, rtol=1e-12
    )
    # opg from the same per-group scores
    s = np.asarray(res.score_groups)
    np.testing.assert_allclose(res.covariance("opg"), np.linalg.inv(s.T @ s), rtol=1e-8)


def test_layout_buckets_cover_every_row_once(rng):
    sizes = np.array([1, 1, 2, 3, 5, 8, 13, 40, 200])
    codes = np.repeat(np.arange(len(sizes)), sizes)
    codes = codes[rng.permutation(codes.size)].astype(np.int32)
    index = group_index(codes, len(sizes))
    seen = []
    for ids, rows, mask in index.buckets:
        assert rows.shape == mask.shape and rows.shape[0] == ids.size
        assert np.all(mask.sum(1) == sizes[ids])
        for g, r, m in zip(ids, rows, mask, strict=True):
            assert np.all(codes[r] == g)  # padding repeats a row of the same group
            assert np.all(np.diff(r[m]) > 0)  # rows keep their order inside a group
            seen += list(r[m])
    assert sorted(seen) == list(range(codes.size))
    padded = sum(m.size for _, _, m in index.buckets)
    assert padded <= 3 * codes.size + len(sizes)


def test_invariant_to_row_order_and_labels(infert, clogit_fit, rng):
    data, strata = infert
    perm = rng.permutation(len(strata))
    shuffled = jax.tree.map(lambda x: x[perm], data)
    labels = np.array([f"set{s:03d}" for s in strata])[perm]  # string labels
    res = jm.fit_groups(clogit, {"b": np.zeros(2)}, shuffled, labels)
    np.testing.assert_allclose(res.coef, clogit_fit.coef, rtol=1e-10)
    np.testing.assert_allclose(res.covariance("sandwich"), clogit_fit.covariance("sandwich"),
                               rtol=1e-8)  # fmt: skip


def test_methods_agree(infert, clogit_fit):
    data, strata = infert
    for method in ("bhhh",):
        res = jm.fit_groups(clogit, {"b": np.zeros(2)}, data, strata, method=method)
        assert res.converged, method
        np.testing.assert_allclose(res.coef, clogit_fit.coef, rtol=1e-6)


def test_inference_functions(infert, clogit_fit):
    data, strata = infert
    w = jm.wald_test(clogit_fit, "b[0] = b[1]")
    assert np.isfinite(float(w.statistic))
    d = jm.delta_method(clogit_fit, lambda p: jnp.exp(p["b"]))
    np.testing.assert_allclose(d.estimate, np.exp(clogit_fit.coef), rtol=1e-12)
    smaller = {**data, "x": data["x"][:, :1]}
    held = jm.fit_groups(clogit, {"b": np.zeros(1)}, smaller, strata)
    lr = jm.lr_test(held, clogit_fit)
    assert lr.df == 1 and float(lr.statistic) > 0
    lo, hi = jm.profile_ci(clogit_fit, "b[0]")
    assert lo < float(clogit_fit.coef[0]) < hi


def test_vmap_over_data_sets(infert, clogit_fit):
    data, strata = infert

    def one(x):
        return jm.fit_groups(clogit, {"b": jnp.zeros(2)}, {**data, "x": x}, strata)

    xs = jnp.stack([data["x"], data["x"][:, ::-1]])
    batch = jax.jit(jax.vmap(one))(xs)
    assert batch.batch_shape == (2,)
    np.testing.assert_allclose(batch[0].coef, clogit_fit.coef, rtol=1e-6)
    np.testing.assert_allclose(batch[1].coef, clogit_fit.coef[::-1], rtol=1e-6)


def test_bad_input(infert):
    data, strata = infert
    init = {"b": np.zeros(2)}
    with pytest.raises(ValueError, match="NaN or inf labels in 1 row"):
        bad = strata.astype(float)
        bad[5] = np.nan
        jm.fit_groups(clogit, init, data, bad)
    with pytest.raises(ValueError, match=r"shape \(N,\)"):
        jm.fit_groups(clogit, init, data, strata[:-1])
    with pytest.raises(ValueError, match="must return a scalar for ONE group"):
        jm.fit_groups(lambda t, rows, m: rows["x"] @ t["b"], init, data, strata)
    with pytest.raises(ValueError, match="at least 2 groups"):
        jm.fit_groups(clogit, init, data, np.zeros(len(strata)), cov="cluster")
    with pytest.raises(ValueError, match="must be concrete"):
        jax.jit(lambda g: jm.fit_groups(clogit, init, data, g).coef)(jnp.asarray(strata))
    with pytest.raises(ValueError, match="unknown cov"):
        jm.fit_groups(clogit, init, data, strata, cov="hc3")
    with pytest.raises(ValueError, match="missing labels"):
        labels = np.array([f"s{s}" for s in strata], dtype=object)
        labels[3] = None
        jm.fit_groups(clogit, init, data, labels)


def test_factorize_codes():
    codes, labels = factorize(np.array(["b", "a", "b", "c"]), 4)
    assert list(labels) == ["a", "b", "c"] and list(codes) == [1, 0, 1, 2]
