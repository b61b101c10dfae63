"""Models written as `predict(theta, obs) -> Distribution`: their log-density and expected information.

    model = Model(predict, response="y")           # logpdf(theta, obs) = ln f(obs["y"] | predict(theta, obs))
    jm.fit(model, init, data, method="fisher", cov="expected", expected=model.expected)

`expected(predict)` is the `(predict, fisher)` pair `jaxmle.fit` takes: its first member maps
(theta, obs) to eta_i, every leaf of the distribution pytree as one flat vector (parameters and
constants such as trials, limits or event flags; constants get zero columns in J_i), and its second
returns F for that vector, the distribution's `fisher()` embedded by P' F P with P = d parameters /
d leaves. `fit` then forms I(theta) = sum_i w_i J_i' F(eta_i) J_i (docs/theory.md), J_i by forward-mode
autodiff. A hand-written logpdf can use it too: `jm.fit(my_logpdf, ..., expected=expected(predict))`.

Both members compare equal when their `predict` does, so a repeat fit reuses the compiled program.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._base import Distribution


class _Structure:
    """The distribution's pytree structure, recorded when eta is traced and read back by F.

    `Objective.fisher` traces eta before it calls fisher, within the same trace; the structure is
    static (the class of the distribution and which optional fields are set), the same every time.
    """

    def __init__(self):
        self.value = None


def _as_distribution(dist, where: str) -> Distribution:
    if not isinstance(dist, Distribution):
        raise TypeError(
            f"{where}: predict(theta, obs) must return a jaxmle.families distribution "
            f"(Normal(...), Poisson(...), ...), got {type(dist).__name__}"
        )
    return dist


@dataclasses.dataclass(frozen=True)
class DistributionEta:
    """eta_i: every leaf of predict(theta, obs) as one flat float vector."""

    predict: Callable
    structure: _Structure = dataclasses.field(compare=False, repr=False)

    def __call__(self, theta, obs):
        dist = _as_distribution(self.predict(theta, obs), "expected information")
        leaves, treedef = jax.tree.flatten(dist)
        leaves = [jnp.asarray(x) for x in leaves]
        self.structure.value = (treedef, tuple((x.shape, x.dtype) for x in leaves))
        dtype = jnp.result_type(*jax.tree.leaves(theta), float)
        return jnp.concatenate([jnp.ravel(x).astype(dtype) for x in leaves])


@dataclasses.dataclass(frozen=True)
class DistributionFisher:
    """F for the flat vector of `DistributionEta`: P' F(parameters) P."""

    predict: Callable
    structure: _Structure = dataclasses.field(compare=False, repr=False)

    def __call__(self, eta, obs):
        if self.structure.value is None:
            raise RuntimeError("DistributionFisher was called before its DistributionEta")
        treedef, specs = self.structure.value
        eta = jnp.atleast_1d(eta)
        pieces, start = [], 0
        for shape, _ in specs:
            size = int(np.prod(shape, dtype=int))
            pieces.append(eta[start : start + size].reshape(shape))
            start += size
        is_float = [jnp.issubdtype(dtype, jnp.floating) for _, dtype in specs]

        def rebuild(float_leaves):
            it = iter(float_leaves)
            leaves = [
                next(it) if f else piece.astype(dtype)
                for f, piece, (_, dtype) in zip(is_float, pieces, specs, strict=True)
            ]
            return jax.tree.unflatten(treedef, leaves)

        float_leaves = [p for p, f in zip(pieces, is_float, strict=True) if f]
        dist = rebuild(float_leaves)
        f = jnp.atleast_2d(dist.fisher())
        jac = jax.jacfwd(lambda ls: rebuild(ls).parameters())(float_leaves)
        cols, it = [], iter(jac)
        for piece, flt in zip(pieces, is_float, strict=True):
            block = next(it) if flt else jnp.zeros((f.shape[0], *piece.shape), eta.dtype)
            cols.append(block.reshape(f.shape[0], -1))
        p = jnp.concatenate(cols, axis=1)  # (m, m_full)
        return p.T @ f @ p


def expected(predict: Callable) -> tuple[DistributionEta, DistributionFisher]:
    """The `expected=(predict, fisher)` pair of `jaxmle.fit` for `predict(theta, obs) -> Distribution`."""
    structure = _Structure()
    return DistributionEta(predict, structure), DistributionFisher(predict, structure)


def _response(obs, response):
    if callable(response):
        return response(obs)
    try:
        return obs[response]
    except (KeyError, TypeError, IndexError) as e:
        raise KeyError(
            f"response {response!r} is not a leaf of the data (obs[{response!r}])"
        ) from e


@dataclasses.dataclass(frozen=True)
class Model:
    """logpdf(theta, obs) = predict(theta, obs).logpdf(obs[response]), with `.expected` for fit.

    `response` is a key of the data (default "y") or a function obs -> y. Equal when `predict` and
    `response` are, so a repeat fit reuses its compiled program.
    """

    predict: Callable
    response: Any = "y"
    expected: tuple = dataclasses.field(init=False, compare=False, repr=False)

    def __post_init__(self):
        if not callable(self.predict):
            raise TypeError(f"predict must be callable, got {type(self.predict).__name__}")
        object.__setattr__(self, "expected", expected(self.predict))

    def __call__(self, theta, obs):
        dist = _as_distribution(self.predict(theta, obs), "Model")
        return dist.logpdf(_response(obs, self.response))
