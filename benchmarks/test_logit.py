"""Logistic regression, N=1,000,000, p=20 (+ intercept), float64: jaxmle vs scikit-learn, glum, statsmodels.

Every benchmark times one complete fit on the same in-memory numpy data (warm: jaxmle's compilation
happens in the untimed warm-up round; see test_firstcall.py for the cold call), then checks that the
peer reached the same estimates as jaxmle (relative difference <= 1e-5), and where it computes the
same HC0 sandwich covariance, the same standard errors.
"""

from __future__ import annotations

import _models as M
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_same, run_pedantic

GROUP = f"logit N={M.LOGIT_N:,} p={M.LOGIT_P}"
pytestmark = pytest.mark.benchmark(group=GROUP)


@pytest.fixture(scope="module")
def design_with_constant(logit_data):
    return M.add_constant(logit_data[0])


def test_jaxmle(benchmark, logit_data, logit_ref):
    """jaxmle newton + sandwich (HC0) covariance, numpy arrays in."""
    benchmark.extra_info.update(baseline=True, work="fit + HC0 sandwich SE")
    res = run_pedantic(benchmark, lambda: M.jaxmle_logit(*logit_data))
    assert bool(res.converged), res.message
    est, _ = M.jaxmle_logit_vector(res)
    benchmark.extra_info.update(n_iter=int(res.n_iter))
    np.testing.assert_array_equal(est, logit_ref[0])


def test_jaxmle_cov_hessian(benchmark, logit_data, logit_ref):
    """jaxmle newton + observed-information covariance (no extra pass for the scores' meat)."""
    benchmark.extra_info.update(work="fit + OIM SE")
    res = run_pedantic(benchmark, lambda: M.jaxmle_logit(*logit_data, cov="hessian"))
    assert bool(res.converged), res.message
    benchmark.extra_info["max_rel_diff_est"] = assert_same(
        "jaxmle cov=hessian", M.jaxmle_logit_vector(res)[0], logit_ref[0]
    )


def test_jaxmle_jax_arrays(benchmark, logit_data, logit_ref):
    """jaxmle newton + sandwich with the data already jax arrays (no host-to-device conversion)."""
    benchmark.extra_info.update(work="fit + HC0 sandwich SE, jax arrays in")
    x, y = (jax.block_until_ready(jnp.asarray(a)) for a in logit_data)
    assert x.dtype == jnp.float64
    res = run_pedantic(benchmark, lambda: M.jaxmle_logit(x, y))
    assert bool(res.converged), res.message
    benchmark.extra_info["max_rel_diff_est"] = assert_same(
        "jaxmle jax arrays", M.jaxmle_logit_vector(res)[0], logit_ref[0]
    )


def test_sklearn(benchmark, logit_data, logit_ref):
    """LogisticRegression(solver='newton-cholesky', tol=1e-8, C=inf): estimates only, no covariance."""
    benchmark.extra_info.update(work="fit only (no SE)")
    est, m = run_pedantic(benchmark, lambda: M.sklearn_logit(*logit_data))
    benchmark.extra_info.update(n_iter=int(np.max(m.n_iter_)))
    benchmark.extra_info["max_rel_diff_est"] = assert_same("sklearn", est, logit_ref[0])


def test_glum(benchmark, logit_data, logit_ref):
    """GeneralizedLinearRegressor(family='binomial', alpha=0, gradient_tol=1e-8): estimates only."""
    benchmark.extra_info.update(work="fit only (no SE)")
    est, _, m = run_pedantic(benchmark, lambda: M.glum_logit(*logit_data))
    benchmark.extra_info.update(n_iter=int(m.n_iter_))
    benchmark.extra_info["max_rel_diff_est"] = assert_same("glum", est, logit_ref[0])


def test_glum_sandwich(benchmark, logit_data, logit_ref):
    """glum fit + covariance_matrix(robust=True) (HC0 after undoing glum's n/(n-k) factor)."""
    benchmark.extra_info.update(work="fit + HC0 sandwich SE")
    est, se, _ = run_pedantic(benchmark, lambda: M.glum_logit(*logit_data, covariance=True))
    benchmark.extra_info["max_rel_diff_est"] = assert_same("glum", est, logit_ref[0])
    benchmark.extra_info["max_rel_diff_se"] = assert_same(
        "glum", se, logit_ref[1], what="sandwich SEs"
    )


def test_statsmodels_logit(benchmark, design_with_constant, logit_data, logit_ref):
    """statsmodels Logit(...).fit(method='newton', cov_type='HC0')."""
    benchmark.extra_info.update(work="fit + HC0 sandwich SE")
    y = logit_data[1]
    est, se, r = run_pedantic(benchmark, lambda: M.statsmodels_logit(design_with_constant, y))
    benchmark.extra_info.update(n_iter=int(r.mle_retvals["iterations"]))
    benchmark.extra_info["max_rel_diff_est"] = assert_same("statsmodels Logit", est, logit_ref[0])
    benchmark.extra_info["max_rel_diff_se"] = assert_same(
        "statsmodels Logit", se, logit_ref[1], what="HC0 SEs"
    )


@pytest.mark.slow
def test_statsmodels_glm(benchmark, design_with_constant, logit_data, logit_ref):
    """statsmodels GLM(Binomial).fit(cov_type='HC0') (IRLS)."""
    benchmark.extra_info.update(work="fit + HC0 sandwich SE")
    y = logit_data[1]
    est, se, _ = run_pedantic(
        benchmark, lambda: M.statsmodels_glm_logit(design_with_constant, y), slow=True
    )
    benchmark.extra_info["max_rel_diff_est"] = assert_same("statsmodels GLM", est, logit_ref[0])
    benchmark.extra_info["max_rel_diff_se"] = assert_same(
        "statsmodels GLM", se, logit_ref[1], what="HC0 SEs"
    )


@pytest.mark.slow
def test_statsmodels_generic(benchmark, design_with_constant, logit_data, logit_ref):
    """statsmodels GenericLikelihoodModel: numpy loglikeobs only, numerical derivatives, Newton."""
    benchmark.extra_info.update(work="fit + OIM SE (numerical Hessian)")
    y = logit_data[1]
    est, _, _ = run_pedantic(
        benchmark, lambda: M.statsmodels_generic_logit(design_with_constant, y), slow=True
    )
    # numerical derivatives: the maximum is only reached to their accuracy
    benchmark.extra_info["max_rel_diff_est"] = assert_same(
        "statsmodels GenericLikelihoodModel", est, logit_ref[0], rtol=1e-4
    )
