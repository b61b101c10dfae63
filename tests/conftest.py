"""Test configuration: 64-bit JAX on for the tests' own arithmetic, and a seeded generator.

jaxmle computes in float64 whatever the global flag; `test_fit.py` checks that in a fresh process with
the flag off, so the flag here only spares every test wrapping its own arithmetic.
"""

import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)


@pytest.fixture
def rng():
    return np.random.default_rng(20261125)
