"""The one home of jaxmle's float64 promise, and of batch handling for result functions.

jaxmle computes in float64 whatever JAX's global 64-bit flag says: host-side entry points and the
methods of results run inside `jax.enable_x64(True)`. Under a user's own `jit`/`vmap` the inputs are
tracers whose dtype is already decided; there the scope is left alone and the dtype follows them.
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
    """`jax.enable_x64(True)` on the host; nothing under an outer trace of `trees`."""
    return contextlib.nullcontext() if traced(*trees) else jax.enable_x64(True)


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
