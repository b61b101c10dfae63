"""Right-censored Weibull AFT regression (survreg's parametrisation), N=200,000, 12 parameters.

log T = b0 + x'b + sigma W, W standard minimum extreme value; params b0, b (10), log_sigma.
jaxmle newton + sandwich vs lifelines WeibullAFTFitter (SLSQP + autograd Hessian) and statsmodels
GenericLikelihoodModel (BFGS, analytic numpy score, numerical Hessian for the HC0 covariance).
"""

from __future__ import annotations

import _models as M
import numpy as np
import pytest
from conftest import assert_same, run_pedantic

GROUP = f"weibull AFT N={M.WEIBULL_N:,} k=12"
pytestmark = pytest.mark.benchmark(group=GROUP)


def test_jaxmle(benchmark, weibull_data, weibull_ref):
    """jaxmle newton + sandwich (HC0) covariance, start at 0."""
    benchmark.extra_info.update(baseline=True, work="fit + HC0 sandwich SE")
    res = run_pedantic(benchmark, lambda: M.jaxmle_weibull(*weibull_data))
    assert bool(res.converged), res.message
    benchmark.extra_info.update(n_iter=int(res.n_iter))
    np.testing.assert_array_equal(M.jaxmle_weibull_vector(res)[0], weibull_ref[0])


def test_lifelines(benchmark, weibull_data, weibull_ref):
    """WeibullAFTFitter().fit(df, robust=False, fit_options={'ftol': 1e-12}); Hessian-based SEs."""
    benchmark.extra_info.update(work="fit + OIM SE (autograd Hessian)")
    df = M.lifelines_frame(*weibull_data)
    est, se, _ = run_pedantic(benchmark, lambda: M.lifelines_weibull(df))
    benchmark.extra_info["max_rel_diff_est"] = assert_same("lifelines", est, weibull_ref[0])
    # lifelines' SEs are the observed-information ones: compare with jaxmle's, same fit
    res = M.jaxmle_weibull(*weibull_data, cov="hessian")
    benchmark.extra_info["max_rel_diff_se"] = assert_same(
        "lifelines", se, M.jaxmle_weibull_vector(res)[1], what="OIM SEs"
    )


def test_statsmodels_generic_bfgs(benchmark, weibull_data, weibull_ref):
    """GenericLikelihoodModel(method='bfgs', gtol=1e-8, cov_type='HC0'), start at 0."""
    benchmark.extra_info.update(work="fit + HC0 sandwich SE (analytic score, numerical Hessian)")
    x, t, d = weibull_data
    xc = M.add_constant(x)
    est, se, _ = run_pedantic(benchmark, lambda: M.statsmodels_weibull(xc, t, d))
    benchmark.extra_info["max_rel_diff_est"] = assert_same("statsmodels", est, weibull_ref[0])
    benchmark.extra_info["max_rel_diff_se"] = assert_same(
        "statsmodels", se, weibull_ref[1], what="HC0 SEs", rtol=1e-4
    )
