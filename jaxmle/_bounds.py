"""Bounded parameters: the maps between an unconstrained u (what the optimiser sees) and a natural x.

    positive()          x = exp(u)                            x in (0, inf)
    interval(a, b)      x = a + (b - a) / (1 + exp(-u))       x in (a, b)
    interval(a, inf)    x = a + exp(u)                        x in (a, inf)
    interval(-inf, b)   x = b - exp(-u)                       x in (-inf, b)

Pure maps over pytrees and flat vectors; `_transforms` fits and reports with them, `_profile` profiles
on the u scale, and a fit's `Problem` names the `Transforms` it was made with.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any
_INF = math.inf


@dataclasses.dataclass(frozen=True)
class Bounds:
    """The open range (lower, upper) of a natural parameter and its map from the real line.

    Hashable and static: the bounds are Python floats, part of the compiled program.
    """

    lower: float = -_INF
    upper: float = _INF

    def __post_init__(self):
        lo, hi = float(self.lower), float(self.upper)
        if math.isnan(lo) or math.isnan(hi) or not lo < hi:
            raise ValueError(f"a range needs lower < upper, got ({self.lower}, {self.upper})")
        object.__setattr__(self, "lower", lo)
        object.__setattr__(self, "upper", hi)

    def forward(self, u):
        """u (real line) -> x in (lower, upper)."""
        lo, hi = self.lower, self.upper
        if math.isinf(lo) and math.isinf(hi):
            return u
        if math.isinf(hi):
            return lo + jnp.exp(u)
        if math.isinf(lo):
            return hi - jnp.exp(-u)
        return lo + (hi - lo) * jax.nn.sigmoid(u)

    def inverse(self, x):
        """x in (lower, upper) -> u; NaN or +-inf outside or on the boundary."""
        lo, hi = self.lower, self.upper
        if math.isinf(lo) and math.isinf(hi):
            return x
        if math.isinf(hi):
            return jnp.log(x - lo)
        if math.isinf(lo):
            return -jnp.log(hi - x)
        p = (x - lo) / (hi - lo)
        return jnp.log(p) - jnp.log1p(-p)

    def contains(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        return (x > self.lower) & (x < self.upper)

    def __str__(self) -> str:
        return f"({self.lower:g}, {self.upper:g})"


def positive() -> Bounds:
    """x = exp(u) > 0 (a scale, a rate, a variance)."""
    return Bounds(0.0, _INF)


def interval(lower: float = -_INF, upper: float = _INF) -> Bounds:
    """x in the open interval (lower, upper); either end may be infinite (interval(0, 1): a
    probability; interval(1, inf): a degrees-of-freedom parameter above 1)."""
    return Bounds(lower, upper)


# ---------------------------------------------------------------- the spec over an init pytree


class Transforms:
    """{top-level key of init: Bounds}; keys not named are left as they are (the real line)."""

    def __init__(self, spec: Mapping[str, Bounds] | Transforms):
        if isinstance(spec, Transforms):
            spec = spec.spec
        if not isinstance(spec, Mapping):
            raise TypeError(
                "transforms must be a dict {top-level key of init: jm.positive() | "
                f"jm.interval(a, b)}}, got {type(spec).__name__}"
            )
        for key, b in spec.items():
            if not isinstance(b, Bounds):
                raise TypeError(
                    f"transforms[{key!r}] must be jm.positive() or jm.interval(a, b), got {b!r}"
                )
        self.spec = dict(spec)
        self._key = tuple(sorted(self.spec.items()))

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, Transforms) and self._key == other._key

    def __repr__(self):
        return "Transforms({" + ", ".join(f"{k!r}: {b}" for k, b in self._key) + "})"

    # -- pytree level
    def check(self, init: PyTree, fixed: Mapping | None = None) -> None:
        """Host checks before any work: keys exist, start (and fixed) values inside the range."""
        if not isinstance(init, Mapping):
            raise TypeError("transforms= names top-level keys of init, so init must be a dict")
        unknown = [k for k in self.spec if k not in init]
        if unknown:
            raise KeyError(f"transforms name {unknown}, which are not keys of init ({list(init)})")
        for source, tree in (("init", init), ("fixed", fixed or {})):
            for key, b in self.spec.items():
                if key not in tree:
                    continue
                for path, leaf in jax.tree_util.tree_flatten_with_path(tree[key])[0]:
                    if isinstance(leaf, jax.core.Tracer):
                        continue  # under jit/vmap the fit reports a non-finite start instead
                    x = np.asarray(leaf, dtype=float)
                    bad = ~b.contains(x)
                    if bad.any():
                        where = f"{source}[{key!r}]{jax.tree_util.keystr(path)}"
                        idx = np.argwhere(bad)[0]
                        at = f" at index {tuple(int(i) for i in idx)}" if x.ndim else ""
                        value = x[tuple(idx)] if x.ndim else float(x)
                        raise ValueError(
                            f"{where} = {value!r}{at} is outside the range {b} of its transform; "
                            "start strictly inside the range (the optimiser works on the "
                            "unconstrained scale, where the boundary is at infinity)"
                        )

    def _map(self, tree: PyTree, fn: Callable[[Bounds, Any], Any]) -> PyTree:
        if not self.spec:
            return tree
        out = dict(tree)
        for key, b in self.spec.items():
            if key in out:
                out[key] = jax.tree.map(lambda leaf, b=b: fn(b, leaf), out[key])
        return out

    def to_natural(self, theta_u: PyTree) -> PyTree:
        return self._map(theta_u, lambda b, u: b.forward(u))

    def to_unconstrained(self, theta: PyTree) -> PyTree:
        return self._map(theta, lambda b, x: b.inverse(jnp.asarray(x, dtype=float)))

    def wrap(self, logpdf: Callable) -> Callable:
        """logpdf(x, obs) -> logpdf(x(u), obs); equal wrappers hash equal (no recompiles)."""
        return _NaturalLogpdf(logpdf, self)

    # -- flat level (ravel_pytree order)
    def flat_bounds(self, params: PyTree) -> tuple[Bounds, ...]:
        """One Bounds per entry of ravel_pytree(params); the real line where not transformed."""
        out = []
        for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
            key = path[0].key if path and isinstance(path[0], jax.tree_util.DictKey) else None
            out += [self.spec.get(key, Bounds())] * int(np.size(leaf))
        return tuple(out)


class _NaturalLogpdf:
    """The user's log-density composed with u -> x; hashed by (logpdf, transforms) for jit."""

    def __init__(self, logpdf, transforms):
        self.logpdf = logpdf
        self.transforms = transforms
        self.__name__ = getattr(logpdf, "__name__", "logpdf")

    def __call__(self, theta_u, obs):
        return self.logpdf(self.transforms.to_natural(theta_u), obs)

    def __hash__(self):
        return hash((self.logpdf, self.transforms))

    def __eq__(self, other):
        return (
            isinstance(other, _NaturalLogpdf)
            and self.logpdf == other.logpdf
            and self.transforms == other.transforms
        )


def _apply_flat(bounds: tuple[Bounds, ...], fn: Callable[[Bounds, Any], Any], v):
    """fn(b, v[idx]) for each distinct Bounds b over its (static) indices."""
    out = v
    for b in dict.fromkeys(bounds):
        idx = np.flatnonzero([x == b for x in bounds])
        out = out.at[idx].set(fn(b, v[idx]))
    return out


def flat_forward(bounds, u):
    return _apply_flat(bounds, lambda b, x: b.forward(x), u)


def flat_inverse(bounds, x):
    return _apply_flat(bounds, lambda b, v: b.inverse(v), x)


def _derivatives(bounds, x):
    """(du/dx, d2u/dx2) at x, elementwise, by forward-mode autodiff of the inverse map."""
    ones = jnp.ones_like(x)

    def du(v):
        return jax.jvp(lambda w: flat_inverse(bounds, w), (v,), (ones,))[1]

    d1, d2 = jax.jvp(du, (x,), (ones,))
    return d1, d2
