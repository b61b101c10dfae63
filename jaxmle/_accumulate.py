"""Sums over observations, accumulated chunk by chunk (and device by device) inside the program.

Every quantity jaxmle needs from the data (lnL, U, H, sum u_i u_i', cluster score sums) is a sum over
observations. Evaluating it on slices of `chunk_size` rows keeps the per-observation intermediates
(n x k scores, the k forward tangents of a Hessian) in cache-sized buffers, so memory does not grow with N
beyond the data itself, and a chunked sum equals the one-shot sum up to floating-point reassociation.

With a device mesh, each device sums its own rows chunk by chunk (`shard_map`) and one `psum`
all-reduces the k-vectors and k x k matrices: the data never move between devices. The same program
runs multi-host under `jax.distributed.initialize()`, with the mesh spanning every process's devices.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

PyTree = Any

# Rows per chunk are chosen so that one chunk's working set (its data plus ~4 (chunk x k) float64
# buffers of scores and tangents) stays near this many bytes. On a CPU: large enough that the per-chunk
# GEMMs run at full speed, small enough to stay in the last-level cache of a laptop or server core. On
# an accelerator: large enough to fill it (a chunk is a few kernel launches; a GPU needs millions of
# rows per launch), small enough to leave its memory to the data.
_TARGET_CHUNK_BYTES = {"cpu": 16 * 2**20}
_ACCELERATOR_CHUNK_BYTES = 2**30
_MIN_CHUNK = 1024


class HostData:
    """Data that stay in host (numpy) memory and stream to the device one chunk at a time.

    Hashed by identity: it is part of the static layout, so fits of the same arrays share one
    compiled program.
    """

    def __init__(self, data: PyTree):
        self.data = data


class Layout(NamedTuple):
    """Where the rows live and how they are walked: rows per chunk, the device mesh (or None) whose
    axis `axis` splits the observations, or `host` data streamed from numpy for every pass."""

    chunk_size: int
    mesh: Any = None
    axis: str | None = None
    host: HostData | None = None


def leading_length(tree: PyTree) -> int:
    """N, the shared leading axis of the data leaves (validated elsewhere)."""
    return jax.tree.leaves(tree)[0].shape[0]


def auto_chunk_size(data: PyTree, k: int, platform: str = "cpu") -> int:
    """A power-of-two number of rows whose working set is about the platform's target bytes."""
    row_bytes = sum(
        math.prod(x.shape[1:]) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(data)
    )
    per_row = row_bytes + 4 * 8 * max(k, 1)
    rows = _TARGET_CHUNK_BYTES.get(platform, _ACCELERATOR_CHUNK_BYTES) // per_row
    return max(_MIN_CHUNK, 2 ** int(math.log2(max(rows, 1))))


def chunked_sum(
    fn: Callable[[PyTree, jax.Array], PyTree], batch: PyTree, layout: Layout, zeros: PyTree
) -> PyTree:
    """sum over rows of fn's mask-weighted chunk sums, over every device of `layout.mesh`.

    `zeros` is fn's output as zeros (shapes and accumulation dtypes): given, not found by tracing
    fn a second time, which would double the tracing of every autodiff pass at the first call.
    """
    if layout.mesh is None:
        return _local_sum(fn, batch, layout.chunk_size, zeros, layout.host)
    spec = jax.sharding.PartitionSpec(layout.axis)

    def local(b):
        part = _local_sum(fn, b, layout.chunk_size, zeros)
        return jax.tree.map(lambda x: lax.psum(x, layout.axis), part)

    in_specs = (jax.tree.map(lambda _: spec, batch),)
    out_specs = jax.sharding.PartitionSpec()
    # check_vma=False: the loop carry starts as replicated zeros and becomes per-device sums
    return jax.shard_map(
        local, mesh=layout.mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False
    )(batch)


def _local_sum(fn, batch, chunk_size: int, zeros, host: HostData | None = None) -> PyTree:
    """sum over chunks c of fn(batch[c], mask_c), where fn returns a pytree of mask-weighted sums.

    The chunks are `dynamic_slice`s of the original arrays inside one `fori_loop` (no padded or
    reshaped copy of the data). When chunk_size does not divide N, the last chunk is the last
    chunk_size rows, and `mask_c` (1 for rows this chunk owns, 0 for rows the previous chunk already
    summed) keeps every row counted once, so `fn` appears once in the compiled program.

    With `host`, `batch.data` is None and each chunk of the data is copied from host memory by a
    callback inside the loop (weights and cluster codes, N-vectors, stay on the device).
    """
    n = leading_length(host.data if host is not None else batch)
    chunk_size = min(chunk_size, n)
    n_chunks = -(-n // chunk_size)
    rows = jnp.arange(chunk_size)
    dtype = jax.tree.leaves(zeros)[0].dtype

    def term(i):
        start = jnp.minimum(i * chunk_size, n - chunk_size)
        chunk = jax.tree.map(lambda x: lax.dynamic_slice_in_dim(x, start, chunk_size), batch)
        if host is not None:
            chunk = chunk._replace(data=_fetch(host, start, chunk_size))
        mask = (start + rows >= i * chunk_size).astype(dtype)
        return fn(chunk, mask)

    def add(i, acc):
        return jax.tree.map(lambda a, t: a + t.astype(a.dtype), acc, term(i))

    return add(0, zeros) if n_chunks == 1 else lax.fori_loop(0, n_chunks, add, zeros)


def _fetch(host: HostData, start, size: int) -> PyTree:
    """Rows [start, start + size) of the host data, copied to the device by a callback.

    8-byte leaves (float64, int64) cross the callback as pairs of uint32 and are bitcast back
    inside the program: JAX converts a callback's outputs to the dtypes of the global 64-bit flag
    of the thread that runs it (an XLA thread, outside any `enable_x64` scope), which would
    otherwise turn float64 rows into float32 ones.
    """
    leaves = jax.tree.leaves(host.data)
    wide = [jnp.dtype(x.dtype).itemsize == 8 for x in leaves]
    shapes = [
        jax.ShapeDtypeStruct((size, *x.shape[1:], 2), np.uint32)
        if w
        else jax.ShapeDtypeStruct((size, *x.shape[1:]), x.dtype)
        for x, w in zip(leaves, wide, strict=True)
    ]

    def take(s):
        s = int(s)
        rows = [x[s : s + size] for x in leaves]
        return [_as_words(r) if w else r for r, w in zip(rows, wide, strict=True)]

    parts = jax.pure_callback(take, shapes, start, vmap_method="sequential")
    rows = [
        lax.bitcast_convert_type(p, x.dtype) if w else p
        for p, x, w in zip(parts, leaves, wide, strict=True)
    ]
    return jax.tree.unflatten(jax.tree.structure(host.data), rows)


def _as_words(rows: np.ndarray) -> np.ndarray:
    """An 8-byte array as (..., 2) uint32 words, the same bytes (undone by `bitcast_convert_type`)."""
    rows = np.ascontiguousarray(rows)
    return rows.view(np.uint32).reshape(*rows.shape, 2)


# ------------------------------------------------------------------ placement


def platform_of(data) -> str:
    """'cpu', 'gpu', ... where the data lie (the default backend for traced or host data)."""
    leaf = jax.tree.leaves(data)[0]
    if isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer):
        return next(iter(leaf.devices())).platform
    return jax.default_backend()


def n_devices(layout: Layout) -> int:
    if layout.mesh is None:
        return 1
    axes = layout.axis if isinstance(layout.axis, tuple) else (layout.axis,)
    return math.prod(layout.mesh.shape[a] for a in axes)


def chosen_devices(devices) -> list:
    """The devices of `devices=`: a count of `jax.devices()` (1..available) or a non-empty list."""
    available = jax.devices()
    if isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        if not 1 <= devices <= len(available):
            raise ValueError(
                f"devices={devices}, but this process sees {len(available)} device(s) "
                f"({available[0].platform}); give a count from 1 to {len(available)} or a list of "
                "jax.devices() (on CPU, start Python with "
                "XLA_FLAGS=--xla_force_host_platform_device_count=<n> to get n devices)"
            )
        return available[: int(devices)]
    if isinstance(devices, (list, tuple)) and devices:
        bad = [d for d in devices if not isinstance(d, jax.Device)]
        if bad:
            raise TypeError(f"devices= lists {bad!r}, which are not jax devices (jax.devices())")
        if len(set(devices)) != len(devices):
            raise ValueError("devices= lists a device more than once")
        return list(devices)
    raise TypeError(
        f"devices= must be a positive int (a count of jax.devices()) or a non-empty list of "
        f"devices, got {devices!r}"
    )


def place(data, weights, groups, devices, n, chunk_size, traced):
    """The Layout of the rows: data already sharded on axis 0 over a mesh stay where they are;
    `devices` shards host data (padding to a multiple of the device count with zero-weight copies of
    the last row, whose l_i is finite); otherwise one device."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    if devices is not None:
        if traced:
            raise ValueError("devices= places host data; under jit, device_put the data first")
        mesh, axis = Mesh(np.array(chosen_devices(devices)), ("obs",)), "obs"
    else:
        found = {
            (x.sharding.mesh, x.sharding.spec[0])
            for x in jax.tree.leaves(data)
            if isinstance(getattr(x, "sharding", None), NamedSharding)
            and len(x.sharding.spec) > 0
            and x.sharding.spec[0] is not None
        }
        if not found:
            return data, weights, groups, Layout(chunk_size)
        if len(found) > 1:
            raise ValueError(f"data leaves are sharded over different meshes or axes: {found}")
        mesh, axis = found.pop()
    layout = Layout(chunk_size, mesh, axis)
    pad = (-n) % n_devices(layout)
    if pad:
        if devices is None:
            raise ValueError(f"N = {n} rows do not split evenly over the mesh axis {axis!r}")
        data = jax.tree.map(lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], pad, 0)]), data)
        base = jnp.ones(n, jax.tree.leaves(data)[0].dtype) if weights is None else weights
        weights = jnp.concatenate([base, jnp.zeros(pad, base.dtype)])
        if groups is not None:
            groups = jnp.concatenate([groups, jnp.zeros(pad, groups.dtype)])
    rows = NamedSharding(mesh, PartitionSpec(axis))
    data, weights, groups = jax.device_put((data, weights, groups), rows)
    return data, weights, groups, layout
