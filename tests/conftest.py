"""Test configuration: JAX's default configuration (64-bit OFF), as users have it, and a seeded
generator.

jaxmle promises float64 results whatever the global flag; a conftest that turned 64-bit on globally
would hide every bug a new user meets with the flag off. A test whose own arithmetic needs 64-bit
arrays scopes it (`with jax.enable_x64(True):`, or the `x64` fixture).
"""

import jax
import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(20261125)


@pytest.fixture
def x64():
    """64-bit JAX arrays for the duration of one test (the test's own arithmetic)."""
    with jax.enable_x64(True):
        yield
