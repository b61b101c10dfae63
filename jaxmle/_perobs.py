"""Per-observation terms on demand: scores in time order, leverages, l_i and H_i (one pass each).

The ordinary fit never computes these: it keeps sums (lnL, U, -H, the OPG, the meat, the cluster
sums). A covariance kind that needs rows (HAC: scores in time order; HC2/HC3: hat values) declares
"rows" in its registry entry, and gets `Rows` from `observation_rows`: inside the compiled fit when
it is the fit's `cov=`, or later from the result's `problem` handle (`result_rows`). The model
tests (`im_test`, `vuong_test`, `diagnostics`) read l_i, u_i and H_i from `result_terms`.

Rows are computed chunk by chunk (the fit's `chunk_size`, its device mesh, or its host stream) and
written in row order, so no pass materialises more than one chunk's intermediates:

    score     u_i = d l_i / d theta (free parameters)
    hat       h_i = tr(F(eta_i) J_ib I_bb^-1 J_ib'), the leverage of one observation in the
              parameter block b (a GLM's coefficients: W_i x_i'(X'WX)^-1 x_i, R `hatvalues`)
    hessian   H_i = d^2 l_i / d theta d theta'  (N x k x k: for the IM test only)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._accumulate import _fetch, leading_length
from ._bounds import _derivatives, flat_inverse
from ._covariance import Rows
from ._objective import Batch, Objective

# Parameter names that R leaves out of automatic HAC bandwidths (its "(Intercept)"; formulaic's).
INTERCEPT_NAMES = ("(Intercept)", "Intercept")


def chunked_rows(fn, batch, layout):
    """fn(chunk) -> pytree of (chunk, ...) arrays, for every chunk, written into (N, ...) arrays in
    row order (over the devices of `layout.mesh`: each writes its own rows)."""
    if layout.mesh is None:
        return _local_rows(fn, batch, layout.chunk_size, layout.host)
    spec = jax.sharding.PartitionSpec(layout.axis)
    return jax.shard_map(
        lambda b: _local_rows(fn, b, layout.chunk_size),
        mesh=layout.mesh,
        in_specs=(jax.tree.map(lambda _: spec, batch),),
        out_specs=spec,
        check_vma=False,
    )(batch)


def _local_rows(fn, batch, chunk_size, host=None):
    n = leading_length(host.data if host is not None else batch)
    chunk_size = min(chunk_size, n)
    n_chunks = -(-n // chunk_size)

    def chunk(i):
        start = jnp.minimum(i * chunk_size, n - chunk_size)
        b = jax.tree.map(lambda x: lax.dynamic_slice_in_dim(x, start, chunk_size), batch)
        if host is not None:
            b = b._replace(data=_fetch(host, start, chunk_size))
        return start, fn(b)

    shapes = jax.eval_shape(lambda: chunk(0)[1])
    out = jax.tree.map(lambda s: jnp.zeros((n, *s.shape[1:]), s.dtype), shapes)

    def write(i, out):
        start, values = chunk(i)
        return jax.tree.map(
            lambda o, v: lax.dynamic_update_slice_in_dim(o, v, start, 0), out, values
        )

    return write(0, out) if n_chunks == 1 else lax.fori_loop(0, n_chunks, write, out)


def _one(obj: Objective):
    def one(theta, obs):
        return obj.logpdf(obj.unravel(theta), obs)

    return one


def _meat_factor(obj: Objective, b: Batch):
    """sqrt(c_i): r_i = sqrt(c_i) u_i has sum r r' = the meat (c_i = w_i or w_i^2)."""
    if b.weights is None:
        return None
    return b.weights if obj.weight_kind == "sampling" else jnp.sqrt(b.weights)


def _chunk_hat(obj: Objective, theta, b: Batch, block, info_block_inv):
    predict, fisher = obj.expected

    def eta_of(t, obs):
        return jnp.atleast_1d(predict(obj.unravel(t), obs))

    eta = jax.vmap(eta_of, in_axes=(None, 0))(theta, b.data)  # (c, m)
    jac = jax.vmap(jax.jacrev(eta_of), in_axes=(None, 0))(theta, b.data)[:, :, block]
    f = jax.vmap(fisher)(eta if eta.shape[1] > 1 else eta[:, 0], b.data)
    f = f.reshape(eta.shape[0], eta.shape[1], eta.shape[1])
    q = jnp.einsum("cmp,pq,cnq->cmn", jac, info_block_inv, jac)
    return jnp.sum(f * q, axis=(1, 2))


def observation_rows(obj: Objective, theta, free_idx, order, select, *, hat_block=None,
                     expected=None) -> Rows:  # fmt: skip
    """`Rows` at the full parameter vector `theta`: r_i = sqrt(c_i) u_i over the free parameters,
    in time order when `order` (the row indices sorted by time) is given; hat values over
    `hat_block` (indices into theta) when asked, from the free-block expected information."""
    free_idx = np.asarray(free_idx)
    one = _one(obj)
    if hat_block is not None:
        block = np.asarray(hat_block)
        position = {int(j): i for i, j in enumerate(free_idx)}
        local = np.array([position[int(j)] for j in block])
        inv = jnp.linalg.inv(expected[local][:, local])

    def fn(b):
        u = jax.vmap(jax.grad(one), in_axes=(None, 0))(theta, b.data)[:, free_idx]
        factor = _meat_factor(obj, b)
        out = {"score": u if factor is None else u * factor[:, None]}
        if hat_block is not None:
            out["hat"] = _chunk_hat(obj, theta, b, block, inv)
        return out

    rows = chunked_rows(fn, obj.batch, obj.layout)
    if order is not None:
        rows = jax.tree.map(lambda x: x[order], rows)
    hat = rows.get("hat", jnp.zeros((0,), theta.dtype))
    return Rows(rows["score"], hat, jnp.asarray(select, theta.dtype))


def observation_terms(obj: Objective, theta, free_idx, hessian: bool):
    """(l_i (N,), u_i (N, k), H_i (N, k, k) or None) over the free parameters, in row order."""
    free_idx = np.asarray(free_idx)
    one = _one(obj)

    def fn(b):
        ll, u = jax.vmap(jax.value_and_grad(one), in_axes=(None, 0))(theta, b.data)
        out = {"loglik": ll, "score": u[:, free_idx]}
        if hessian:
            h = jax.vmap(jax.hessian(one), in_axes=(None, 0))(theta, b.data)
            out["hessian"] = h[:, free_idx][:, :, free_idx]
        return out

    rows = chunked_rows(fn, obj.batch, obj.layout)
    return rows["loglik"], rows["score"], rows.get("hessian")


def select_of(names, free) -> tuple[float, ...]:
    """R's bandwidth column weights: 1 for every free parameter, 0 for an intercept."""
    return tuple(
        float(name not in INTERCEPT_NAMES) for name, f in zip(names, free, strict=True) if f
    )


# ---------------------------------------------------------------- from a result's problem


def make_objective(data, weights, groups, *, logpdf, spec, layout, n_groups, weight_kind,
                   expected, compute_dtype) -> Objective:  # fmt: skip
    """The Objective of a fitted problem at the full parameter vector (nothing held)."""
    unravel = spec.unravel
    if compute_dtype is not None:

        def unravel(flat):
            return jax.tree.map(lambda x: x.astype(compute_dtype), spec.unravel(flat))

    batch = Batch(data, weights, groups)
    return Objective(logpdf, unravel, lambda t: t, batch, layout, n_groups, weight_kind, expected)


def problem_point(res):
    """(theta where the problem's log-density is evaluated, d theta_problem / d theta_result per
    parameter or None): a `fit_transformed` result reports x while its problem works in u."""
    problem = res.problem
    if problem.transforms is None:
        return res.coef, None
    bounds = problem.transforms.flat_bounds(res.params)
    d1, _ = _derivatives(bounds, res.coef)
    return flat_inverse(bounds, res.coef), d1


_STATIC = ("logpdf", "spec", "layout", "n_groups", "weight_kind", "expected", "compute_dtype")


def _problem_static(problem):
    return {name: getattr(problem, name) for name in _STATIC}


@functools.partial(jax.jit, static_argnames=(*_STATIC, "free_idx", "select", "hat_block"))
def _rows_program(theta, data, weights, groups, order, expected_free, *, free_idx, select,
                  hat_block, **static):  # fmt: skip
    obj = make_objective(data, weights, groups, **static)
    return observation_rows(obj, theta, free_idx, order, select, hat_block=hat_block,
                            expected=expected_free)  # fmt: skip


@functools.partial(jax.jit, static_argnames=(*_STATIC, "free_idx", "hessian"))
def _terms_program(theta, data, weights, groups, *, free_idx, hessian, **static):
    obj = make_objective(data, weights, groups, **static)
    return observation_terms(obj, theta, free_idx, hessian)


def _free_idx(res) -> tuple[int, ...]:
    return tuple(int(i) for i in np.flatnonzero(res.free))


def result_rows(res, *, hat_block=None, select=None) -> Rows:
    """`Rows` of a host fit, through its `problem` (a pass over its data, compiled once per model
    and kind); `hat_block` (indices of theta) asks for hat values, `select` overrides the
    bandwidth column weights (default: 0 for an intercept)."""
    problem = res.problem
    theta, scale = problem_point(res)
    free = np.asarray(res.free)
    select = select_of(res.names, res.free) if select is None else tuple(select)
    expected = jnp.asarray(res.expected_information)
    if scale is not None:  # I in the problem's parameters: I_u = (dx/du) I_x (dx/du)
        expected = expected / (scale[:, None] * scale[None, :])
    with jax.enable_x64(problem.dtype == jnp.float64):
        rows = _rows_program(
            jnp.asarray(theta, problem.dtype), problem.device_data, problem.weights,
            problem.groups, problem.order, expected[free][:, free], free_idx=_free_idx(res),
            select=select, hat_block=hat_block, **_problem_static(problem),
        )  # fmt: skip
    if scale is not None:  # scores in the result's parameters: u_x = (du/dx) u_u
        rows = rows._replace(score=rows.score * scale[free])
    n = problem.n_rows if problem.order is None else rows.score.shape[0]
    return rows._replace(score=rows.score[:n], hat=rows.hat[:n])


def result_terms(res, hessian: bool = False):
    """(l_i, u_i, H_i or None, weights or None) of a host fit over its free parameters, in row
    order and in the parametrisation its problem works in (the IM and Vuong statistics are
    invariant to it)."""
    problem = res.problem
    theta, _ = problem_point(res)
    with jax.enable_x64(problem.dtype == jnp.float64):
        ll, u, h = _terms_program(
            jnp.asarray(theta, problem.dtype), problem.device_data, problem.weights,
            problem.groups, free_idx=_free_idx(res), hessian=hessian, **_problem_static(problem),
        )  # fmt: skip
    n = problem.n_rows
    w = None if problem.weights is None else problem.weights[:n]
    return ll[:n], u[:n], None if h is None else h[:n], w
