"""Rows to clusters on the host: factorise the cluster labels and the times, sort, check, and lay the
clusters out on padded grids (buckets) for the compiled GEE program.

Rows may come in any order: they are sorted by (cluster, time) here with a stable sort, so the answer
does not depend on the row order (geepack instead takes consecutive rows with the same id as one
cluster, in the order given, and silently fits other clusters when the data are not sorted). Without
`time`, the order of a cluster's rows in the data is its time order (what ar1 and unstructured use).

Times are coded as in geepack's `geeglm(waves = )`, which takes `as.factor(waves)`: the dense rank of
the distinct time values over the whole data set (times 0, 2, 6 become waves 0, 1, 2, so ar1 counts
a gap between 2 and 6 as one step only when no cluster has a time in between).

Layout: a cluster of n rows occupies n slots of a grid row; clusters are grouped into buckets by size
(every distinct size when there are few, else sizes rounded up to a power of two), so that clusters of
unequal size are batched without a Python loop over clusters and padding stays below 2x. For
unstructured, the slots are the waves themselves (width K, one bucket). Padded slots get weight 0,
design 0 and a valid mean.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# at most this many exact-size buckets; beyond it sizes are rounded up to powers of two
_EXACT_BUCKETS = 3


@dataclasses.dataclass
class ClusterLayout:
    buckets: list  # one dict of grid arrays per bucket
    rows: list  # per bucket (G_b, m_b): the data row in each slot, -1 for padding
    patterns: np.ndarray  # (P, K) observed-wave patterns (unstructured), else (0, K)
    n_clusters: int
    n_waves: int
    sizes: np.ndarray  # observations per cluster
    labels: np.ndarray  # cluster label of code g


def factorise(values, what: str):
    """(codes 0..L-1, the distinct values in order) of a 1-D array of labels."""
    arr = np.asarray(values)
    try:
        uniq, codes = np.unique(arr, return_inverse=True)
    except TypeError as e:
        raise TypeError(f"{what} mixes values that cannot be ordered ({e})") from e
    return codes.astype(np.int64), uniq


def build_layout(
    groups, time, arrays: dict, pad: dict, *, by_wave: bool, min_pairs: bool
) -> ClusterLayout:
    """Sort rows by (cluster, time), check them, and pack `arrays` ({name: (N, ...)}) into buckets.

    `by_wave`: slots are the time codes (unstructured); `min_pairs`: the structure estimates a
    correlation, so some cluster must have two observations.
    """
    codes, labels = factorise(groups, "groups")
    n = codes.shape[0]
    if time is not None:
        tcodes, tvalues = factorise(time, "time")
        key = codes * len(tvalues) + tcodes
    else:
        tcodes, tvalues, key = None, None, codes
    # data already sorted by cluster (and time) need no reordering copy
    order = None if np.all(key[1:] >= key[:-1]) else np.argsort(key, kind="stable")
    c = codes if order is None else codes[order]
    g_count = len(labels)
    sizes = np.bincount(c, minlength=g_count)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    pos = np.arange(n) - starts[c]
    if tcodes is not None:
        t = tcodes if order is None else tcodes[order]
        dup = np.flatnonzero((c[1:] == c[:-1]) & (t[1:] == t[:-1]))
        if dup.size:
            i = dup[0]
            raise ValueError(
                f"time has duplicates within a cluster: cluster {_show(labels[c[i]])!r} has two rows "
                f"at time {_show(tvalues[t[i]])!r} ({dup.size} such pair(s)); each cluster may have one row "
                "per time"
            )
        wave, n_waves = t, len(tvalues)
    else:
        wave, n_waves = pos, int(sizes.max())
    if min_pairs and sizes.max() < 2:
        raise ValueError(
            "every cluster has one observation: a working correlation cannot be estimated; use "
            "corstr='independence' (or check groups=)"
        )
    slot = wave if by_wave else pos
    width_of = np.full(g_count, n_waves) if by_wave else sizes
    widths = _bucket_widths(width_of)
    bucket_of = np.searchsorted(widths, width_of)  # smallest bucket width >= the cluster's
    sorted_arrays = {
        name: np.asarray(a) if order is None else np.asarray(a)[order] for name, a in arrays.items()
    }
    rows_sorted = np.arange(n) if order is None else order
    buckets, rows = [], []
    if widths.size == 1 and not by_wave and np.all(sizes == widths[0]):
        # every cluster has the same size: the grid is a reshape, no padding
        shape = (g_count, int(widths[0]))
        grid = {k: a.reshape(*shape, *a.shape[1:]) for k, a in sorted_arrays.items()}
        grid["mask"], grid["wave"] = np.ones(shape), wave.reshape(shape).astype(float)
        buckets.append(grid)
        rows.append(rows_sorted.reshape(shape))
        widths = np.asarray([])  # done
    row_bucket = bucket_of[c]
    for b, width in enumerate(widths):
        members = np.flatnonzero(bucket_of == b)
        if members.size == 0:
            continue
        local = np.full(g_count, -1)
        local[members] = np.arange(members.size)
        sel = np.flatnonzero(row_bucket == b)
        flat = local[c[sel]] * width + slot[sel]  # the slot of each row in the flattened grid
        size = members.size * width
        grid = {}
        for name, arr in sorted_arrays.items():
            out = np.full((size, *arr.shape[1:]), pad.get(name, 0), arr.dtype)
            out[flat] = arr[sel]
            grid[name] = out.reshape(members.size, width, *arr.shape[1:])
        mask, waves, row_map = np.zeros(size), np.zeros(size), np.full(size, -1)
        mask[flat], waves[flat], row_map[flat] = 1.0, wave[sel], rows_sorted[sel]
        grid["mask"], grid["wave"] = mask.reshape(-1, width), waves.reshape(-1, width)
        buckets.append(grid)
        rows.append(row_map.reshape(-1, width))
    patterns = np.zeros((0, n_waves))
    if by_wave:
        patterns, which = np.unique(buckets[0]["mask"], axis=0, return_inverse=True)
        buckets[0]["pattern"] = which.reshape(-1).astype(np.int32)
        _check_pairs(patterns, tvalues)
    else:
        for grid in buckets:
            grid["pattern"] = np.zeros(grid["mask"].shape[0], np.int32)
    return ClusterLayout(buckets, rows, patterns, g_count, n_waves, sizes, labels)


def _bucket_widths(sizes) -> np.ndarray:
    distinct = np.unique(sizes)
    if distinct.size <= _EXACT_BUCKETS:
        return distinct
    rounded = 2 ** np.ceil(np.log2(distinct)).astype(int)
    widths = [int(distinct[rounded == r].max()) for r in np.unique(rounded)]
    return np.asarray(sorted(widths))


def _check_pairs(patterns, tvalues):
    """Unstructured: every pair of waves must be observed together in some cluster."""
    both = patterns.T @ patterns
    missing = np.argwhere(np.triu(both == 0, 1))
    if missing.size:
        j, k = missing[0]
        names = tvalues if tvalues is not None else np.arange(patterns.shape[1])
        raise ValueError(
            f"corstr='unstructured': no cluster is observed at both time {_show(names[j])!r} and "
            f"time {_show(names[k])!r} ({len(missing)} such pair(s)), so their correlation is not "
            "identified; "
            "use ar1 or exchangeable, or drop those times"
        )


def _show(value):
    """A label as the user wrote it (a Python scalar, not np.int64(3))."""
    return value.item() if isinstance(value, np.generic) else value
