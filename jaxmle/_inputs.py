"""Host-side checks of a fit's inputs, made before any work: init, data, weights, cluster labels and
the log-density itself, each error naming the leaf, row or parameter at fault.

Under an outer `jit`/`vmap` (traced inputs) Python cannot look at values: the value checks are skipped
and the fit's status carries the outcome instead.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._status import MESSAGES, Status


def leaf_name(path) -> str:
    return "data" + jax.tree_util.keystr(path) if path else "data"


def prepare_init(init, fixed, dtype, labels=None):
    """(init as float arrays, the free mask in ravel order, entry labels).

    Concrete start values stay numpy, so a first call compiles no eager jax operations before the
    fit's own program. `fixed` is {top-level key: value}, or a list of keys held at their init
    values. A pandas Series leaf of init is labelled by its index (`labels`, as `fit(names=...)`).
    """
    traced = any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves((init, fixed)))
    xp = jnp if traced else np
    labels = dict(labels or {})
    if isinstance(init, dict):
        for key, leaf in init.items():
            index = getattr(leaf, "index", None)
            if index is not None and hasattr(leaf, "to_numpy") and key not in labels:
                labels[key] = [str(v) for v in index]  # a pandas Series

    def to_float(path, x):
        x = np.asarray(x) if hasattr(x, "to_numpy") else x
        x = xp.asarray(x)
        if not (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)):
            raise TypeError(
                f"init{jax.tree_util.keystr(path)} must be real numbers, got dtype {x.dtype}"
            )
        x = x.astype(dtype)
        if not traced and not np.isfinite(x).all():
            raise ValueError(
                f"init{jax.tree_util.keystr(path)} has a NaN or infinite start value; "
                "start every parameter at a finite number"
            )
        return x

    init = jax.tree_util.tree_map_with_path(to_float, init)
    if not jax.tree.leaves(init):
        raise ValueError("init has no parameters")
    if fixed is None or (isinstance(fixed, (list, tuple)) and not fixed):
        fixed = {}
    if isinstance(fixed, str):
        fixed = [fixed]
    if fixed and not isinstance(init, dict):
        raise TypeError("fixed= names top-level keys of init, so init must be a dict")
    if isinstance(fixed, (list, tuple)):  # keys held at their start values
        fixed = {key: init.get(key) for key in fixed}
    if not isinstance(fixed, dict):
        raise TypeError(
            f"fixed= must be {{top-level key of init: value}} or a list of keys, got "
            f"{type(fixed).__name__}"
        )
    unknown = [key for key in fixed if key not in init]
    if unknown:
        raise KeyError(f"fixed names {unknown}, which are not keys of init ({list(init)})")
    free = []
    if fixed:
        init = dict(init)
        for key in init:
            if key in fixed:
                shape = np.shape(init[key])
                value = xp.asarray(fixed[key], dtype)
                if value.shape not in (shape, ()):
                    raise ValueError(
                        f"fixed[{key!r}] has shape {value.shape}, but init[{key!r}] has shape "
                        f"{shape}; give a value of that shape (or a scalar)"
                    )
                if not traced and not np.isfinite(value).all():
                    raise ValueError(f"fixed[{key!r}] is NaN or infinite")
                init[key] = xp.broadcast_to(value, shape)
        # dict flattening sorts keys: the mask in ravel order
        for path, leaf in jax.tree_util.tree_flatten_with_path(init)[0]:
            free += [path[0].key not in fixed] * int(np.size(leaf))
    else:
        free = [True] * sum(int(np.size(x)) for x in jax.tree.leaves(init))
    if not any(free):
        raise ValueError("every parameter is fixed: nothing to estimate")
    return init, tuple(free), labels


def prepare_data(data, dtype, traced, on_host=False):
    """(data as arrays of the fit's dtype, N): on the device, or numpy for `on_host` (streaming).

    The result must not change after it is returned, so the data it keeps for refits must not be
    the caller's memory: a numpy array of the right dtype is copied when the device array would
    alias it (`device_put` shares a 64-byte-aligned buffer on a CPU instead of copying it) or when
    it is kept on the host as it is. Arrays converted to the fit's dtype are fresh already.
    """
    flat, treedef = jax.tree_util.tree_flatten_with_path(data)
    if not flat:
        raise ValueError("data has no arrays")
    out, lengths = [], {}
    for path, leaf in flat:
        src = x = leaf if isinstance(leaf, jax.Array) else np.asarray(leaf)
        if x.ndim == 0:
            raise ValueError(
                f"{leaf_name(path)} is a scalar; every data leaf needs a leading "
                "observation axis N (put constants in the log-density instead)"
            )
        if jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(dtype, copy=False)
        elif not (jnp.issubdtype(x.dtype, jnp.bool_) or jnp.issubdtype(x.dtype, jnp.integer)):
            raise TypeError(
                f"{leaf_name(path)} has dtype {x.dtype}; data leaves must be numbers or booleans"
                + (
                    " (convert dates to numbers, e.g. days since a date)"
                    if x.dtype.kind in "mM"
                    else ""
                )
            )
        if isinstance(x, np.ndarray):
            x = _private(x, shared=np.may_share_memory(x, src), on_host=on_host)
        lengths[leaf_name(path)] = x.shape[0]
        out.append(x)
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{k}: {v}" for k, v in lengths.items())
        raise ValueError(f"data leaves must share the leading axis N; got {detail}")
    n = next(iter(lengths.values()))
    if n == 0:
        raise ValueError("data have 0 rows (N = 0): there is nothing to fit")
    return jax.tree.unflatten(treedef, out), n


def _private(x: np.ndarray, shared: bool, on_host: bool):
    """`x` on the device (or kept on the host, for streaming) in memory no caller can write to.

    A copy is made only when `x` is the caller's memory (`shared`) and would be kept as it is: on
    the host, or on a CPU device where `device_put` shares an aligned buffer instead of copying it.
    Its cost at N = 1e6 rows x 20 float64 columns: a 160 MB memcpy (see the README, "Data")."""
    if on_host:
        return np.array(x, copy=True) if shared else x
    dev = jax.device_put(x)
    if shared and _shares_buffer(dev, x):
        dev = jax.device_put(np.array(x, copy=True))
    return dev


def _shares_buffer(dev: jax.Array, x: np.ndarray) -> bool:
    try:
        return dev.unsafe_buffer_pointer() == x.__array_interface__["data"][0]
    except Exception:  # a sharded or non-CPU array has no single host-visible pointer to share
        return False


def raise_nonfinite_data(data, n):
    """Raise naming the first data leaf with NaN/inf, its row count and first row; else return."""
    for path, x in jax.tree_util.tree_flatten_with_path(data)[0]:
        x = x[:n]  # without the padding rows of a sharded fit
        if jnp.issubdtype(x.dtype, jnp.floating) and not bool(_all_finite(x)):
            bad = ~np.isfinite(np.asarray(x).reshape(x.shape[0], -1)).all(axis=1)
            rows = np.flatnonzero(bad)
            raise ValueError(
                f"{leaf_name(path)} has NaN or inf in {rows.size} row(s), first at row "
                f"{rows[0]}; drop or impute those rows before fitting"
            )


@jax.jit
def _all_finite(x):
    return jnp.all(jnp.isfinite(x))


def prepare_weights(weights, n, dtype, traced):
    if weights is None:
        return None
    if isinstance(weights, jax.Array):
        w = jnp.asarray(weights, dtype)
    else:
        src = np.asarray(weights)
        if src.dtype.kind not in "fiub":
            raise TypeError(f"weights must be numbers, got dtype {src.dtype}")
        w = src.astype(dtype, copy=False)
        w = _private(w, shared=np.may_share_memory(w, src), on_host=False)
    if w.shape != (n,):
        raise ValueError(f"weights must have shape (N,) = ({n},), got {w.shape}")
    if not traced:
        wn = np.asarray(w)
        bad = np.flatnonzero(~np.isfinite(wn) | (wn < 0))
        if bad.size:
            raise ValueError(
                f"weights must be finite and >= 0; {bad.size} are not, first at row "
                f"{bad[0]} ({wn[bad[0]]})"
            )
        if not wn.any():
            raise ValueError("weights are all zero: no observation is left to fit")
    return w


def prepare_groups(groups, n_groups, n, traced):
    if groups is None:
        return None, 0
    if traced or isinstance(groups, jax.core.Tracer):
        g = jnp.asarray(groups)
        if not jnp.issubdtype(g.dtype, jnp.integer) or n_groups is None:
            raise ValueError(
                "under jit/vmap, groups must be integer codes 0..G-1 and n_groups=G "
                "must be given (a static int)"
            )
        if g.shape != (n,):
            raise ValueError(f"groups must have shape (N,) = ({n},), got {g.shape}")
        return g, int(n_groups)
    labels = np.asarray(groups)
    if labels.shape != (n,):
        raise ValueError(f"groups must have shape (N,) = ({n},), got {labels.shape}")
    if labels.dtype.kind == "f":
        missing = ~np.isfinite(labels)
    elif labels.dtype.kind == "O":
        missing = np.array(
            [v is None or (isinstance(v, float) and not np.isfinite(v)) for v in labels]
        )
    else:
        missing = np.zeros(n, bool)
    if missing.any():
        rows = np.flatnonzero(missing)
        raise ValueError(
            f"groups has {rows.size} missing label(s) (None or NaN), first at row {rows[0]}; "
            "drop those rows or give them a cluster"
        )
    try:
        _, codes = np.unique(labels, return_inverse=True)
    except TypeError as e:  # labels that do not compare: e.g. str and int mixed in an object array
        kinds = sorted({type(v).__name__ for v in labels})
        raise TypeError(
            f"groups mixes labels of types {kinds}, which cannot be sorted into clusters; use "
            "labels of one type"
        ) from e
    codes = codes.reshape(n)
    g_count = int(codes.max()) + 1
    if n_groups is not None and n_groups != g_count:
        raise ValueError(f"n_groups={n_groups} but groups holds {g_count} distinct labels")
    if g_count < 2:
        raise ValueError("cluster-robust covariance needs at least 2 clusters; groups has 1")
    return jnp.asarray(codes.astype(np.int32)), g_count


# What each of JAX's tracing errors means in a log-density, and the fix (most specific first).
_TRACE_HINTS = (
    (
        jax.errors.TracerBoolConversionError,
        "a Python `if`/`and`/`or`/`while` on a value of the inputs: use jnp.where(cond, a, b) "
        "(or jax.lax.cond)",
    ),
    (
        jax.errors.TracerIntegerConversionError,
        "int() or an index computed from a value of the inputs: keep it an array (jnp.floor, "
        "jnp.take)",
    ),
    (
        jax.errors.TracerArrayConversionError,
        "a numpy function (np.exp, np.log, ...) applied to the inputs: use the jax.numpy one "
        "(jnp.exp, jnp.log, ...)",
    ),
    (
        jax.errors.ConcretizationTypeError,
        "Python needed the value of a traced array (float(), a shape or a Python `if` computed "
        "from the inputs): keep such code in jax.numpy",
    ),
)


def is_trace_error(e: BaseException) -> bool:
    """Whether `e` is JAX refusing Python code that needs the values of traced arrays."""
    return any(isinstance(e, cls) for cls, _ in _TRACE_HINTS)


def explain_trace_error(e: BaseException, what: str) -> None:
    """Add to `e`, in place, what failed and the usual fix; the caller re-raises it unchanged.

    The exception keeps its type and JAX's own message, so `except jax.errors.XError` still
    catches it (JAX's error classes cannot be rebuilt from a message, as `type(e)(msg)` tried).
    """
    hint = next((h for cls, h in _TRACE_HINTS if isinstance(e, cls)), None)
    note = f"jaxmle: {what} failed when traced on shapes only (before any fitting work)"
    note += f"; the likely cause is {hint}" if hint else ""
    note += ". It is traced by JAX: write it with jax.numpy, with no Python control flow on values."
    if hasattr(e, "add_note"):  # Python >= 3.11; before, JAX's message stands alone
        e.add_note(note)


def check_logpdf(logpdf, init, data):
    obs = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), data)
    try:
        out = jax.eval_shape(logpdf, init, obs)
    except Exception as e:
        explain_trace_error(e, "logpdf(theta, obs) on one observation")
        raise
    shape = getattr(out, "shape", None)
    if shape != ():
        raise ValueError(
            f"logpdf(theta, obs) must return a scalar for ONE observation, got "
            f"{'a ' + type(out).__name__ if shape is None else 'shape ' + str(shape)}; "
            "write it for a single row (jaxmle vmaps it over rows) and sum any inner terms"
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(
            f"logpdf(theta, obs) must return a real (floating) log-density, got dtype {out.dtype}; "
            "an int or bool result (a comparison, a count) cannot be differentiated: compute "
            "the log-density in floats (jnp.asarray(value, float))"
        )


def raise_bad_start(logpdf, spec, theta0, data, n):
    ll = np.asarray(jax.jit(jax.vmap(logpdf, in_axes=(None, 0)))(spec.unravel(theta0), data))[:n]
    bad = np.flatnonzero(~np.isfinite(ll))
    if bad.size == 0:  # every row finite, the sum overflowed or a derivative is not finite
        raise ValueError(
            f"{MESSAGES[Status.NONFINITE_START]}: every l_i is finite, but lnL or its "
            "derivatives are not (check the scale of the start values)"
        )
    shown = ", ".join(str(i) for i in bad[:10]) + (", ..." if bad.size > 10 else "")
    raise ValueError(
        f"the log-density is {ll[bad[0]]} at the start values for {bad.size} observation(s): rows "
        f"{shown}. Choose start values where every observation has positive density"
    )
