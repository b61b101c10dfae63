"""Binomial GLM (logit link), N=1,000,000, p=20: jaxmle Fisher scoring vs glum and statsmodels GLM.

The same data as test_logit.py. jaxmle is timed twice: `jm.glm` from a formula over a DataFrame (the
formula's design matrix is built inside the timed call, as R and statsmodels' formula API do), and
`jm.fit` of a families Model with Fisher scoring on arrays. Both give the expected-information
covariance (R's `summary(glm)` standard errors).
"""

from __future__ import annotations

import _models as M
import jax
import numpy as np
import pandas as pd
import pytest
from conftest import assert_same, run_pedantic

GROUP = f"binomial GLM (Fisher scoring) N={M.LOGIT_N:,} p={M.LOGIT_P}"
pytestmark = pytest.mark.benchmark(group=GROUP)


@pytest.fixture(scope="module")
def frame(logit_data):
    x, y = logit_data
    return pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])]).assign(y=y)


def _predict(theta, obs):
    import jaxmle.families as jf

    return jf.Bernoulli(logits=theta["b0"] + obs["x"] @ theta["b"])


def _jaxmle_fisher(x, y):
    import jaxmle as jm
    import jaxmle.families as jf

    model = jf.Model(_predict, response="y")
    res = jm.fit(model, M.logit_init(x.shape[1]), {"x": x, "y": y}, method="fisher",
                 cov="expected", tol=1e-10)  # fmt: skip
    return jax.block_until_ready(res)


def test_jaxmle_fit_fisher(benchmark, logit_data, logit_ref):
    """jm.fit(families Model, method='fisher', cov='expected'), numpy arrays in."""
    benchmark.extra_info.update(baseline=True, work="fit + expected-information SE")
    res = run_pedantic(benchmark, lambda: _jaxmle_fisher(*logit_data))
    assert bool(res.converged), res.message
    benchmark.extra_info["n_iter"] = int(res.n_iter)
    benchmark.extra_info["max_rel_diff_est"] = assert_same(
        "jaxmle fisher", M.jaxmle_logit_vector(res)[0], logit_ref[0]
    )


def test_jaxmle_glm_formula(benchmark, frame, logit_ref):
    """jm.glm('y ~ x0 + ... + x19', df, family='binomial'): formula + Fisher scoring + SEs."""
    import jaxmle as jm

    benchmark.extra_info.update(work="formula + fit + expected-information SE")
    formula = "y ~ " + " + ".join(c for c in frame.columns if c != "y")
    res = run_pedantic(
        benchmark, lambda: jax.block_until_ready(jm.glm(formula, frame, family="binomial"))
    )
    assert bool(res.converged), res.message
    est = np.asarray([float(v) for v in res.params.values()])  # Intercept, x0..x19
    benchmark.extra_info["max_rel_diff_est"] = assert_same("jaxmle glm", est, logit_ref[0])


def test_glum(benchmark, logit_data, logit_ref):
    """glum GeneralizedLinearRegressor(family='binomial', alpha=0, gradient_tol=1e-8)."""
    benchmark.extra_info.update(work="fit only (no SE)")
    est = run_pedantic(benchmark, lambda: M.glum_logit(*logit_data))
    benchmark.extra_info["max_rel_diff_est"] = assert_same("glum", est[0], logit_ref[0])


@pytest.mark.slow
def test_statsmodels_glm(benchmark, logit_data, logit_ref):
    """statsmodels GLM(Binomial).fit() (IRLS) with its default covariance."""
    import statsmodels.api as sm

    x, y = logit_data
    xc = M.add_constant(x)
    benchmark.extra_info.update(work="fit + expected-information SE")
    r = run_pedantic(
        benchmark, lambda: sm.GLM(y, xc, family=sm.families.Binomial()).fit(tol=1e-10), slow=True
    )
    benchmark.extra_info["max_rel_diff_est"] = assert_same(
        "statsmodels GLM", np.asarray(r.params), logit_ref[0]
    )
    assert np.all(np.isfinite(np.asarray(r.bse)))
