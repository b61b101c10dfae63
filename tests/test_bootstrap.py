"""jm.bootstrap against R `boot` on the same resamples (tests/reference/bootstrap/), against a loop of
ordinary refits, the score and parametric kinds against their asymptotics, and bad input.

One logit model shape (birthwt, N = 189, 5 coefficients) carries the R comparisons, the refit loop,
the jackknife and the failure paths, so its refit program compiles once for the file.
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
from jaxmle._bootresult import BootstrapResult, norm_inter
from jaxmle._bootstrap import resample_indices
from jaxmle._montecarlo import _replication_keys
from jaxmle._results import replace

REFERENCE = Path(__file__).parent / "reference"
FORMULA = "low ~ age + lwt + smoke + ui"
# R's glm (epsilon 1e-14) and jaxmle (scaled gradient 1e-16) converge far below this; an absolute
# floor of 1e-7 bootstrap standard errors for coefficients near 0
REPLICATE_RTOL, SE_FLOOR = 1e-7, 1e-7
# R's jackknife values are (n - 1) x differences of two refits: R's refit error times 188
JACKKNIFE_TOL = 1e-6
# two fits of one data set from different starts stop within the convergence tolerance (scaled
# gradient 1e-12: ~1e-6 standard errors) of the maximum
SAME_FIT_SE = 1e-5
# the refit program's batch size for this model (a power of two), shared by every call in the file
BATCH = 256
# interval ends: order statistics of replications equal to ~1e-9, times interpolation weights
CI_TOL = 1e-7
# the same formula on the same numbers (R's replications): only rounding differs
ARITHMETIC_TOL = 1e-12


def assert_same_fit(a, b, se):
    """Two estimates of one model on one data set, to SAME_FIT_SE standard errors."""
    err = np.abs(np.asarray(a) - np.asarray(b)) / np.asarray(se)
    assert err.max() <= SAME_FIT_SE, f"differ by {err.max():.3g} standard errors"


@pytest.fixture(scope="module")
def fx():
    return json.loads((REFERENCE / "bootstrap" / "r_boot_birthwt.json").read_text())


@pytest.fixture(scope="module")
def birthwt(fx):
    return pd.read_csv(REFERENCE / fx["dataset"])


@pytest.fixture(scope="module")
def res(birthwt):
    out = jm.glm(FORMULA, birthwt, family="binomial")
    assert bool(out.converged)
    return out


@pytest.fixture(scope="module")
def replayed(res, fx):
    """R's 999 resamples replayed by jaxmle (R's indices are 1-based)."""
    return jm.bootstrap(
        res, indices=np.asarray(fx["indices"]) - 1, progress=False, batch_size=BATCH
    )


def test_names_and_estimate(res, fx, replayed):
    assert replayed.names == tuple(n.strip("()") for n in fx["names"])
    np.testing.assert_allclose(replayed.estimate, fx["t0"], rtol=REPLICATE_RTOL)


def test_replications_equal_r_boot(replayed, fx):
    assert replayed.n_failed == 0
    t = np.asarray(fx["t"])
    err = np.abs(replayed.replicates - t) / (REPLICATE_RTOL * np.abs(t) + SE_FLOOR * t.std(axis=0))
    assert err.max() <= 1.0, f"replication {np.unravel_index(err.argmax(), t.shape)} differs"
    se = np.asarray(list(replayed.se.values()))
    np.testing.assert_allclose(se, t.std(axis=0, ddof=1), rtol=1e-6)


def test_intervals_equal_r_boot_ci(replayed, fx):
    """percentile, basic and BCa (L = R's estfun %*% bread) ends, levels 0.95 and 0.90."""
    for j, name in enumerate(replayed.names):
        for ref in fx["ci"][j]:
            for method, key in (("percentile", "percentile"), ("basic", "basic"),
                                ("bca", "bca_inf")):  # fmt: skip
                lo, hi = replayed.ci(method, ref["level"])
                got = np.array([lo[name], hi[name]])
                scale = np.asarray(fx["t"])[:, j].std()
                np.testing.assert_allclose(
                    got, ref[key], atol=CI_TOL * scale, err_msg=f"{name} {method} {ref['level']}"
                )


def test_interval_arithmetic_on_r_replications(fx):
    """R's own replications and influence values through jaxmle's interval formulas."""
    t, L = np.asarray(fx["t"]), np.asarray(fx["L_jack"])
    k = t.shape[1]
    bs = BootstrapResult(
        estimate=np.asarray(fx["t0"]), replicates=t, status=np.zeros(len(t), np.int32),
        n_iter=np.zeros(len(t), np.int32), influence=L, fit_cov=np.eye(k),
        free=np.ones(k, bool), names=tuple(fx["names"]),
        params_def=(jax.tree.structure(list(range(k))), ((),) * k), kind="pairs", detail="",
        cov_type="",
    )  # fmt: skip
    for j in range(k):
        for ref in fx["ci"][j]:
            lo, hi = bs.ci("bca", ref["level"])
            np.testing.assert_allclose([lo[j], hi[j]], ref["bca_jack"], rtol=ARITHMETIC_TOL)
            lo, hi = bs.ci("percentile", ref["level"])
            np.testing.assert_allclose([lo[j], hi[j]], ref["percentile"], rtol=ARITHMETIC_TOL)


def test_influence_values_equal_r(res, replayed, fx, birthwt):
    """Infinitesimal jackknife = R's estfun(m) %*% bread(m) / n; the jackknife = R's empinf."""
    n = len(birthwt)
    np.testing.assert_allclose(replayed.influence * n, fx["L_inf"], rtol=1e-6, atol=1e-9)
    jack = jm.bootstrap(res, 20, key=0, progress=False, influence="jackknife", batch_size=BATCH)
    L = np.asarray(fx["L_jack"])
    assert np.all(np.abs(jack.influence - L) <= JACKKNIFE_TOL * np.abs(L).max(axis=0))


def test_norm_inter_edges():
    t = np.arange(1.0, 10.0)  # R = 9: (R+1) alpha = 10 alpha
    np.testing.assert_array_equal(norm_inter(t, [0.05, 0.5, 0.99]), [1.0, 5.0, 9.0])
    mid = norm_inter(t, [0.25])[0]  # between t_(2) and t_(3) on the normal scale
    assert 2.0 < mid < 3.0


def test_same_replications_as_a_refit_loop(res, birthwt):
    """The key-driven resamples are `resample_indices(fold_in(key, r))`; refitting each resampled
    frame with jm.glm gives the same estimates."""
    key = jax.random.key(3)
    bs = jm.bootstrap(res, 4, key=key, progress=False, batch_size=BATCH)
    keys = _replication_keys(key, jnp.arange(4))
    for r in range(4):
        idx = np.asarray(resample_indices(keys[r], len(birthwt)))
        again = jm.glm(FORMULA, birthwt.iloc[idx].reset_index(drop=True), family="binomial")
        assert_same_fit(bs.replicates[r], again.coef, np.sqrt(np.diagonal(again.cov)))


def test_g_of_theta(replayed):
    """Percentile intervals are equivariant: at R = 999 and level 0.95 the ends are exact order
    statistics, so the interval of exp(b) is exp of the interval of b."""
    lo, hi = replayed.ci("percentile", 0.95)
    glo, ghi = replayed.ci("percentile", 0.95, g=lambda p: jnp.exp(p["smoke"]))
    np.testing.assert_allclose([glo, ghi], np.exp([lo["smoke"], hi["smoke"]]), rtol=1e-12)
    odds = replayed.apply(lambda p: {"or_smoke": jnp.exp(p["smoke"])})
    assert odds.names == ("or_smoke",)
    G = np.exp(replayed.estimate[3])
    np.testing.assert_allclose(odds.influence[:, 0], G * replayed.influence[:, 3], rtol=1e-12)
    assert float(odds.se["or_smoke"]) > 0


def test_failures_counted_and_early_stop(res, fx, birthwt):
    """Resamples without the 14 mothers with urinary irritability and a normal-weight baby: every
    ui mother in them has a low-weight baby, the MLE does not exist (quasi-complete separation).
    They are counted by status and left out; more failures than max_failed stop the bootstrap."""
    pool = np.flatnonzero(~((birthwt["ui"] == 1) & (birthwt["low"] == 0)).to_numpy())
    rng = np.random.default_rng(1)
    separated = pool[rng.integers(0, len(pool), (5, len(birthwt)))]
    idx = np.concatenate([separated, np.asarray(fx["indices"])[:15] - 1])
    bs = jm.bootstrap(res, indices=idx, progress=False, batch_size=BATCH)
    np.testing.assert_array_equal(np.flatnonzero(~bs.converged), np.arange(5))
    assert set(bs.failures()) == {jm.Status.SEPARATION}
    np.testing.assert_allclose(bs.replicates[5:], np.asarray(fx["t"])[:15], rtol=1e-6)
    text = bs.summary()
    assert "5 failed" in text and "separation: replications 0, 1, 2, 3, 4" in text
    with pytest.raises(RuntimeError, match=r"5 of the first 20 pairs replications failed") as e:
        jm.bootstrap(res, indices=idx, progress=False, max_failed=0.2, batch_size=BATCH)
    assert len(e.value.partial["coef"]) == 20


@pytest.mark.slow
def test_separation_where_r_diverges(fx, birthwt):
    """With ht, R's glm returns diverged coefficients in 10 of its resamples (warning "fitted
    probabilities numerically 0 or 1"); jaxmle flags exactly those as separation."""
    res_ht = jm.glm(fx["formula_ht"], birthwt, family="binomial")
    diverged = np.flatnonzero(np.abs(np.asarray(fx["t_ht"])).max(axis=1) > 10)
    bs = jm.bootstrap(res_ht, indices=np.asarray(fx["indices"]) - 1, progress=False)
    np.testing.assert_array_equal(np.flatnonzero(~bs.converged), diverged)
    assert set(bs.failures()) == {jm.Status.SEPARATION}
    ok = bs.converged
    t_ht = np.asarray(fx["t_ht"])[ok]
    err = np.abs(bs.replicates[ok] - t_ht) / (1e-6 * np.abs(t_ht) + SE_FLOOR * t_ht.std(axis=0))
    assert err.max() <= 1.0


def test_presentation(replayed):
    frame = replayed.to_frame("percentile", 0.9)
    assert list(frame.index) == list(replayed.names)
    lo, hi = replayed.ci("percentile", 0.9)
    np.testing.assert_array_equal(frame["ci_upper"], [hi[n] for n in replayed.names])
    np.testing.assert_array_equal(frame["ci_lower"], [lo[n] for n in replayed.names])
    text = replayed.summary()
    assert "999 replications" in text and "BCa" in text
    fig = replayed.plot()
    assert len([a for a in fig.axes if a.get_visible()]) == len(replayed.names)


# ---------------------------------------------------------------- cluster, score, parametric


def normal_logpdf(theta, obs):
    r = obs["y"] - obs["x"] @ theta["b"]
    return -0.5 * (jnp.log(2 * jnp.pi) + 2 * theta["log_s"] + r**2 * jnp.exp(-2 * theta["log_s"]))


@pytest.fixture(scope="module")
def petersen():
    """50 firms x 10 years of the Petersen data: equal clusters, so a resample keeps N."""
    df = pd.read_csv(REFERENCE / "data" / "petersen.csv")
    df = df[df["firm"] <= 50].reset_index(drop=True)
    data = {"x": np.column_stack([np.ones(len(df)), df["x"]]), "y": df["y"].to_numpy()}
    return data, df["firm"].to_numpy()


@pytest.fixture(scope="module")
def clustered(petersen):
    data, firm = petersen
    return jm.fit(normal_logpdf, {"b": np.zeros(2), "log_s": 0.0}, data, groups=firm,
                  cov="cluster")  # fmt: skip


@pytest.mark.slow
def test_cluster_bootstrap_equals_a_refit_loop(clustered, petersen):
    data, firm = petersen
    key = jax.random.key(5)
    bs = jm.bootstrap(clustered, 3, key=key, kind="cluster", progress=False)
    codes = np.unique(firm, return_inverse=True)[1]
    keys = _replication_keys(key, jnp.arange(3))
    for r in range(3):
        drawn = np.asarray(resample_indices(keys[r], 50))
        rows = np.concatenate([np.flatnonzero(codes == g) for g in drawn])
        again = jm.fit(normal_logpdf, {"b": np.zeros(2), "log_s": 0.0},
                       jax.tree.map(lambda a, rows=rows: a[rows], data), groups=firm[rows],
                       cov="cluster")  # fmt: skip
        assert_same_fit(bs.replicates[r], again.coef, np.sqrt(np.diagonal(again.cov)))


def test_score_bootstrap_rows_match_the_sandwich(res):
    """Kline-Santos per row: Var(theta*) = sum_i L_i L_i' = the HC0 sandwich A^-1 B A^-1."""
    bs = jm.bootstrap(res, 4000, key=1, kind="score", progress=False)
    assert bs.influence.shape == (189, 5)
    target = np.sqrt(np.diagonal(np.asarray(res.with_cov("sandwich").cov)))
    np.testing.assert_allclose(np.sqrt(np.sum(bs.influence**2, 0)), target, rtol=1e-10)
    sd = np.array([float(bs.se[n]) for n in bs.names])
    # Monte Carlo error of an sd over R draws: ~ 1/sqrt(2R) = 1.1%; 5 of those
    np.testing.assert_allclose(sd, target, rtol=0.06)


@pytest.mark.slow
def test_score_bootstrap_matches_the_sandwich(clustered):
    """Kline-Santos: Var(theta*) = sum_g L_g L_g' = the cluster sandwich without G/(G-1)."""
    bs = jm.bootstrap(clustered, 4000, key=1, kind="score", progress=False)
    assert bs.influence.shape == (50, 3)
    target = np.sqrt(np.diagonal(np.asarray(clustered.cov)) * 49 / 50)
    np.testing.assert_allclose(np.sqrt(np.sum(bs.influence**2, 0)), target, rtol=1e-10)
    sd = np.concatenate([np.ravel(v) for v in jax.tree.leaves(bs.se)])
    # Monte Carlo error of an sd over R draws: ~ 1/sqrt(2R) = 1.1%; 5 of those
    np.testing.assert_allclose(sd, target, rtol=0.06)
    rows = jm.bootstrap(clustered, 10, key=1, kind="score", wild="mammen", progress=False,
                        groups=np.arange(500))  # fmt: skip
    assert rows.influence.shape == (500, 3)


@pytest.mark.slow
def test_parametric_bootstrap_equals_a_refit_loop(clustered, petersen):
    data, firm = petersen

    def simulate(key, theta):
        mean = data["x"] @ theta["b"]
        return {
            "x": data["x"],
            "y": mean + jnp.exp(theta["log_s"]) * jax.random.normal(key, (500,)),
        }

    key = jax.random.key(11)
    bs = jm.bootstrap(clustered, 3, key=key, kind="parametric", simulate=simulate, progress=False)
    keys = _replication_keys(key, jnp.arange(3))
    for r in range(3):
        with jax.enable_x64(True):  # the test's own simulation in float64, as the bootstrap's
            again = jm.fit(normal_logpdf, {"b": np.zeros(2), "log_s": 0.0},
                           simulate(keys[r], clustered.params), groups=firm, cov="cluster")  # fmt: skip
        assert_same_fit(bs.replicates[r], again.coef, np.sqrt(np.diagonal(again.cov)))


# ---------------------------------------------------------------- bad input


def test_bad_input(res):
    with pytest.raises(ValueError, match="unknown bootstrap kind"):
        jm.bootstrap(res, 10, kind="wild")
    with pytest.raises(ValueError, match="needs simulate="):
        jm.bootstrap(res, 10, kind="parametric")
    with pytest.raises(ValueError, match="pass groups="):
        jm.bootstrap(res, 10, kind="cluster")
    with pytest.raises(ValueError, match=r"indices must be an \(R, 189\)"):
        jm.bootstrap(res, indices=np.zeros((3, 10), int))
    with pytest.raises(ValueError, match="0-based"):
        jm.bootstrap(res, indices=np.full((3, 189), 189))
    with pytest.raises(ValueError, match="n_boot must be an int >= 2"):
        jm.bootstrap(res, 1)
    with pytest.raises(ValueError, match="unknown interval method"):
        jm.bootstrap(res, 5, kind="score", progress=False).ci("studentized")
    with pytest.raises(ValueError, match="shapes of the data"):
        jm.bootstrap(res, 5, kind="parametric", progress=False,
                     simulate=lambda k, t: {"x": jnp.zeros((3, 2)), "y": jnp.zeros(3)})  # fmt: skip
    with pytest.raises(jax.errors.ConcretizationTypeError) as e:  # JAX's error, with a note
        jm.bootstrap(res, 5, kind="parametric", simulate=lambda k, t: float(jax.tree.leaves(t)[0]))
    assert "simulate(key, theta)" in "".join(
        getattr(e.value, "__notes__", ["simulate(key, theta)"])
    )
    batched = jax.tree.map(lambda x: jnp.stack([x, x]), res)
    with pytest.raises(ValueError, match="one host-side fit"):
        jm.bootstrap(batched, 10)
    stopped = replace(res, status=jnp.asarray(jm.Status.MAX_ITER, jnp.int32))
    with pytest.raises(ValueError, match="converged fit"):
        jm.bootstrap(stopped, 10)


# ---------------------------------------------------------------- coverage by simulation


@pytest.mark.slow
def test_coverage_by_simulation():
    """A Monte Carlo study of the bootstrap, vmap of vmap: 400 simulated logit data sets (N = 200),
    each fitted and bootstrapped (199 pairs replications) inside ONE compiled program; the
    percentile and BCa intervals cover the true coefficients at their level within 3 Monte Carlo
    standard errors."""
    from jaxmle._bootstrap import _Counts, _drawn, _row_scores
    from jaxmle._refits import ProblemKey, _batch, estimate

    n, n_sets, n_boot = 200, 400, 199
    truth = {"b0": 0.3, "b": np.array([0.8, -0.5])}

    def simulate(key):
        kx, ky = jax.random.split(key)
        x = jax.random.normal(kx, (n, 2))
        p = jax.nn.sigmoid(truth["b0"] + x @ truth["b"])
        return {"x": x, "y": jax.random.bernoulli(ky, p).astype(x.dtype)}

    def logit(theta, obs):
        eta = theta["b0"] + obs["x"] @ theta["b"]
        return obs["y"] * eta - jnp.logaddexp(0.0, eta)

    init = {"b0": 0.0, "b": np.zeros(2)}
    template = jm.fit(logit, init, jax.tree.map(np.asarray, simulate(jax.random.key(99))))
    key = ProblemKey(template.problem, groups=None, n_groups=0, cov="hessian")
    draw = _Counts(n, template.problem.logpdf, template.problem.spec.unravel)

    def one(k):
        data = simulate(k)
        res = jm.fit(logit, init, data)
        theta = res.coef
        scores = _row_scores(theta, data, key=key)
        L = scores @ jnp.linalg.inv(res.information)  # the infinitesimal jackknife, rows
        boot_keys = _replication_keys(jax.random.fold_in(k, 1), jnp.arange(n_boot))
        shared = (theta, L, data, None, jnp.arange(n, dtype=jnp.int32))
        out = _batch(_drawn(boot_keys, n_units=n), shared, key=key, free=res.free, draw=draw,
                     program=estimate)  # fmt: skip
        return theta, res.status, out["coef"], out["status"], L

    with jax.enable_x64(True):
        keys = _replication_keys(jax.random.key(2026), jnp.arange(n_sets))
        theta, status, reps, rep_status, L = jax.jit(jax.vmap(one))(keys)
    names = ("b[0]", "b[1]", "b0")
    true = np.array([truth["b"][0], truth["b"][1], truth["b0"]])  # ravel order: b, then b0
    covered = {"percentile": [], "bca": []}
    for s in range(n_sets):
        if int(status[s]) != 0:
            continue
        bs = BootstrapResult(
            estimate=np.asarray(theta[s]), replicates=np.asarray(reps[s]),
            status=np.asarray(rep_status[s]), n_iter=np.zeros(n_boot, np.int32),
            influence=np.asarray(L[s]), fit_cov=np.eye(3), free=np.ones(3, bool), names=names,
            params_def=(jax.tree.structure([0, 0, 0]), ((),) * 3), kind="pairs", detail="",
            cov_type="",
        )  # fmt: skip
        for method in covered:
            lo, hi = bs.ci(method, 0.95)
            covered[method].append((np.asarray(lo) <= true) & (true <= np.asarray(hi)))
    for method, hits in covered.items():
        rate = np.mean(hits, axis=0)
        band = 3 * np.sqrt(0.95 * 0.05 / len(hits))
        assert np.all(np.abs(rate - 0.95) <= band), f"{method} coverage {rate} (band +-{band:.3f})"
