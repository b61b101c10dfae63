"""The marginal log-likelihood of a mixed model: random effects integrated out at their modes.

Joint log-density of the data and the random effects b (theory.md notation; f indexes the grouping
factors, g their levels, i the rows, e_i the effects of row i's levels, w_i its weight):

    h(theta, b) = sum_i w_i l_i(theta, e_i) + sum_f sum_g r_f(theta, b_fg)

    Laplace   ln L(theta) = h(theta, b^) + (D/2) ln 2 pi - (1/2) ln det(-H_bb(theta, b^))
    AGQ       ln L_g(theta) = ln sum_k w_k exp(h_g(b^_g + sqrt(2) R_g^-T z_k) + |z_k|^2)
                              + (q/2) ln 2 - ln det R_g,   R_g R_g' = -H_g  (one factor)

b^ = argmax_b h(theta, b) (the conditional modes), D = sum_f G_f q_f, and z_k, w_k the tensor
Gauss-Hermite rule with n_quad points per dimension (lme4's nAGQ; n_quad = 1 is Laplace).

Structure of -H_bb: one factor (the one with most effects, "primary") is block diagonal, G_p blocks
of q_p x q_p; every other factor's effects (D_2 of them) form a dense block C, coupled to the
primary blocks through B (G_p x q_p x D_2). With one factor D_2 = 0 and the groups are independent:
ln L = sum_g ln L_g. With crossed or nested factors the approximation is the joint one over all D
effects (as lme4's), computed exactly by block elimination:

    S = C - B' A^-1 B,   ln det(-H_bb) = sum_g ln det A_g + ln det S

(A the primary blocks): cost O(N q^2 + G_p q_p D_2^2 + D_2^3), memory O(G_p q_p D_2 + D_2^2): for
subjects x items with few items, cheap; D_2 in the thousands is the practical limit.

Modes: one batched Newton over every group at once, each group with its own step halving (the
groups are independent with one factor; with several, one step for all), warm-started by the caller.

Derivatives: b^(theta) is `implicit_modes`, a custom JVP that returns the given modes and whose
tangent is the implicit function theorem, d b^ = (-H_bb)^-1 (d/dtheta grad_b h) d theta. The rule is
itself made of differentiable operations at (theta, b^(theta)), so `jax.hessian` of ln L is exact to
any order: no differentiation through the Newton iterations and no finite differences.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

PyTree = Any

# Inner Newton: a group is done when its decrement g'(-H)^-1 g (twice the gain still to make) is below
# _INNER_TOL (1 + |h_g|): the mode is then within ~1e-10 of its scale, so the implicit derivatives
# are exact to that order; below _INNER_FLOOR a step that no longer shrinks it by _STALL is rounding.
_INNER_TOL = 1e-20
_INNER_FLOOR = 1e-14
_STALL = 0.25
# A mode counts as found when its decrement is below this (relative): lnL is then within ~1e-10.
_FOUND_TOL = 1e-10
_MAX_HALVINGS = 30
_ROUNDOFF_ULPS = 64.0


class Factor(NamedTuple):
    """One grouping factor: its name, the flat size q of one level's effects and how to rebuild
    the user's pytree from it (a `_fit.ParamSpec`), and its number of levels G."""

    name: str
    spec: Any
    q: int
    n_groups: int


class Model(NamedTuple):
    """Everything static about the marginal likelihood (hashable: part of the compiled program)."""

    logpdf: Callable
    re_logpdf: tuple[Callable, ...]
    factors: tuple[Factor, ...]
    theta_spec: Any
    keyed: bool  # b passed to the user's functions as {factor: effects}
    primary: int
    n_quad: int

    @property
    def single(self) -> bool:
        return len(self.factors) == 1

    @property
    def secondary(self) -> tuple[int, ...]:
        return tuple(f for f in range(len(self.factors)) if f != self.primary)

    @property
    def d2(self) -> int:
        return sum(self.factors[f].q * self.factors[f].n_groups for f in self.secondary)

    def offsets(self) -> dict[int, int]:
        """Where each secondary factor's effects start in the dense block."""
        out, at = {}, 0
        for f in self.secondary:
            out[f] = at
            at += self.factors[f].q * self.factors[f].n_groups
        return out

    def row_effects(self, e):
        """The user's b for one row from its flat effects e (Q,)."""
        parts, at = [], 0
        for fac in self.factors:
            parts.append(fac.spec.unravel(e[at : at + fac.q]))
            at += fac.q
        if not self.keyed:
            return parts[0]
        return {fac.name: p for fac, p in zip(self.factors, parts, strict=True)}


class Data(NamedTuple):
    """The rows: data pytree, (N,) codes of every factor, (N,) weights or None."""

    rows: PyTree
    codes: tuple[jax.Array, ...]
    weights: jax.Array | None


class Terms(NamedTuple):
    """h per unit (G_p groups with one factor, else one), grad_b h, and the blocks of -H_bb."""

    value: jax.Array  # (U,)
    grad: tuple[jax.Array, ...]  # per factor (G_f, q_f)
    a: jax.Array  # (G_p, q_p, q_p) primary blocks of -H
    b: jax.Array | None  # (G_p, q_p, D_2)
    c: jax.Array | None  # (D_2, D_2)


class Factorization(NamedTuple):
    """Cholesky factors of -H_bb by block elimination (module docstring)."""

    chol_a: jax.Array
    x: jax.Array | None  # A^-1 B
    chol_s: jax.Array | None


# ---------------------------------------------------------------- h and its b-derivatives


def _row_values(model: Model, theta, b, data: Data, order: int):
    """Per row: l_i, and (order 2) its gradient (N, Q) and Hessian (N, Q, Q) in e_i."""
    e = jnp.concatenate([b[f][data.codes[f]] for f in range(len(model.factors))], axis=1)
    params = model.theta_spec.unravel(theta)

    def ell(e_i, obs):
        return model.logpdf(params, model.row_effects(e_i), obs)

    if order == 0:
        out = (jax.vmap(ell)(e, data.rows),)
    else:

        def grad_aux(e_i, obs):
            v, g = jax.value_and_grad(ell)(e_i, obs)
            return g, (v, g)

        def all_three(e_i, obs):
            h, (v, g) = jax.jacfwd(grad_aux, has_aux=True)(e_i, obs)
            return v, g, h

        out = jax.vmap(all_three)(e, data.rows)
    if data.weights is not None:
        w = data.weights
        out = tuple(x * w.reshape((-1,) + (1,) * (x.ndim - 1)) for x in out)
    return out


def _re_values(model: Model, theta, b, f: int, order: int):
    """Per level of factor f: r_f, and (order 2) its gradient and Hessian in b_fg."""
    params = model.theta_spec.unravel(theta)
    spec = model.factors[f].spec

    def r(b_g):
        return model.re_logpdf[f](params, spec.unravel(b_g))

    if order == 0:
        return (jax.vmap(r)(b[f]),)

    def grad_aux(b_g):
        v, g = jax.value_and_grad(r)(b_g)
        return g, (v, g)

    def all_three(b_g):
        h, (v, g) = jax.jacfwd(grad_aux, has_aux=True)(b_g)
        return v, g, h

    return jax.vmap(all_three)(b[f])


def _slices(model: Model):
    out, at = [], 0
    for fac in model.factors:
        out.append(slice(at, at + fac.q))
        at += fac.q
    return out


def values(model: Model, theta, b, data: Data) -> jax.Array:
    """h per unit (order 0): (G_p,) with one factor, (1,) with several."""
    (v,) = _row_values(model, theta, b, data, 0)
    res = [_re_values(model, theta, b, f, 0)[0] for f in range(len(model.factors))]
    p = model.primary
    if model.single:
        n = model.factors[p].n_groups
        return jax.ops.segment_sum(v, data.codes[p], num_segments=n) + res[p]
    return (jnp.sum(v) + sum(jnp.sum(r) for r in res))[None]


def terms(model: Model, theta, b, data: Data, order: int = 2) -> Terms:
    """h per unit, grad_b h and the blocks of -H_bb at (theta, b)."""
    v, g, h = _row_values(model, theta, b, data, 2)
    res = [_re_values(model, theta, b, f, 2) for f in range(len(model.factors))]
    sl = _slices(model)
    p = model.primary
    fp = model.factors[p]
    cp = data.codes[p]

    def seg(x, f):
        return jax.ops.segment_sum(x, data.codes[f], num_segments=model.factors[f].n_groups)

    grads = tuple(seg(g[:, sl[f]], f) + res[f][1] for f in range(len(model.factors)))
    a = -(seg(h[:, sl[p], sl[p]], p) + res[p][2])
    if model.single:
        value = seg(v, p) + res[p][0]
        return Terms(value, grads, a, None, None)
    value = (jnp.sum(v) + sum(jnp.sum(r[0]) for r in res))[None]
    d2 = model.d2
    offs = model.offsets()
    # row i's secondary effects as indices into the dense block
    idx = jnp.concatenate(
        [
            offs[f] + data.codes[f][:, None] * model.factors[f].q + jnp.arange(model.factors[f].q)
            for f in model.secondary
        ],
        axis=1,
    )
    sec = np.concatenate([np.arange(sl[f].start, sl[f].stop) for f in model.secondary])
    h22 = h[:, sec][:, :, sec]
    c = jnp.zeros((d2, d2), h.dtype).at[idx[:, :, None], idx[:, None, :]].add(-h22)
    for f in model.secondary:
        q, n = model.factors[f].q, model.factors[f].n_groups
        ix = offs[f] + jnp.arange(n)[:, None] * q + jnp.arange(q)[None, :]
        c = c.at[ix[:, :, None], ix[:, None, :]].add(-res[f][2])
    h12 = h[:, sl[p]][:, :, sec]  # (N, q_p, Q_2)
    bb = jnp.zeros((fp.n_groups, fp.q, d2), h.dtype)
    bb = bb.at[cp[:, None, None], jnp.arange(fp.q)[None, :, None], idx[:, None, :]].add(-h12)
    return Terms(value, grads, a, bb, c)


# ---------------------------------------------------------------- solves and log-determinants


def factorize(model: Model, t: Terms) -> Factorization:
    chol_a = jnp.linalg.cholesky(t.a)
    if model.single:
        return Factorization(chol_a, None, None)
    x = jax.scipy.linalg.cho_solve((chol_a, True), t.b)  # batched over groups
    s = t.c - jnp.einsum("gqd,gqe->de", t.b, x)
    return Factorization(chol_a, x, jnp.linalg.cholesky(0.5 * (s + s.T)))


def _to_dense(model: Model, grads):
    return jnp.concatenate([grads[f].reshape(-1) for f in model.secondary])


def _from_dense(model: Model, vec, primary_part):
    out, offs = [None] * len(model.factors), model.offsets()
    out[model.primary] = primary_part
    for f in model.secondary:
        q, n = model.factors[f].q, model.factors[f].n_groups
        out[f] = vec[offs[f] : offs[f] + q * n].reshape(n, q)
    return tuple(out)


def solve(model: Model, fac: Factorization, rhs) -> tuple:
    """(-H_bb)^-1 rhs, rhs and result per factor (G_f, q_f)."""
    p = model.primary
    y1 = jax.scipy.linalg.cho_solve((fac.chol_a, True), rhs[p][..., None])[..., 0]
    if model.single:
        return (y1,)
    r2 = _to_dense(model, rhs) - jnp.einsum("gqd,gq->d", fac.x, rhs[p])
    d2 = jax.scipy.linalg.cho_solve((fac.chol_s, True), r2)
    d1 = y1 - jnp.einsum("gqd,d->gq", fac.x, d2)
    return _from_dense(model, d2, d1)


def logdet_units(model: Model, fac: Factorization) -> jax.Array:
    """ln det(-H_bb) per unit."""
    la = 2.0 * jnp.sum(jnp.log(jnp.diagonal(fac.chol_a, axis1=-2, axis2=-1)), axis=-1)
    if model.single:
        return la
    ls = 2.0 * jnp.sum(jnp.log(jnp.diagonal(fac.chol_s)))
    return (jnp.sum(la) + ls)[None]


def conditional_sd(model: Model, fac: Factorization) -> tuple:
    """sqrt of the diagonal of (-H_bb)^-1, per factor (G_f, q_f): the conditional SDs of b."""
    eye = jnp.broadcast_to(jnp.eye(fac.chol_a.shape[-1]), fac.chol_a.shape)
    a_inv = jax.scipy.linalg.cho_solve((fac.chol_a, True), eye)
    diag_a = jnp.diagonal(a_inv, axis1=-2, axis2=-1)
    if model.single:
        return (jnp.sqrt(diag_a),)
    s_inv = jax.scipy.linalg.cho_solve((fac.chol_s, True), jnp.eye(fac.chol_s.shape[0]))
    extra = jnp.einsum("gqd,de,gqe->gq", fac.x, s_inv, fac.x)
    return _from_dense(model, jnp.sqrt(jnp.diagonal(s_inv)), jnp.sqrt(diag_a + extra))


def _per_unit(model: Model, grads, steps) -> jax.Array:
    """sum of grad * step per unit (a group with one factor, everything with several)."""
    p = model.primary
    if model.single:
        return jnp.sum(grads[p] * steps[p], axis=-1)
    return sum(jnp.sum(g * s) for g, s in zip(grads, steps, strict=True))[None]


# ---------------------------------------------------------------- the inner Newton


class InnerState(NamedTuple):
    b: tuple
    value: jax.Array
    step_dir: tuple
    decrement: jax.Array
    t: jax.Array
    halvings: jax.Array
    done: jax.Array
    n_iter: jax.Array
    started: jax.Array


class Modes(NamedTuple):
    """The inner solution: modes per factor, whether each unit's mode was found, iterations."""

    b: tuple
    found: jax.Array  # (U,) bool
    n_iter: jax.Array


def _direction(model: Model, t: Terms):
    """Newton direction (-H)^-1 grad; a unit whose -H is not positive definite (its Cholesky
    fails away from the mode) takes a steepest-ascent step scaled by its largest curvature."""
    fac = factorize(model, t)
    d = solve(model, fac, t.grad)
    ok = jnp.isfinite(_per_unit(model, t.grad, d))
    scale = jnp.max(jnp.abs(jnp.diagonal(t.a, axis1=-2, axis2=-1)), axis=-1)
    scale = scale if model.single else jnp.max(scale)[None]
    scale = jnp.where(scale > 0, scale, 1.0)
    d = _select_units(
        model, ok, d, tuple(g / _expand(model, scale, f) for f, g in enumerate(t.grad))
    )
    return d, _per_unit(model, t.grad, d)


def _expand(model: Model, per_unit, f):
    """A per-unit (U,) quantity broadcast against factor f's (G_f, q_f) effects."""
    if model.single:
        return per_unit[:, None]
    return per_unit[0]


def _select_units(model: Model, mask, a: tuple, b: tuple) -> tuple:
    return tuple(
        jnp.where(_expand(model, mask, f) > 0, x, y)
        for f, (x, y) in enumerate(zip(a, b, strict=True))
    )


def inner_newton(model: Model, theta, b0: tuple, data: Data, max_iter: int) -> Modes:
    """The conditional modes b^ = argmax_b h(theta, b) of every group at once, from b0."""
    theta = lax.stop_gradient(theta)
    dtype = theta.dtype
    n_units = model.factors[model.primary].n_groups if model.single else 1
    eps = jnp.finfo(dtype).eps

    def evaluate(b):
        t = terms(model, theta, b, data)
        d, dec = _direction(model, t)
        return t.value, d, dec

    zeros_u = jnp.zeros(n_units, dtype)
    st = InnerState(
        b=b0,
        value=jnp.full(n_units, -jnp.inf, dtype),
        step_dir=jax.tree.map(jnp.zeros_like, b0),
        decrement=jnp.full(n_units, jnp.inf, dtype),
        t=zeros_u,
        halvings=jnp.zeros(n_units, jnp.int32),
        done=jnp.zeros(n_units, bool),
        n_iter=jnp.asarray(0),
        started=jnp.asarray(False),
    )

    def cond(s):
        return ~s.started | ((s.n_iter < max_iter) & ~jnp.all(s.done))

    def body(s):
        trial = tuple(
            bf + _expand(model, s.t, f) * df
            for f, (bf, df) in enumerate(zip(s.b, s.step_dir, strict=True))
        )
        value, d, dec = evaluate(trial)
        slack = _ROUNDOFF_ULPS * eps * jnp.abs(s.value)
        finite = jnp.isfinite(value) & jnp.isfinite(dec)
        accept = finite & (~s.started | (value >= s.value - slack)) & ~s.done
        scale = 1.0 + jnp.abs(value)
        stalled = (dec <= _INNER_FLOOR * scale) & (dec > _STALL * s.decrement)
        new_done = (dec <= _INNER_TOL * scale) | stalled
        halvings = jnp.where(accept, 0, s.halvings + (~s.done).astype(jnp.int32))
        given_up = halvings >= _MAX_HALVINGS
        return InnerState(
            b=_select_units(model, accept, trial, s.b),
            value=jnp.where(accept, value, s.value),
            step_dir=_select_units(model, accept, d, s.step_dir),
            decrement=jnp.where(accept, dec, s.decrement),
            t=jnp.where(accept, 1.0, 0.5 * s.t),
            halvings=halvings,
            done=s.done | (accept & new_done) | given_up | (~s.started & ~finite),
            n_iter=s.n_iter + s.started.astype(s.n_iter.dtype),
            started=jnp.asarray(True),
        )

    out = lax.while_loop(cond, body, st)
    found = jnp.isfinite(out.value) & (out.decrement <= _FOUND_TOL * (1.0 + jnp.abs(out.value)))
    return Modes(out.b, found, out.n_iter)


# ---------------------------------------------------------------- implicit derivatives


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def implicit_modes(model: Model, theta, b, data: Data):
    """b, taken to be the modes b^(theta); derivatives by the implicit function theorem."""
    return b


@implicit_modes.defjvp
def _implicit_modes_jvp(model: Model, primals, tangents):
    theta, b, data = primals
    b = implicit_modes(model, theta, b, data)
    # one pass gives grad_b h, its theta-derivative along the tangent, and -H_bb (the unused
    # tangents of the value and of -H are pruned by XLA)
    t, dt = jax.jvp(lambda th: terms(model, th, b, data), (theta,), (tangents[0],))
    return b, solve(model, factorize(model, t), dt.grad)


def terms_grad(model: Model, theta, b, data: Data) -> tuple:
    """grad_b h at (theta, b), per factor."""
    return jax.grad(lambda bb: jnp.sum(values(model, theta, bb, data)))(b)


# ---------------------------------------------------------------- the marginal likelihood


def gauss_hermite(n: int, q: int) -> tuple[np.ndarray, np.ndarray]:
    """Tensor Gauss-Hermite rule for weight exp(-|z|^2): nodes (n^q, q), ln weights + |z|^2."""
    z, w = np.polynomial.hermite.hermgauss(n)
    grid = np.stack(np.meshgrid(*([z] * q), indexing="ij"), -1).reshape(-1, q)
    lw = np.sum(np.log(np.stack(np.meshgrid(*([w] * q), indexing="ij"), -1).reshape(-1, q)), 1)
    return grid, lw + np.sum(grid**2, axis=1)


def marginal_units(model: Model, theta, b_hat: tuple, data: Data) -> jax.Array:
    """ln L per unit (per group with one factor), differentiable in theta to any order."""
    b = implicit_modes(model, theta, b_hat, data)
    t = terms(model, theta, b, data)
    fac = factorize(model, t)
    if model.n_quad == 1:
        d = sum(f.q * f.n_groups for f in model.factors) if not model.single else model.factors[0].q
        return t.value + 0.5 * d * math.log(2 * math.pi) - 0.5 * logdet_units(model, fac)
    return _agq_units(model, theta, b[0], fac.chol_a, data)


def _agq_units(model: Model, theta, b_hat, chol, data: Data) -> jax.Array:
    """Adaptive Gauss-Hermite per group (one factor): nodes b^_g + sqrt(2) R_g^-T z_k."""
    q = model.factors[0].q
    nodes, lw = gauss_hermite(model.n_quad, q)
    nodes, lw = jnp.asarray(nodes, b_hat.dtype), jnp.asarray(lw, b_hat.dtype)
    # chol is L with L L' = -H; R = L', so R^-T z = L^-1 z ... b = b^ + sqrt(2) L'^-1 z
    offsets = jax.vmap(
        lambda z: jax.scipy.linalg.solve_triangular(
            jnp.swapaxes(chol, -1, -2), jnp.broadcast_to(z, b_hat.shape)[..., None], lower=False
        )[..., 0]
    )(nodes)  # (K, G, q)
    pts = b_hat[None] + math.sqrt(2.0) * offsets
    vals = jax.vmap(lambda bk: values(model, theta, (bk,), data))(pts)  # (K, G)
    logdet_l = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    return jax.nn.logsumexp(vals + lw[:, None], axis=0) + 0.5 * q * math.log(2.0) - logdet_l
