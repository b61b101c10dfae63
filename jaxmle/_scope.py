"""The one home of jaxmle's float64 promise, and of batch handling for result functions.

jaxmle computes in float64 whatever JAX's global 64-bit flag says: host-side entry points and the
methods of results run inside `jax.enable_x64(True)`. Under a user's own `jit`/`vmap` the inputs are
tracers whose dtype is already decided and the computation follows them: in float64 when any input
is float64 (a result, or numpy data closed over), else in the inputs' dtype (float32 data traced
with JAX's 64-bit flag off).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np


def traced(*trees: Any) -> bool:
    """Whether any leaf of `trees` is a JAX tracer (we are inside someone's jit/vmap/grad)."""
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(trees))


def float64_scope(*trees: Any):
    """`jax.enable_x64(True)` on the host, and under an outer trace whose inputs hold float64
    arrays (a result passed through the user's `jit`: it computes in the float64 it arrived in, not
    in float32 with JAX's truncation warnings); nothing under an outer trace of narrower inputs."""
    if not traced(*trees) or any(_is_float64(x) for x in jax.tree.leaves(trees)):
        return jax.enable_x64(True)
    return contextlib.nullcontext()


def _is_float64(x) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and np.dtype(dtype) == np.float64


def host64(fn: Callable) -> Callable:
    """Run `fn` (a function or method) in `float64_scope` of its arguments."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with float64_scope(args, kwargs):
            return fn(*args, **kwargs)

    return wrapper


def over_batch(fn: Callable, *results):
    """fn(*results) for single fits; vmapped over the leading axes of batched results."""
    if np.ndim(results[0].status) == 0:
        return fn(*results)
    return jax.vmap(lambda *rs: over_batch(fn, *rs))(*results)
