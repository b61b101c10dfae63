"""fit(): closed forms, invariants, jit/vmap, retracing, and the status of numerical outcomes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from models import logit, normal, poisson, simulate_logit, simulate_normal

import jaxmle as jm

# Newton's final iterate is within ~1e-5 standard errors of the maximum at the default tol, and
# usually far closer; closed forms are exact, so agreement is limited by the solver, not by rounding.
EST_RTOL = 1e-8
# Covariances are functions of the estimate; they inherit its error with a factor of order one.
COV_RTOL = 1e-7
# Re-associating a sum over N terms (chunking, permuting rows) changes it by a few ulps per term.
SUM_RTOL = 1e-12


def _ols(data):
    x, y = data["x"], data["y"]
    beta = np.linalg.solve(x.T @ x, x.T @ y)
    rss = np.sum((y - x @ beta) ** 2)
    return beta, rss / len(y)


def test_normal_mle_is_ols_with_rss_over_n(rng):
    data = simulate_normal(rng, 500, 4)
    beta, sigma2 = _ols(data)
    n = len(data["y"])
    res = jm.fit(normal, {"b": jnp.zeros(4), "sigma2": 1.0}, data)
    assert bool(res.converged), res.message
    assert res.params["b"].dtype == jnp.float64
    np.testing.assert_allclose(res.params["b"], beta, rtol=EST_RTOL)
    np.testing.assert_allclose(res.params["sigma2"], sigma2, rtol=EST_RTOL)
    cov_beta = sigma2 * np.linalg.inv(data["x"].T @ data["x"])
    np.testing.assert_allclose(res.cov[:4, :4], cov_beta, rtol=COV_RTOL)
    np.testing.assert_allclose(res.se["sigma2"] ** 2, 2 * sigma2**2 / n, rtol=COV_RTOL)
    np.testing.assert_allclose(res.cov[:4, 4], 0.0, atol=1e-12 * sigma2)
    ll = -0.5 * n * (np.log(2 * np.pi * sigma2) + 1)
    np.testing.assert_allclose(res.loglik, ll, rtol=SUM_RTOL)


@pytest.mark.parametrize("method", ["newton", "bhhh", "bfgs"])
def test_every_method_reaches_the_same_maximum(rng, method):
    data = simulate_normal(rng, 400, 3)
    beta, sigma2 = _ols(data)
    res = jm.fit(normal, {"b": jnp.zeros(3), "sigma2": 1.0}, data, method=method, max_iter=500)
    assert bool(res.converged), res.message
    se = np.sqrt(np.diagonal(res.cov))
    np.testing.assert_allclose(res.params["b"], beta, rtol=1e-6, atol=1e-6 * se[:3].max())
    np.testing.assert_allclose(res.params["sigma2"], sigma2, rtol=1e-6)


def test_information_equality_at_the_true_parameters(rng):
    """At theta_0: E[u_i] = 0 and Var(u_i) = -E[H_i] (docs/theory.md), by simulation."""
    n, beta = 200_000, np.array([0.4, -0.3, 0.2])
    x = rng.normal(size=(n, 3))
    y = rng.poisson(np.exp(x @ beta)).astype(float)
    res = jm.fit(poisson, {"b": jnp.asarray(beta)}, {"x": x, "y": y}, max_iter=0)
    info, opg = np.asarray(res.information) / n, np.asarray(res.opg) / n
    # mean score: each component is a mean of n terms with variance info_jj, so 4 SEs bound it
    se_mean = np.sqrt(np.diagonal(info) / n)
    assert np.all(np.abs(np.asarray(res.score) / n) < 4 * se_mean)
    # Var(u_i) vs -E[H_i]: sampling error of a 4th-moment mean, ~1e-2 relative at this n
    np.testing.assert_allclose(opg, info, rtol=0.05, atol=0.02 * np.abs(info).max())


def test_chunked_sums_equal_the_one_shot_sums(rng):
    data = simulate_logit(rng, 10_007, 3)
    init = {"b0": 0.0, "b": jnp.zeros(3)}
    whole = jm.fit(logit, init, data, cov="sandwich", chunk_size=20_000)
    for chunk in (1024, 4096):
        part = jm.fit(logit, init, data, cov="sandwich", chunk_size=chunk)
        for field in ("coef", "loglik", "cov", "information", "opg"):
            a, b = getattr(part, field), getattr(whole, field)
            np.testing.assert_allclose(a, b, rtol=SUM_RTOL, err_msg=field)
        # the score at the maximum is rounding noise of a sum of N terms of size ~1
        np.testing.assert_allclose(part.score, whole.score, atol=1e-12 * 10_007)


def test_permuting_observations_changes_nothing(rng):
    data = simulate_logit(rng, 800, 3)
    perm = rng.permutation(800)
    init = {"b0": 0.0, "b": jnp.zeros(3)}
    a = jm.fit(logit, init, data, cov="sandwich")
    b = jm.fit(logit, init, {k: v[perm] for k, v in data.items()}, cov="sandwich")
    np.testing.assert_allclose(a.coef, b.coef, rtol=1e-9)
    np.testing.assert_allclose(a.cov, b.cov, rtol=1e-8)


def test_covariances_are_symmetric_psd_and_singletons_give_g_over_g_minus_1(rng):
    data = simulate_logit(rng, 300, 2)
    res = jm.fit(logit, {"b0": 0.0, "b": jnp.zeros(2)}, data, groups=np.arange(300))
    for kind in ("hessian", "opg", "sandwich", "cluster"):
        cov = np.asarray(res.covariance(kind))
        np.testing.assert_array_equal(cov, cov.T)
        assert np.linalg.eigvalsh(cov).min() > 0
    np.testing.assert_allclose(
        res.covariance("cluster"), np.asarray(res.covariance("sandwich")) * 300 / 299, rtol=1e-12
    )


def test_cluster_labels_may_be_strings_and_with_cov_switches_kind(rng):
    data = simulate_logit(rng, 400, 2)
    labels = np.array([f"firm{i % 37}" for i in range(400)])
    init = {"b0": 0.0, "b": jnp.zeros(2)}
    res = jm.fit(logit, init, data, cov="cluster", groups=labels)
    codes = np.unique(labels, return_inverse=True)[1]
    res2 = jm.fit(logit, init, data, groups=codes).with_cov("cluster")
    np.testing.assert_allclose(res.cov, res2.cov, rtol=1e-12)
    assert res2.cov_type == "cluster"
    np.testing.assert_allclose(res2.se["b"], np.sqrt(np.diagonal(res.cov))[:2], rtol=1e-12)


def test_frequency_weights_equal_replicated_rows(rng):
    data = simulate_logit(rng, 200, 2)
    w = rng.integers(1, 4, size=200)
    rep = {k: np.repeat(v, w, axis=0) for k, v in data.items()}
    init = {"b0": 0.0, "b": jnp.zeros(2)}
    a = jm.fit(logit, init, data, weights=w.astype(float), cov="sandwich")
    b = jm.fit(logit, init, rep, cov="sandwich")
    np.testing.assert_allclose(a.coef, b.coef, rtol=1e-9)
    np.testing.assert_allclose(a.cov, b.cov, rtol=1e-8)
    np.testing.assert_allclose(a.loglik, b.loglik, rtol=1e-12)
    assert float(a.n_obs) == w.sum()


# Under the user's own vmap with JAX's 64-bit flag off, jax.vmap hands the fit float32 copies of the
# numpy data; with float64 start values (numpy) the fit still computes in float64, but on data rounded
# to float32: it equals the loop within FLOAT32_SE standard errors. With the flag on it equals the
# loop to float64 rounding.
FLOAT32_SE = 1e-2


@pytest.mark.parametrize("flag", [True, False], ids=["x64", "default"])
def test_jit_equals_eager_and_vmap_equals_a_loop(rng, flag):
    sets = [simulate_logit(rng, 250, 2) for _ in range(4)]
    init = {"b0": 0.0, "b": np.zeros(2)}
    batch = jax.tree.map(lambda *xs: np.stack(xs), *sets)
    with jax.enable_x64(flag):
        batched = jax.vmap(lambda d: jm.fit(logit, init, d, cov="sandwich"))(batch)
        jitted = jax.jit(lambda d: jm.fit(logit, init, d, cov="sandwich"))(sets[0])
    assert batched.batch_shape == (4,)
    assert batched.coef.dtype == jitted.coef.dtype == np.float64
    assert bool(batched.converged.all()), "the tolerance follows the dtype the fit computes in"
    for i, d in enumerate([*sets, sets[0]]):
        one = jm.fit(logit, init, d, cov="sandwich")
        other = batched[i] if i < len(sets) else jitted
        if flag:
            np.testing.assert_allclose(other.coef, one.coef, rtol=1e-10)
            np.testing.assert_allclose(other.cov, one.cov, rtol=1e-9)
            assert int(other.n_iter) == int(one.n_iter)
        else:
            se = np.sqrt(np.diagonal(np.asarray(one.cov)))
            np.testing.assert_array_less(
                np.abs(np.asarray(other.coef) - np.asarray(one.coef)), FLOAT32_SE * se
            )
            np.testing.assert_allclose(other.cov, one.cov, rtol=1e-3)
    with pytest.raises(ValueError, match="batch of shape"):
        batched.summary()


@pytest.mark.usefixtures("x64")
def test_vmap_over_init_and_clusters_under_jit(rng):
    data = simulate_logit(rng, 300, 2)
    groups = rng.integers(0, 10, size=300)
    inits = {"b0": jnp.array([0.0, 0.5, -0.5]), "b": jnp.zeros((3, 2))}
    res = jax.vmap(lambda i: jm.fit(logit, i, data, cov="cluster", groups=groups, n_groups=10))(
        inits
    )
    ref = jm.fit(logit, {"b0": 0.0, "b": jnp.zeros(2)}, data, cov="cluster", groups=groups)
    for i in range(3):
        np.testing.assert_allclose(res[i].coef, ref.coef, rtol=1e-8)
        np.testing.assert_allclose(res[i].cov, ref.cov, rtol=1e-6)


def test_new_data_of_the_same_shape_does_not_retrace(rng):
    traces = []

    def counted(theta, obs):
        traces.append(1)
        return logit(theta, obs)

    init = {"b0": 0.0, "b": jnp.zeros(2)}
    jm.fit(counted, init, simulate_logit(rng, 500, 2))
    first = len(traces)
    jm.fit(counted, init, simulate_logit(rng, 500, 2))
    jm.fit(counted, {"b0": 0.1, "b": jnp.ones(2)}, simulate_logit(rng, 500, 2))
    assert first > 0
    assert len(traces) == first


def test_ill_scaled_covariates_and_poor_start_values(rng):
    n = 2000
    x = np.column_stack([1e4 * rng.normal(size=n), 1e-3 * rng.normal(size=n)])
    eta = 0.2 + x @ np.array([1e-4, 500.0])
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    res = jm.fit(logit, {"b0": 3.0, "b": jnp.array([1e-2, -1e3])}, {"x": x, "y": y})
    assert bool(res.converged), res.message
    import statsmodels.api as sm

    ref = sm.Logit(y, sm.add_constant(x)).fit(disp=0, tol=1e-12, maxiter=100)
    np.testing.assert_allclose(np.r_[res.params["b0"], res.params["b"]], ref.params, rtol=1e-6)
    np.testing.assert_allclose(np.sqrt(np.diagonal(res.cov))[[2, 0, 1]], ref.bse, rtol=1e-5)


def test_fixed_parameters_are_held_and_shown(rng):
    data = simulate_normal(rng, 300, 3)
    res = jm.fit(normal, {"b": jnp.zeros(3), "sigma2": 1.0}, data, fixed={"sigma2": 2.0})
    beta, _ = _ols(data)
    np.testing.assert_allclose(res.params["b"], beta, rtol=EST_RTOL)  # beta_hat free of sigma2
    assert float(res.params["sigma2"]) == 2.0 and float(res.se["sigma2"]) == 0.0
    np.testing.assert_allclose(
        res.cov[:3, :3], 2.0 * np.linalg.inv(data["x"].T @ data["x"]), rtol=COV_RTOL
    )
    assert res.n_params == 3 and res.information.shape == (4, 4)
    assert "(fixed)" in res.summary()


def test_summary_and_frame(rng):
    res = jm.fit(logit, {"b0": 0.0, "b": jnp.zeros(2)}, simulate_logit(rng, 300, 2))
    text = res.summary()
    for part in ("b0", "b[0]", "b[1]", "Log-likelihood", "AIC", "BIC", "converged", "newton"):
        assert part in text
    frame = res.to_frame()
    assert list(frame.index) == ["b[0]", "b[1]", "b0"]
    np.testing.assert_allclose(frame["std_err"], np.sqrt(np.diagonal(res.cov)), rtol=1e-14)
    np.testing.assert_allclose(
        frame["p_value"],
        [*jax.tree.leaves(res.pvalues)[0].tolist(), float(res.pvalues["b0"])],
        rtol=1e-12,
    )
    np.testing.assert_allclose(float(res.aic), -2 * float(res.loglik) + 6, rtol=1e-14)


# ---------------------------------------------------------------- numerical outcomes as status


def test_collinear_design_is_singular_with_nan_standard_errors(rng):
    data = simulate_normal(rng, 200, 3)
    data["x"] = np.column_stack([data["x"], data["x"][:, 1]])
    res = jm.fit(normal, {"b": jnp.zeros(4), "sigma2": 1.0}, data)
    assert int(res.status) == jm.Status.SINGULAR_INFORMATION
    assert not bool(res.converged)
    assert np.isnan(np.asarray(res.se["b"])).all()
    assert "singular" in res.summary()


def test_complete_and_quasi_complete_separation_are_reported(rng):
    x = rng.normal(size=(200, 2))
    y = (x[:, 0] > 0).astype(float)
    res = jm.fit(logit, {"b0": 0.0, "b": jnp.zeros(2)}, {"x": x, "y": y})
    assert int(res.status) == jm.Status.SEPARATION, res.message
    assert "separation" in res.summary()
    # quasi-complete: one category (x2 = 1) is all ones, the rest is mixed
    x2 = (rng.random(300) < 0.2).astype(float)
    x1 = rng.normal(size=300)
    yq = np.where(x2 == 1, 1.0, (rng.random(300) < 0.5).astype(float))
    res = jm.fit(logit, {"b0": 0.0, "b": jnp.zeros(2)}, {"x": np.column_stack([x1, x2]), "y": yq})
    assert int(res.status) == jm.Status.SEPARATION, res.message


def test_large_scale_response_is_not_mistaken_for_separation(rng):
    data = simulate_normal(rng, 500, 3, sigma=1e5)
    res = jm.fit(normal, {"b": jnp.zeros(3), "sigma2": 1.0}, data)
    assert bool(res.converged), res.message


def test_max_iter_is_reported(rng):
    res = jm.fit(logit, {"b0": 0.0, "b": jnp.zeros(2)}, simulate_logit(rng, 300, 2), max_iter=1)
    assert int(res.status) == jm.Status.MAX_ITER and not bool(res.converged)
    assert int(res.n_iter) == 1
    assert "max_iter" in res.summary()
    with pytest.raises(RuntimeError, match="max_iter"):
        jm.fit(
            logit,
            {"b0": 0.0, "b": jnp.zeros(2)},
            simulate_logit(rng, 300, 2),
            max_iter=1,
            throw=True,
        )


def test_float32_on_request(rng):
    data = simulate_logit(rng, 2000, 2)
    res32 = jm.fit(logit, {"b0": 0.0, "b": jnp.zeros(2)}, data, dtype="float32")
    res64 = jm.fit(logit, {"b0": 0.0, "b": jnp.zeros(2)}, data)
    assert res32.params["b"].dtype == jnp.float64  # float64 sums and solves
    assert bool(res32.converged), res32.message
    # float32 data and per-observation derivatives (each ~6e-8 relative) move the estimates by
    # ~1e-3 of a standard error at N = 2000 (measured 3e-4); far below sampling error
    se = np.sqrt(np.diagonal(res64.cov))
    np.testing.assert_array_less(np.abs(res32.coef - res64.coef), 1e-3 * se)
    np.testing.assert_allclose(res32.cov, res64.cov, rtol=1e-4)


def test_float64_whatever_the_global_jax_setting(rng):
    """With JAX's 64-bit flag off (this suite's configuration), the fit and its methods are float64."""
    assert not jax.config.jax_enable_x64
    res = jm.fit(logit, {"b0": 0.0, "b": jnp.zeros(2)}, simulate_logit(rng, 500, 2))
    assert res.params["b"].dtype == jnp.float64 and res.cov.dtype == jnp.float64
    assert res.with_cov("sandwich").cov.dtype == jnp.float64
    assert jax.tree.leaves(res.pvalues)[0].dtype == jnp.float64
    assert jm.wald_test(res, "b[0] = b[1]").statistic.dtype == jnp.float64
    assert "converged" in res.summary()


# ---------------------------------------------------------------- bad input: clear errors


@pytest.fixture
def small(rng):
    return simulate_logit(rng, 50, 2)


INIT2 = {"b0": 0.0, "b": jnp.zeros(2)}


def test_nan_in_data_names_the_leaf_and_row(small):
    small["x"][7, 1] = np.nan
    small["x"][9, 0] = np.inf
    with pytest.raises(
        ValueError, match=r"data\['x'\] has NaN or inf in 2 row\(s\), first at row 7"
    ):
        jm.fit(logit, INIT2, small)


def test_leaves_of_different_length(small):
    small["y"] = small["y"][:-1]
    with pytest.raises(ValueError, match=r"share the leading axis N.*\['x'\]: 50.*\['y'\]: 49"):
        jm.fit(logit, INIT2, small)


def test_logpdf_must_return_a_scalar(small):
    def vector_logpdf(theta, obs):
        return logit(theta, obs) * jnp.ones(3)

    with pytest.raises(ValueError, match=r"must return a scalar.*shape \(3,\)"):
        jm.fit(vector_logpdf, INIT2, small)


def test_minus_infinity_at_the_start_names_rows():
    def below(theta, obs):  # density zero where y >= c
        return jnp.log(jnp.maximum(theta["c"] - obs["y"], 0.0))

    data = {"y": np.array([0.5, 1.5, 0.2, 2.5])}
    with pytest.raises(
        ValueError, match=r"is -inf at the start values for 2 observation\(s\): rows 1, 3"
    ):
        jm.fit(below, {"c": 1.0}, data)


def test_option_errors(small):
    with pytest.raises(ValueError, match="unknown method 'nr'"):
        jm.fit(logit, INIT2, small, method="nr")
    with pytest.raises(ValueError, match="unknown cov 'robust'"):
        jm.fit(logit, INIT2, small, cov="robust")
    with pytest.raises(ValueError, match="cov='cluster' needs cluster ids"):
        jm.fit(logit, INIT2, small, cov="cluster")
    with pytest.raises(ValueError, match=r"groups must have shape \(N,\) = \(50,\)"):
        jm.fit(logit, INIT2, small, groups=np.arange(49))
    with pytest.raises(
        ValueError, match="weights must be finite and >= 0; 1 are not, first at row 3"
    ):
        jm.fit(logit, INIT2, small, weights=np.r_[np.ones(3), -1.0, np.ones(46)])
    with pytest.raises(KeyError, match="fixed names"):
        jm.fit(logit, INIT2, small, fixed={"g": 1.0})
    with pytest.raises(ValueError, match="expected information"):
        jm.fit(logit, INIT2, small, method="fisher")


@pytest.mark.slow  # the default run keeps a cheaper check of this feature
def test_float32_line_search_allows_for_float32_rounding():
    """In float32, lnL carries rounding of ~eps32 |lnL|: a line search that demanded float64
    accuracy rejected every step near the maximum and failed (3 of these 400 replications did)."""

    def simulate(key, theta):
        kx, ky = jax.random.split(key)
        x = jax.random.normal(kx, (1000, 5))
        eta = theta["b0"] + x @ theta["b"]
        return {"x": x, "y": jax.random.bernoulli(ky, jax.nn.sigmoid(eta)).astype(x.dtype)}

    theta = {"b0": 0.3, "b": np.linspace(-0.5, 0.5, 5)}
    mc = jm.monte_carlo(simulate, logit, theta, 400, 0, dtype="float32", progress=False)
    assert mc.n_failed == 0, mc.summary()


def test_products_are_traced_at_full_precision(rng):
    """On GPUs XLA computes float32 products in TF32 by default (10-bit mantissa: Newton then stalled
    at 24 iterations, 2e-4 from the float64 fit on an H100). The fit traces the log-density's
    products at HIGHEST precision; a CPU cannot show the numbers, so check the program."""
    data = jax.tree.map(lambda a: np.asarray(a, np.float32), simulate_logit(rng, 100, 2))
    init = {"b0": 0.0, "b": jnp.zeros(2)}
    program = jax.jit(lambda d: jm.fit(logit, init, d, dtype="float32").coef).lower(data)
    assert "HIGHEST" in program.as_text()
