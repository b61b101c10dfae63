"""Parameter blocks indexed by a data column (fixed effects): what `fit(index={key: column})`
declares, how the log-density is evaluated one row at a time, and the preparation of the effects.

`index={"a": "firm"}` states that observation i touches the vector `theta["a"]` only through the
entry `a[obs["firm"]]`: the log-density stays the user's own, and jaxmle evaluates it row by row
with `a` replaced by the one entry the row uses (a (1,)-vector holding z_i = a[firm_i], the column
by 0). Per row that is a function l_i(b, z_i) of the other parameters b and m scalars z_i (one per
indexed key), whose derivatives give the structured information (`_fe_newton`):

    A_bb = -sum_i w_i d2l_i/db db'                 p x p
    A_ab = -sum_{i in g} w_i d2l_i/dz db'          G x p per key       (row g: level g)
    A_aa = diag(-sum_{i in g} w_i d2l_i/dz2)       G per key, plus the cross terms between keys,
                                                   one per row, -w_i d2l_i/dz_k dz_l

The declaration is checked on the host on a sample of rows (the value and the gradient of the
full log-density must equal the row-local ones), so a log-density that reads `a` otherwise is a
plain error, as is a parameter the effects absorb (an intercept beside `a[firm]`).

Preparation (inside the compiled program, so `vmap` works), as fixest does before fitting:
  - Constant outcome: a level whose log-likelihood rises without bound in its own effect (all 0 or
    all 1 in a logit; all 0 in a Poisson) has no finite estimate. Such levels are found without
    knowing the family: the level's score d lnL_g / d a_g at a_g = -`EXTREME` is <= 0 (lnL_g still
    rising towards -inf) or at a_g = +`EXTREME` is >= 0, the other parameters at their start values.
    Their rows are dropped (weight 0), which can make other levels constant: repeated until stable.
    Their effects are NaN and the summary reports how many levels and rows went.
  - Levels with no rows left: not estimable, NaN.
  - Identification: two sets of effects that enter additively (the row's score is the same in both
    z's, checked on every row) are identified only up to a constant per connected component of the
    bipartite graph of their levels (exporter-year and importer-year: one per year). One reference
    level per component of the second set, its lowest index, is held at 0, and the summary says how
    many; the first set is the largest, solved exactly in the Newton step. With three or more sets
    only the components against the largest set are normalised.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._accumulate import chunked_sum
from ._objective import Batch

PyTree = Any

# |a_g| at which a level's score tells whether its lnL keeps rising: far beyond any finite effect of
# a logit or log-linear model (e^-1e8 is 0), inside float range, and where exp() overflows the
# score is inf or NaN, which never marks a level.
EXTREME = 1e8
# Rounds of dropping (each can make other levels constant); fixest iterates the same way.
_MAX_DROP_ROUNDS = 25
# Rows checked on the host against the full log-density.
_CHECK_ROWS = 16
# Two scores count as equal (additive effects; an absorbed parameter) to this relative difference.
_SAME_SCORE = 1e-9


class IndexSpec(NamedTuple):
    """Static description of the indexed blocks (hashable: part of the compiled program's key).

    keys/columns/sizes per indexed key m (in ravel order of init); `starts` their flat offsets;
    `leaves` per leaf of init: (m, or -1 for a non-indexed leaf, offset in b, shape); `b_index`
    the flat positions of the non-indexed entries b (in order); `b_free` which of them are free;
    `eliminated` the key solved exactly in the Newton step (the one with most levels).
    """

    keys: tuple[str, ...]
    columns: tuple[str, ...]
    sizes: tuple[int, ...]
    starts: tuple[int, ...]
    leaves: tuple[tuple[int, int, tuple[int, ...]], ...]
    b_index: tuple[int, ...]
    b_free: tuple[int, ...]
    eliminated: int

    @property
    def m(self) -> int:
        return len(self.keys)

    def with_free(self, free) -> IndexSpec:
        """The same blocks for another free mask (a refit holding other parameters)."""
        return self._replace(b_free=tuple(i for i, pos in enumerate(self.b_index) if free[pos]))

    def effect_index(self) -> np.ndarray:
        """Flat positions of every effect, key by key."""
        return np.concatenate(
            [np.arange(s, s + g) for s, g in zip(self.starts, self.sizes, strict=True)]
        )


def make_index_spec(index, init: dict, free, spec) -> IndexSpec:
    """Validate `index` against init (host): every key a 1-D, free parameter vector."""
    if not isinstance(index, dict) or not index:
        raise TypeError(
            'index= must be a dict {top-level key of init: data column}, e.g. {"a": "firm"}'
        )
    if not isinstance(init, dict):
        raise TypeError("index= names top-level keys of init, so init must be a dict")
    for key, column in index.items():
        if key not in init:
            raise KeyError(f"index names {key!r}, which is not a key of init ({list(init)})")
        if not isinstance(column, str):
            raise TypeError(f"index[{key!r}] must name a data column (a string), got {column!r}")
    paths = jax.tree_util.tree_flatten_with_path(init)[0]
    leaves, b_index, starts, sizes, keys, columns = [], [], {}, {}, [], []
    flat = b_off = 0
    for (path, _), shape in zip(paths, spec.shapes, strict=True):
        key = path[0].key
        size = math.prod(shape)
        if key in index:
            if len(path) != 1 or len(shape) != 1 or size < 1:
                raise ValueError(
                    f"init[{key!r}] is indexed by {index[key]!r}, so it must be one 1-D vector "
                    f"(one entry per level), got shape {shape}"
                )
            if not all(free[flat : flat + size]):
                raise ValueError(f"init[{key!r}] is indexed (index=); it cannot also be fixed")
            keys.append(key)
            columns.append(index[key])
            starts[key], sizes[key] = flat, size
            leaves.append((len(keys) - 1, 0, shape))
        else:
            leaves.append((-1, b_off, shape))
            b_index += range(flat, flat + size)
            b_off += size
        flat += size
    b_free = tuple(i for i, pos in enumerate(b_index) if free[pos])
    size_list = tuple(sizes[key] for key in keys)
    return IndexSpec(
        keys=tuple(keys),
        columns=tuple(columns),
        sizes=size_list,
        starts=tuple(starts[key] for key in keys),
        leaves=tuple(leaves),
        b_index=tuple(b_index),
        b_free=b_free,
        eliminated=int(np.argmax(size_list)),
    )


def check_index_data(fe: IndexSpec, data) -> None:
    """Every index column: a 1-D integer data leaf with codes in 0..G-1 (host, concrete data)."""
    if not isinstance(data, dict):
        raise TypeError("index= names data columns, so data must be a dict of arrays")
    for key, column, size in zip(fe.keys, fe.columns, fe.sizes, strict=True):
        if column not in data:
            raise KeyError(f"index[{key!r}] names data column {column!r}, which data lacks")
        codes = data[column]
        if codes.ndim != 1 or not jnp.issubdtype(codes.dtype, jnp.integer):
            raise TypeError(
                f"data[{column!r}] indexes {key!r}: it must be a 1-D integer array of codes "
                f"0..{size - 1}, got dtype {codes.dtype}, shape {codes.shape} (factorise labels "
                "first, e.g. pandas.factorize)"
            )
        if isinstance(codes, jax.core.Tracer):
            continue
        codes = np.asarray(codes)
        lo, hi = int(codes.min()), int(codes.max())
        if lo < 0 or hi >= size:
            raise ValueError(
                f"data[{column!r}] holds codes {lo}..{hi}, but init[{key!r}] has {size} entries "
                f"(levels 0..{size - 1})"
            )


def row_logpdf(logpdf, fe: IndexSpec, treedef, compute_dtype=None):
    """l(b, z, obs): the log-density of one row with each indexed vector replaced by the (1,)
    vector z[m] (the entry the row uses) and its index column by 0."""

    def f(b, z, obs):
        if compute_dtype is not None:
            b, z = b.astype(compute_dtype), z.astype(compute_dtype)
        leaves = []
        for m, start, shape in fe.leaves:
            if m >= 0:
                leaves.append(z[m : m + 1])
            else:
                leaves.append(b[start : start + math.prod(shape)].reshape(shape))
        obs = dict(obs)
        for column in fe.columns:
            # a concrete 0: theta[key][0] is then a static slice, not a gather (whose transpose,
            # a scatter per row, would dominate every derivative pass)
            obs[column] = np.zeros((), obs[column].dtype)
        return logpdf(jax.tree.unflatten(treedef, leaves), obs)

    return f


def row_effects(fe: IndexSpec, theta: jax.Array, data) -> jax.Array:
    """(n, m): the entry of each indexed vector that each row uses, z_i."""
    return jnp.stack(
        [theta[s + data[c]] for s, c in zip(fe.starts, fe.columns, strict=True)], axis=-1
    )


def check_rows(logpdf, fe: IndexSpec, spec, names, theta0, data) -> None:
    """Host check on the first rows, at a perturbed theta: the row-local log-density equals the
    full one (else `index=` misdescribes the model), and no non-indexed parameter moves every
    row's lnL exactly as an effect does (it is absorbed by the effects: an intercept)."""
    rows = min(_CHECK_ROWS, jax.tree.leaves(data)[0].shape[0])
    obs = jax.tree.map(lambda x: np.asarray(x[:rows]), data)
    k = theta0.shape[0]
    theta = np.asarray(theta0, np.float64) + 0.05 * np.sin(np.arange(k) + 1.0)
    with jax.enable_x64(True):
        ll, ll_loc, g_b, g_z = map(np.asarray, _row_check(theta, obs, logpdf, fe, spec))
    if not (np.abs(ll - ll_loc) <= 1e-8 * (1.0 + np.abs(ll))).all():
        raise ValueError(
            f"index={dict(zip(fe.keys, fe.columns, strict=True))} does not describe this log-density: on the "
            "first rows, lnL differs when each indexed vector is replaced by the one entry the "
            "row's code selects. Each row must read theta[key] only as theta[key][obs[column]]"
        )
    for j in fe.b_free:
        for m in range(fe.m):
            same = np.abs(g_b[:, j] - g_z[:, m]) <= _SAME_SCORE * np.abs(g_z[:, m])
            if same.all() and np.any(g_z[:, m] != 0):
                raise ValueError(
                    f"{names[fe.b_index[j]]} is absorbed by the effects "
                    f"{fe.keys[m]}[{fe.columns[m]}]: it moves every row's log-likelihood exactly "
                    "as the effects do (an intercept), so it is not identified; remove it from "
                    "init (fixest drops the intercept)"
                )


@functools.partial(jax.jit, static_argnames=("logpdf", "fe", "spec"))
def _row_check(theta, obs, logpdf, fe, spec):
    """Full and row-local lnL of the rows, and the local gradients (one compiled program)."""
    f = row_logpdf(logpdf, fe, spec.treedef)
    ll = jax.vmap(logpdf, (None, 0))(spec.unravel(theta), obs)
    z = row_effects(fe, theta, obs)
    b = theta[np.asarray(fe.b_index, int)]
    ll_loc, (g_b, g_z) = jax.vmap(jax.value_and_grad(f, argnums=(0, 1)), (None, 0, 0))(b, z, obs)
    return ll, ll_loc, g_b, g_z


# ---------------------------------------------------------------- preparation (in the program)


class Prepared(NamedTuple):
    """What the preparation decided: row weights with dropped rows at 0, and per key m the levels
    that are estimated (`keep`), dropped, empty, or held as references (each (G_m,) bool)."""

    weights: jax.Array
    keep: tuple[jax.Array, ...]
    dropped: tuple[jax.Array, ...]
    empty: tuple[jax.Array, ...]
    reference: tuple[jax.Array, ...]
    n_dropped_rows: jax.Array


def prepare(f, fe: IndexSpec, theta0, batch: Batch, layout) -> Prepared:
    """Drop constant-outcome levels (repeatedly), mark empty levels, and pick reference levels."""
    data = batch.data
    n = jax.tree.leaves(data)[0].shape[0]
    dtype = theta0.dtype
    w = jnp.ones(n, dtype) if batch.weights is None else batch.weights
    b0 = theta0[np.asarray(fe.b_index, int)] if fe.b_index else jnp.zeros(0, dtype)
    codes = [data[c] for c in fe.columns]

    def level_scores(active):
        """Per key: the level sums of the score at z_m = -EXTREME and +EXTREME, and row counts."""

        def chunk(b, mask):
            z = row_effects(fe, theta0, b.data)
            c = mask * b.weights
            out = []
            for m in range(fe.m):
                g = jax.vmap(jax.grad(f, argnums=1), (None, 0, 0))
                lo = g(b0, z.at[:, m].set(-EXTREME), b.data)[:, m]
                hi = g(b0, z.at[:, m].set(EXTREME), b.data)[:, m]
                seg = b.data[fe.columns[m]]
                out.append(
                    (
                        jax.ops.segment_sum(c * lo, seg, fe.sizes[m]),
                        jax.ops.segment_sum(c * hi, seg, fe.sizes[m]),
                        jax.ops.segment_sum(mask * (b.weights > 0), seg, fe.sizes[m]),
                    )
                )
            return tuple(out)

        zeros = tuple((jnp.zeros(g, dtype),) * 3 for g in fe.sizes)
        return chunked_sum(chunk, batch._replace(weights=w * active), layout, zeros)

    def drop_round(state):
        active, dropped, _, rounds = state
        sums = level_scores(active)
        new_dropped = []
        for m in range(fe.m):
            lo, hi, count = sums[m]
            # NaN or inf scores compare False: such a level is never dropped
            constant = (count > 0) & ((lo <= 0) | (hi >= 0))
            new_dropped.append(dropped[m] | constant)
        keep_rows = jnp.ones(n, bool)
        for m in range(fe.m):
            keep_rows &= ~new_dropped[m][codes[m]]
        new_active = active & keep_rows
        changed = jnp.any(new_active != active)
        return new_active, tuple(new_dropped), changed, rounds + 1

    start = (w > 0, tuple(jnp.zeros(g, bool) for g in fe.sizes), jnp.asarray(True), 0)
    active, dropped, _, _ = lax.while_loop(
        lambda s: s[2] & (s[3] < _MAX_DROP_ROUNDS), drop_round, start
    )
    present = [
        jax.ops.segment_sum(active.astype(jnp.int32), codes[m], fe.sizes[m]) > 0
        for m in range(fe.m)
    ]
    empty = tuple(~present[m] & ~dropped[m] for m in range(fe.m))
    reference = _references(f, fe, theta0, b0, batch._replace(weights=w * active), layout, active,
                            codes, present)  # fmt: skip
    keep = tuple(present[m] & ~reference[m] for m in range(fe.m))
    return Prepared(
        weights=w * active,
        keep=keep,
        dropped=dropped,
        empty=empty,
        reference=reference,
        n_dropped_rows=jnp.sum((w > 0) & ~active),
    )


def _references(f, fe, theta0, b0, batch, layout, active, codes, present):
    """One reference level per connected component of (eliminated key, key m), for each other key
    whose effects enter additively with the eliminated one."""
    e = fe.eliminated
    out = []
    for m in range(fe.m):
        if m == e:
            out.append(jnp.zeros(fe.sizes[m], bool))
            continue
        additive = _additive(f, fe, theta0, b0, batch, layout, e, m)
        comp = _components(codes[e], codes[m], active, fe.sizes[e], fe.sizes[m])
        level = jnp.arange(fe.sizes[m])
        big = jnp.iinfo(jnp.int32).max
        first = jax.ops.segment_min(
            jnp.where(present[m], level, big), jnp.where(present[m], comp, 0), fe.sizes[e]
        )
        out.append(additive & present[m] & (level == first[jnp.where(present[m], comp, 0)]))
    return tuple(out)


def _additive(f, fe, theta0, b0, batch, layout, e, m):
    """Whether every active row's score is the same in z_e and z_m (at a perturbed point)."""

    def chunk(b, mask):
        z = row_effects(fe, theta0, b.data) + jnp.linspace(0.3, -0.2, fe.m)
        g = jax.vmap(jax.grad(f, argnums=1), (None, 0, 0))(b0, z, b.data)
        gap = jnp.abs(g[:, e] - g[:, m]) - _SAME_SCORE * (jnp.abs(g[:, e]) + jnp.abs(g[:, m]))
        return jnp.max(jnp.where((mask * b.weights) > 0, gap, -jnp.inf))

    worst = chunked_sum(
        lambda b, mask: jnp.maximum(chunk(b, mask), 0.0), batch, layout, jnp.zeros((), b0.dtype)
    )
    return worst <= 0


def _components(codes_e, codes_m, active, size_e, size_m):
    """The connected component of every level of key m in the bipartite graph of (e, m) levels
    over the active rows, labelled by its lowest level of key e (label propagation)."""
    big = jnp.iinfo(jnp.int32).max

    def spread(label_e):
        label_m = jax.ops.segment_min(jnp.where(active, label_e[codes_e], big), codes_m, size_m)
        back = jax.ops.segment_min(jnp.where(active, label_m[codes_m], big), codes_e, size_e)
        return jnp.minimum(label_e, back), label_m

    def body(state):
        label_e, _, _ = state
        new_e, label_m = spread(label_e)
        return new_e, label_m, jnp.any(new_e != label_e)

    label_e = jnp.arange(size_e, dtype=jnp.int32)
    _, label_m, _ = lax.while_loop(
        lambda s: s[2], body, (label_e, jnp.zeros(size_m, jnp.int32), jnp.asarray(True))
    )
    return label_m
