"""First call (tracing + XLA compilation + fit) vs a warm call, for both models.

`jax.clear_caches()` before every cold round empties jax's in-memory compilation caches, so each cold
round re-traces and re-compiles (no persistent compilation cache is configured). A fresh-process
first call (import, data load, then the first fit) is measured by `memory.py`.
"""

from __future__ import annotations

import _models as M
import jax
import pytest
from conftest import ROUNDS


def _cold(benchmark, fn):
    return benchmark.pedantic(fn, setup=jax.clear_caches, rounds=ROUNDS, iterations=1)


def _warm(benchmark, fn):
    return benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=1)


@pytest.mark.benchmark(group=f"first call: logit N={M.LOGIT_N:,} p={M.LOGIT_P}")
@pytest.mark.parametrize("call", ["cold", "warm"])
def test_logit(benchmark, call, logit_data):
    benchmark.extra_info.update(baseline=call == "warm")
    res = (_cold if call == "cold" else _warm)(benchmark, lambda: M.jaxmle_logit(*logit_data))
    assert bool(res.converged), res.message


@pytest.mark.benchmark(group=f"first call: weibull AFT N={M.WEIBULL_N:,} k=12")
@pytest.mark.parametrize("call", ["cold", "warm"])
def test_weibull(benchmark, call, weibull_data):
    benchmark.extra_info.update(baseline=call == "warm")
    res = (_cold if call == "cold" else _warm)(benchmark, lambda: M.jaxmle_weibull(*weibull_data))
    assert bool(res.converged), res.message
