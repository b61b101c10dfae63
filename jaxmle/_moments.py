"""Sums over observations of a vector function of one observation: the passes over the data that
estimating equations (`_estimate`) and moment conditions (`_gmm`) need.

f(theta, obs) -> a pytree, raveled to an m-vector f_i; w_i the observation's weight, mask-weighted
within a chunk like every sum in `_accumulate`:

    value      F = sum_i w_i f_i                          (m,)
    jacobian   J = sum_i w_i d f_i / d theta'             (m, k)   k forward tangents through a chunk
    curvature  C = sum_i w_i d2 f_i / d theta d theta'    (m, k, k) (GMM's Newton step; skipped if not
                                                                     asked)
    outer      O = sum_i c_i f_i f_i'                     (m, m)   c_i = w_i (frequency weights) or
                                                                     w_i^2 (sampling weights)
    groups     s_g = sum_{i in g} w_i f_i                 (G, m)   (0 x m without cluster codes)

Each pass is one `chunked_sum`: the per-observation (c, m) values of a chunk are formed once and
reduced by GEMMs, never N separate m x m or m x k matrices.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._accumulate import Layout, chunked_sum
from ._fit import ParamSpec
from ._objective import Batch
from ._results import parameter_names


class VectorSums(NamedTuple):
    """Passes over `batch` of `fn(theta_flat, obs) -> (m,)`; `m` is the length of its output."""

    fn: Callable
    batch: Batch
    layout: Layout
    n_groups: int
    weight_kind: str
    m: int

    def _weights(self, b: Batch, mask):
        return mask if b.weights is None else mask * b.weights

    def _values(self, theta, b: Batch):
        return jax.vmap(self.fn, in_axes=(None, 0))(theta, b.data)

    def value_jacobian(self, theta, curvature: bool = False):
        """(F, J) or (F, J, C) at theta in one pass."""

        def chunk(b, mask):
            def total(t):
                return self._weights(b, mask) @ self._values(t, b)

            value, jac = value_and_jacfwd(total, theta)
            if not curvature:
                return value, jac
            return value, jac, jax.jacfwd(lambda t: value_and_jacfwd(total, t)[1])(theta)

        k, dt = theta.shape[0], theta.dtype
        zeros = (jnp.zeros(self.m, dt), jnp.zeros((self.m, k), dt))
        if curvature:
            zeros = (*zeros, jnp.zeros((self.m, k, k), dt))
        return chunked_sum(chunk, self.batch, self.layout, zeros)

    def value_jacobian_outer(self, theta):
        """(F, J, O, s_g) at theta in one pass (Newton for estimating equations)."""

        def chunk(b, mask):
            w = self._weights(b, mask)

            def total(t):
                return w @ self._values(t, b)

            value, jac = value_and_jacfwd(total, theta)
            return (value, jac, *self._outer_terms(self._values(theta, b), b, w))

        k, dt = theta.shape[0], theta.dtype
        zeros = (jnp.zeros(self.m, dt), jnp.zeros((self.m, k), dt), *self._outer_zeros(dt))
        return chunked_sum(chunk, self.batch, self.layout, zeros)

    def _outer_terms(self, f, b: Batch, w):
        wf = f * w[:, None]
        c = wf * b.weights[:, None] if self._sampling(b) else wf
        if b.groups is None:
            sg = jnp.zeros((0, self.m), f.dtype)
        else:
            sg = jax.ops.segment_sum(wf, b.groups, num_segments=self.n_groups)
        return c.T @ f, sg

    def _outer_zeros(self, dt):
        groups = 0 if self.batch.groups is None else self.n_groups
        return jnp.zeros((self.m, self.m), dt), jnp.zeros((groups, self.m), dt)

    def outer(self, theta):
        """(F, O, s_g) at theta in one pass."""

        def chunk(b, mask):
            f = self._values(theta, b)
            w = self._weights(b, mask)
            return (w @ f, *self._outer_terms(f, b, w))

        zeros = (jnp.zeros(self.m, theta.dtype), *self._outer_zeros(theta.dtype))
        return chunked_sum(chunk, self.batch, self.layout, zeros)

    def unit_jacobians(self, theta, per_row: Callable):
        """sum over rows of `per_row(f_i, J_i, w_i, mask_i)` with the per-observation Jacobians
        J_i = d f_i / d theta' (c, m, k) formed chunk by chunk; with cluster codes, the cluster sums
        A_g = sum_{i in g} w_i J_i (G, m, k) instead (`per_row` is then not used)."""
        k, dt = theta.shape[0], theta.dtype
        jac_obs = jax.vmap(jax.jacfwd(self.fn), in_axes=(None, 0))

        if self.batch.groups is not None:

            def chunk(b, mask):
                wj = jac_obs(theta, b.data) * self._weights(b, mask)[:, None, None]
                return jax.ops.segment_sum(wj, b.groups, num_segments=self.n_groups)

            zeros = jnp.zeros((self.n_groups, self.m, k), dt)
            return chunked_sum(chunk, self.batch, self.layout, zeros)

        def chunk(b, mask):
            f = self._values(theta, b)
            return per_row(f, jac_obs(theta, b.data), b.weights, mask)

        zeros = jnp.zeros((self.m, self.m), dt)
        return chunked_sum(chunk, self.batch, self.layout, zeros)

    def _sampling(self, b: Batch) -> bool:
        return b.weights is not None and self.weight_kind == "sampling"


def value_and_jacfwd(f, x):
    """(f(x), df/dx') by forward mode, the primal computed once (not once per tangent)."""
    push = functools.partial(jax.jvp, f, (x,))
    basis = jnp.eye(x.shape[0], dtype=x.dtype)
    return jax.vmap(lambda e: push((e,)), out_axes=(None, 1))(basis)


def flat_spec(init, labels):
    """(ParamSpec, theta0 flat in ravel order, parameter names)."""
    leaves, treedef = jax.tree.flatten(init)
    xp = np if all(isinstance(x, np.ndarray) for x in leaves) else jnp
    theta0 = xp.concatenate([xp.ravel(x) for x in leaves])
    spec = ParamSpec(treedef, tuple(tuple(np.shape(x)) for x in leaves))
    return spec, theta0, parameter_names(init, labels)


def flat_fn(fn, spec):
    """fn(theta pytree, obs) -> pytree, as flat theta -> flat (m,) vector in ravel order."""

    def flat(theta, obs):
        out = fn(spec.unravel(theta), obs)
        return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(out)])

    return flat
