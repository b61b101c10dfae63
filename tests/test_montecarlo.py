"""monte_carlo(): closed forms of small-sample bias, coverage and test size; batching; failures.

Every check compares with a truth computed without jaxmle's Monte Carlo machinery: closed forms for
the normal model (MLE of the variance, t-based coverage and LR size), eager `jm.fit` calls on the
same simulated data, or the replication's own random draws. Monte Carlo tolerances are stated in
Monte Carlo standard errors (MCSE) of the quantity checked.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from models import logit
from scipy import stats

import jaxmle as jm
from jaxmle import _montecarlo

# A check at 4 MCSE fails by chance in ~1 of 16,000 runs (two-sided normal tail).
N_MCSE = 4.0
Z95 = stats.norm.ppf(0.975)

N_NORMAL, MU, SIGMA2 = 10, 1.0, 2.0
THETA_NORMAL = {"mu": MU, "sigma2": SIGMA2}


def normal_logpdf(theta, obs):
    resid = obs["y"] - theta["mu"]
    return -0.5 * (jnp.log(2 * jnp.pi * theta["sigma2"]) + resid**2 / theta["sigma2"])


def simulate_normal(key, theta):
    return {"y": theta["mu"] + jnp.sqrt(theta["sigma2"]) * jax.random.normal(key, (N_NORMAL,))}


N_LOGIT, G = 400, 20
THETA_LOGIT = {"b0": 0.3, "b": jnp.array([0.8, -0.5])}


def simulate_logit(key, theta):
    kx, ky = jax.random.split(key)
    x = jax.random.normal(kx, (N_LOGIT, 2))
    y = jax.random.bernoulli(ky, jax.nn.sigmoid(theta["b0"] + x @ theta["b"]))
    return {"x": x, "y": y.astype(x.dtype), "firm": jnp.arange(N_LOGIT) % G}


def simulate_sometimes_separated(key, theta):
    """A quarter of the data sets (by the key's third draw) are completely separated on x[:, 0]."""
    kx, ky, ks = jax.random.split(key, 3)
    x = jax.random.normal(kx, (60, 2))
    y = jax.random.bernoulli(ky, jax.nn.sigmoid(theta["b0"] + x @ theta["b"]))
    return {"x": x, "y": jnp.where(jax.random.uniform(ks) < 0.25, x[:, 0] > 0, y).astype(x.dtype)}


@pytest.fixture(scope="module")
def normal_study():
    return jm.monte_carlo(
        simulate_normal, normal_logpdf, THETA_NORMAL, 4000, jax.random.key(7), fixed=["mu"],
        batch_size=1000, progress=False,
    )  # fmt: skip


def test_variance_mle_bias_is_minus_sigma2_over_n(normal_study):
    """E[RSS/N] - sigma2 = -sigma2/N and sd(RSS/N) = sigma2 sqrt(2 (N-1)) / N (chi-squared)."""
    res = normal_study
    assert res.n_failed == 0 and res.n_reps == 4000
    i_mu, i_s2 = res.names.index("mu"), res.names.index("sigma2")
    sd_s2 = SIGMA2 * math.sqrt(2 * (N_NORMAL - 1)) / N_NORMAL
    mcse = sd_s2 / math.sqrt(res.n_reps)
    assert abs(res.bias()[i_s2] - (-SIGMA2 / N_NORMAL)) < N_MCSE * mcse
    assert abs(res.bias()[i_mu]) < N_MCSE * math.sqrt(SIGMA2 / N_NORMAL / res.n_reps)
    # relative MCSE of a sample sd is sqrt((kurtosis - 1) / (4R)); chi2_9 has kurtosis 3 + 12/9
    rel = math.sqrt((3 + 12 / (N_NORMAL - 1) - 1) / (4 * res.n_reps))
    assert abs(res.sd()[i_s2] / sd_s2 - 1) < N_MCSE * rel
    frame = res.to_frame()
    np.testing.assert_allclose(frame.loc["sigma2", "bias"], res.bias()[i_s2], rtol=1e-12)
    # RMSE straight from the replications (numpy), not from the result's own bias and sd
    raw = np.asarray(res.estimates) - np.asarray(res.theta_true)
    np.testing.assert_allclose(frame["rmse"], np.sqrt(np.mean(raw**2, axis=0)), rtol=1e-10)


def test_small_sample_coverage_and_lr_size_match_the_t_distribution(normal_study):
    """With sigma2_hat = RSS/N, (mu_hat - mu)/se_hessian = T sqrt(N/(N-1)), T ~ t(N-1), so the
    Hessian interval covers with P(|T| <= z sqrt((N-1)/N)), and LR = N log(1 + T^2/(N-1))."""
    res, n = normal_study, N_NORMAL
    cover = 2 * stats.t.cdf(Z95 * math.sqrt((n - 1) / n), n - 1) - 1  # 0.904
    c, used = res.coverage("hessian")
    i_mu = res.names.index("mu")
    assert used[i_mu] == res.n_reps
    assert abs(c[i_mu] - cover) < N_MCSE * math.sqrt(cover * (1 - cover) / res.n_reps)
    crit = math.sqrt((n - 1) * (math.exp(stats.chi2.ppf(0.95, 1) / n) - 1))
    size = 2 * stats.t.sf(crit, n - 1)  # 0.070
    rates = res.rejection_rates()
    assert abs(rates["lr"][0] - size) < N_MCSE * math.sqrt(size * (1 - size) / res.n_reps)
    # the Wald test of mu = mu_0 rejects exactly when the Hessian interval misses
    assert rates["wald_restriction[hessian]"][0] == pytest.approx(1 - c[i_mu], abs=1e-12)
    text = res.summary()
    for part in ("4000 replications", "0 failed", "Coverage", "LR, mu held (df 1)", "sandwich"):
        assert part in text


@pytest.mark.usefixtures("x64")  # draws rebuilt here as monte_carlo makes them: in float64
@pytest.mark.slow  # the default run keeps a cheaper check of this feature
def test_replications_do_not_depend_on_batch_size_or_count_and_equal_eager_fits(normal_study):
    """Replication r uses fold_in(key, r): 10 replications in padded batches of 4 equal the first
    10 of the 4,000-replication study (batches of 1,000), and eager fits of the same data."""
    key = jax.random.key(7)
    res = jm.monte_carlo(simulate_normal, normal_logpdf, THETA_NORMAL, 10, key, fixed=["mu"],
                         batch_size=4, progress=False)  # fmt: skip
    assert res.estimates.shape == (10, 2) and res.status.shape == (10,)
    first = jax.tree.map(lambda x: x[:10], normal_study)
    for x, y in zip(jax.tree.leaves(res), jax.tree.leaves(first), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-12)
    for r in (0, 9):
        data = simulate_normal(jax.random.fold_in(key, r), jax.tree.map(jnp.asarray, THETA_NORMAL))
        full = jm.fit(normal_logpdf, THETA_NORMAL, data)
        held = jm.fit(normal_logpdf, THETA_NORMAL, data, fixed={"mu": MU})
        np.testing.assert_allclose(res.estimates[r], full.coef, rtol=1e-10)
        se_opg = np.sqrt(np.diag(full.covariance("opg")))
        np.testing.assert_allclose(res.se["opg"][r], se_opg, rtol=1e-8)
        np.testing.assert_allclose(
            res.lr[r], 2 * (full.loglik - held.loglik), rtol=1e-8, atol=1e-10
        )


@pytest.mark.slow  # the default run keeps a cheaper check of this feature
def test_logit_intervals_cover_for_every_kind_and_cluster_ids_come_from_the_data():
    res = jm.monte_carlo(simulate_logit, logit, THETA_LOGIT, 1000, 11, covs=("hessian", "sandwich",
                         "cluster"), groups="firm", n_groups=G, progress=False)  # fmt: skip
    assert res.n_failed == 0
    band = N_MCSE * math.sqrt(0.95 * 0.05 / res.n_reps)
    for kind in ("hessian", "sandwich"):
        np.testing.assert_array_less(np.abs(res.coverage(kind)[0] - 0.95), band)
    # independent observations in 20 clusters: the cluster SE estimates the same sd, more noisily
    np.testing.assert_allclose(res.mean_se("cluster"), res.sd(), rtol=0.1)
    np.testing.assert_allclose(res.mean_se("hessian"), res.sd(), rtol=0.1)


@pytest.mark.usefixtures("x64")  # draws rebuilt here as monte_carlo makes them: in float64
@pytest.mark.slow  # the default run keeps a cheaper check of this feature
def test_failed_replications_are_counted_listed_and_left_out():
    key, n_reps = jax.random.key(5), 40
    theta = {"b0": 0.0, "b": jnp.array([1.0, 0.5])}
    res = jm.monte_carlo(simulate_sometimes_separated, logit, theta, n_reps, key, batch_size=16,
                         covs="hessian", progress=False)  # fmt: skip
    draws = [jax.random.split(jax.random.fold_in(key, r), 3)[2] for r in range(n_reps)]
    separated = [bool(jax.random.uniform(k) < 0.25) for k in draws]
    assert 0 < sum(separated) < n_reps
    np.testing.assert_array_equal(~res.converged, separated)
    assert res.n_failed == sum(separated)
    assert sum(len(i) for i in res.failures().values()) == res.n_failed
    assert jm.Status.SEPARATION in res.failures()
    ok = np.asarray(res.estimates)[~np.asarray(separated)]
    np.testing.assert_allclose(res.bias(), ok.mean(0) - np.asarray([1.0, 0.5, 0.0]), rtol=1e-12)
    assert f"{res.n_failed} failed" in res.summary() and "separation" in res.summary()


def test_bad_input_is_refused_before_any_work():
    def simulate_four_columns(key, theta):
        return {"x": jax.random.normal(key, (50, 4)), "y": jnp.zeros(50)}

    def simulate_ragged(key, theta):
        return {"x": jnp.zeros((50, 2)), "y": jnp.zeros(49)}

    mc = jm.monte_carlo
    with pytest.raises(ValueError, match=r"do not fit the log-density.*\(50, 4\)"):
        mc(simulate_four_columns, logit, THETA_LOGIT, 10, 0)
    with pytest.raises(ValueError, match=r"leading observation axis.*\(49,\)"):
        mc(simulate_ragged, logit, THETA_LOGIT, 10, 0)
    with pytest.raises(ValueError, match="n_reps"):
        mc(simulate_logit, logit, THETA_LOGIT, 0, 0)
    with pytest.raises(ValueError, match="batch_size"):
        mc(simulate_logit, logit, THETA_LOGIT, 10, 0, batch_size=0)
    with pytest.raises(ValueError, match="unknown cov 'huber'"):
        mc(simulate_logit, logit, THETA_LOGIT, 10, 0, covs=("hessian", "huber"))
    with pytest.raises(ValueError, match="groups"):
        mc(simulate_logit, logit, THETA_LOGIT, 10, 0, covs="cluster")
    with pytest.raises(ValueError, match="n_groups"):
        mc(simulate_logit, logit, THETA_LOGIT, 10, 0, groups="firm")
    with pytest.raises(ValueError, match="not in the simulated data"):
        mc(simulate_logit, logit, THETA_LOGIT, 10, 0, groups="plant", n_groups=G)
    with pytest.raises(KeyError, match="sigma"):
        mc(simulate_logit, logit, THETA_LOGIT, 10, 0, fixed=["sigma"])
    with pytest.raises(ValueError, match="broadcast"):
        mc(simulate_logit, logit, THETA_LOGIT, 10, 0, fixed={"b": jnp.zeros(3)})
    with pytest.raises(TypeError, match="key"):
        mc(simulate_logit, logit, THETA_LOGIT, 10, "seed")
    with pytest.raises(ValueError, match="init"):
        mc(simulate_logit, logit, THETA_LOGIT, 10, 0, init={"b0": 0.0, "b": jnp.zeros(3)})


def test_a_batch_too_large_for_memory_is_refused_or_shrunk(monkeypatch, normal_study):
    """A batch_size given that would not fit is refused naming one that does; the automatic one is
    shrunk (here from 10 to 4 replications) and the replications stay the same."""
    monkeypatch.setattr(_montecarlo, "_available_bytes", lambda device: 850)
    monkeypatch.setattr(
        _montecarlo, "_program_bytes", lambda c: 1000 * c.args_info[0][0].shape[0] // 10
    )
    with pytest.raises(MemoryError, match=r"batch_size=4 or less"):
        jm.monte_carlo(simulate_normal, normal_logpdf, THETA_NORMAL, 10, 7, fixed=["mu"],
                       batch_size=10, progress=False)  # fmt: skip
    res = jm.monte_carlo(simulate_normal, normal_logpdf, THETA_NORMAL, 10, jax.random.key(7),
                         fixed=["mu"], progress=False)  # fmt: skip
    np.testing.assert_allclose(res.estimates, normal_study.estimates[:10], rtol=1e-12)


def test_plots_show_every_parameter_and_kind(normal_study):
    pytest.importorskip("matplotlib")
    fig = normal_study.plot_distributions("sandwich")
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == list(normal_study.names)
    fig = normal_study.plot_coverage()
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert set(normal_study.covs) <= set(labels)


@pytest.mark.slow  # the default run keeps a cheaper check of this feature
def test_batches_split_over_two_devices_give_the_same_replications(normal_study):
    """With 2 CPU devices (a fresh process) each batch is split over both; replication r is still
    replication r of the single-device study."""
    import json
    import os
    import subprocess
    import sys

    code = """
import json, jax, sys
sys.path.insert(0, sys.argv[1])
import test_montecarlo as t
assert len(jax.devices()) == 2
res = t.jm.monte_carlo(t.simulate_normal, t.normal_logpdf, t.THETA_NORMAL, 11, jax.random.key(7),
                       fixed=["mu"], batch_size=3, progress=False)
print(json.dumps({"estimates": res.estimates.tolist(), "lr": res.lr.tolist(),
                  "se": res.se["sandwich"].tolist()}))
"""
    # simulated CPU devices (JAX_PLATFORMS=cpu: on a GPU machine the default backend is the GPU)
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_PLATFORMS": "cpu",
    }
    here = os.path.dirname(__file__)
    out = subprocess.run([sys.executable, "-W", "error", "-c", code, here], capture_output=True,
                         text=True, env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(got["estimates"], normal_study.estimates[:11], rtol=1e-12)
    np.testing.assert_allclose(got["se"], normal_study.se["sandwich"][:11], rtol=1e-12)
    np.testing.assert_allclose(got["lr"], normal_study.lr[:11], rtol=1e-10, atol=1e-12)
