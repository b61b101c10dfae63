"""How observations depend on each other: cluster ids (`groups=`) and the time order (`time=`).

`groups` are one-way labels, or multi-way `{"firm": f, "year": t}`.

Multi-way clustering (Cameron, Gelbach & Miller 2011) needs the score sums of every clustering:
each factor and every intersection of factors, in R's order (`_covariance.clusterings`). The host
factorises each of them to codes 0..G_S-1 and offsets them into one code space, so the fit's one
`segment_sum` per chunk stacks all of them in `score_groups` (G_1 + G_2 + G_12 rows for two-way);
`clusters = (("firm", G_1), ("year", G_2), ("firm:year", G_12))` says which rows are which.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from ._covariance import clusterings
from ._inputs import prepare_groups


def prepare_clusters(groups, n_groups, n: int, traced: bool):
    """(codes, n_groups, clusters): (N,) codes and G for one-way groups (clusters = ()), or (N, S)
    offset codes, their total and the static `((name, G_S), ...)` for a mapping of factors."""
    if not isinstance(groups, Mapping):
        codes, count = prepare_groups(groups, n_groups, n, traced)
        return codes, count, ()
    if traced:
        raise ValueError(
            "multi-way groups={...} are factorised on the host, before any work: not under "
            "jit/vmap (fit on the host, or cluster one way with integer codes and n_groups=G)"
        )
    if n_groups is not None:
        raise ValueError("n_groups= goes with one-way integer codes; multi-way groups count theirs")
    if not groups or not all(isinstance(name, str) for name in groups):
        raise ValueError("groups={...} maps factor names (str) to (N,) labels, one or more")
    factors = []
    for name, labels in groups.items():
        # one factor's checks are one-way groups' (shape, missing or mixed labels, >= 2 clusters)
        try:
            codes, _ = prepare_groups(labels, None, n, False)
        except ValueError as e:
            raise ValueError(f"groups[{name!r}]: {e}") from None
        except TypeError as e:
            raise TypeError(f"groups[{name!r}]: {e}") from None
        factors.append(np.asarray(codes))
    names = list(groups)
    columns, clusters, offset = [], [], 0
    for members in clusterings(len(factors)):
        stacked = np.stack([factors[i] for i in members], axis=1)
        codes = np.unique(stacked, axis=0, return_inverse=True)[1].reshape(n)
        count = int(codes.max()) + 1
        label = ":".join(names[i] for i in members)
        if count < 2:
            raise ValueError(
                f"cluster-robust covariance needs at least 2 clusters; groups[{label!r}] has 1"
            )
        columns.append(codes + offset)
        clusters.append((label, count))
        offset += count
    if len(factors) == 1:
        return jnp.asarray(columns[0].astype(np.int32)), offset, tuple(clusters)
    return jnp.asarray(np.stack(columns, axis=1).astype(np.int32)), offset, tuple(clusters)


def prepare_time(time, n: int, traced: bool):
    """The row indices sorted by `time` (stable), or None; one row per period.

    HAC sums run over neighbouring periods, so two rows at one time (panel data) are an error:
    HAC for panels (Driscoll-Kraay) is not this kind.
    """
    if time is None:
        return None
    if traced or isinstance(time, jax.core.Tracer):
        t = jnp.asarray(time)
        if t.shape != (n,):
            raise ValueError(f"time must have shape (N,) = ({n},), got {t.shape}")
        return jnp.argsort(t, stable=True).astype(jnp.int32)
    t = np.asarray(time)
    if t.shape != (n,):
        raise ValueError(f"time must have shape (N,) = ({n},), got {t.shape}")
    if t.dtype.kind not in "iufM":
        raise TypeError(f"time must be numbers or datetimes, got dtype {t.dtype}")
    if t.dtype.kind == "f" and not np.isfinite(t).all():
        raise ValueError(f"time is NaN or infinite at row {np.flatnonzero(~np.isfinite(t))[0]}")
    order = np.argsort(t, kind="stable")
    same = np.flatnonzero(t[order][1:] == t[order][:-1])
    if same.size:
        a, b = sorted((int(order[same[0]]), int(order[same[0] + 1])))
        raise ValueError(
            f"time has {same.size} repeated value(s), first at rows {a} and {b}: HAC needs one "
            "row per period (for panel data cluster by period or unit instead)"
        )
    return jnp.asarray(order.astype(np.int32))
