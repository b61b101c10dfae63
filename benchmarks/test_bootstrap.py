"""2,000 pairs-bootstrap replications of a logit (N = 10,000, p = 10): jaxmle against R `boot` with
`glm` (and with `glm.fit`), side by side (`_bootstrap_r.py`; R needs `Rscript` with the boot package).

jaxmle's timing is a warm call (the refit program compiled in the warm-up round); R's is the whole
`Rscript` run (start-up and reading the CSV are ~1 s of minutes). The bootstrap standard errors of
both (different resamples) must agree within Monte Carlo error, so the work compared is the same.
`bootstrap_vs_r.py` runs the same comparison with interleaved rounds.
"""

from __future__ import annotations

import shutil

import _bootstrap_r as B
import numpy as np
import pytest
from conftest import run_pedantic

GROUP = f"bootstrap {B.REPS} pairs logit N={B.N:,} p={B.P}"
pytestmark = pytest.mark.benchmark(group=GROUP)
# bootstrap SEs from 2,000 different resamples: sd of an sd estimate ~ 1/sqrt(2 R) = 1.6%; 6 of them
SE_RTOL = 0.1


@pytest.fixture(scope="module")
def logit(tmp_path_factory):
    x, y = B.data()
    return x, y, B.write_csv(x, y, tmp_path_factory.mktemp("boot"))


@pytest.fixture(scope="module")
def jaxmle_se(logit):
    x, y, _ = logit
    return B.flat_se(B.jaxmle_bootstrap(B.jaxmle_fit(x, y)))


def test_jaxmle(benchmark, logit):
    x, y, _ = logit
    res = B.jaxmle_fit(x, y)
    benchmark.extra_info.update(baseline=True, work=f"{B.REPS} refits (newton), BCa inputs")
    bs = run_pedantic(benchmark, lambda: B.jaxmle_bootstrap(res))
    assert bs.n_failed == 0
    benchmark.extra_info["mean_iterations"] = float(np.mean(bs.n_iter))


needs_r = pytest.mark.skipif(shutil.which("Rscript") is None, reason="needs R (Rscript, boot)")


@needs_r
@pytest.mark.parametrize("how", ["glm", "glm.fit"])
def test_r_boot(benchmark, logit, jaxmle_se, how):
    _, _, csv = logit
    benchmark.extra_info.update(work=f"{B.REPS} refits, boot() + {how}")
    out = run_pedantic(benchmark, lambda: B.r_boot(csv, how=how), slow=True)
    benchmark.extra_info.update(r_elapsed=out["elapsed"], boot_version=out["boot"])
    err = np.abs(out["se"] - jaxmle_se) / jaxmle_se
    benchmark.extra_info["max_rel_diff_se"] = float(err.max())
    assert err.max() < SE_RTOL
