"""Shared session fixtures: one simulated data set per model, and jaxmle's reference estimates.

Rounds per benchmark: BENCH_ROUNDS (default 3) timed rounds after BENCH_WARMUP (default 1) untimed
ones; slow peers run SLOW_ROUNDS (default 1) rounds and no warm-up.
"""

from __future__ import annotations

import os
import sys

import jax
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import _models as M

jax.config.update("jax_enable_x64", True)

ROUNDS = int(os.environ.get("BENCH_ROUNDS", 3))
WARMUP = int(os.environ.get("BENCH_WARMUP", 1))
SLOW_ROUNDS = int(os.environ.get("SLOW_ROUNDS", 1))
RTOL = 1e-5


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run the slow peers")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow") or os.environ.get("JAXMLE_BENCH_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow peer: set JAXMLE_BENCH_SLOW=1 or pass --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def run_pedantic(benchmark, fn, slow: bool = False):
    """Time fn() with pytest-benchmark; return its (last) result."""
    if slow:
        return benchmark.pedantic(fn, rounds=SLOW_ROUNDS, iterations=1, warmup_rounds=0)
    return benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=WARMUP)


def assert_same(name, est, ref, rtol=RTOL, what="estimates"):
    est, ref = np.asarray(est, float), np.asarray(ref, float)
    err = np.abs(est - ref) / np.abs(ref)
    assert est.shape == ref.shape, f"{name}: {what} shape {est.shape} != {ref.shape}"
    assert np.all(err <= rtol), (
        f"{name} {what} differ from jaxmle: max rel. diff {err.max():.3g} at index "
        f"{int(err.argmax())} (peer {est[err.argmax()]!r}, jaxmle {ref[err.argmax()]!r})"
    )
    return float(err.max())


@pytest.fixture(scope="session")
def logit_data():
    return M.simulate_logit()


@pytest.fixture(scope="session")
def logit_ref(logit_data):
    """jaxmle's estimates and sandwich standard errors: the yardstick every peer must hit."""
    res = M.jaxmle_logit(*logit_data)
    assert bool(res.converged), res.message
    return M.jaxmle_logit_vector(res)


@pytest.fixture(scope="session")
def weibull_data():
    return M.simulate_weibull()


@pytest.fixture(scope="session")
def weibull_ref(weibull_data):
    res = M.jaxmle_weibull(*weibull_data)
    assert bool(res.converged), res.message
    return M.jaxmle_weibull_vector(res)
