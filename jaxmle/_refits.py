"""Many refits of one fitted model through one compiled program: bootstrap, jackknife, multi-start.

A host-side fit carries `res.problem` (`_fit.Problem`): the model, the data where the fit placed them,
and the options. A batch of refits varies some of (start values, data, weights, cluster codes) per
replication and keeps the rest; `run_batches` runs them as

    jit(vmap(arg_r -> draw(arg_r, shared) -> program))

in batches, the static part of the problem (`ProblemKey`: everything but its arrays) and the
hashable `draw` and `program` (the whole fit, or its estimate alone) keying ONE compiled program,
so a second bootstrap of the same model (or of another data set of the same shapes) does not
recompile. Per-replication inputs are small (a key, an
index row, a start vector); the shared data enter the program once, as arguments, never as constants.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._covariance import psd_inverse
from ._fit import Problem, _full_precision, _run, _separation_probe, fit_status
from ._objective import Batch, Objective
from ._solvers import METHODS, equilibrated_eigh, maximize
from ._status import MESSAGES, Status

PyTree = Any
_ARRAYS = ("data", "weights", "groups")
# Replications per batch: a power of two sized so that a batch's per-replication working set (its
# weights and one chunk of per-row scores, ~8 N (k + 2) bytes a replication) is about this many bytes.
# One size per model and data shape, whatever R: every call then reuses the compiled program. Under
# vmap a batch runs until its slowest refit stops, so batches stay moderate even for small data.
_CPU_BATCH_BYTES = 16 * 2**20
_ACCELERATOR_BATCH_BYTES = 2**30
_MAX_BATCH = {"cpu": 256}
_MAX_ACCELERATOR_BATCH = 4096


class ProblemKey:
    """The static part of a `Problem` (all fields but data, weights, groups): hashable by value, so
    two calls on fits of one model share the compiled batch program."""

    def __init__(self, problem: Problem, **changes):
        fields = {f.name: getattr(problem, f.name) for f in dataclasses.fields(problem)}
        fields.update(changes)
        self.fields = tuple((k, v) for k, v in fields.items() if k not in _ARRAYS)

    def problem(self, data, weights, groups) -> Problem:
        return Problem(**dict(self.fields), data=data, weights=weights, groups=groups)

    def __getattr__(self, name):
        for k, v in self.__dict__.get("fields", ()):
            if k == name:
                return v
        raise AttributeError(name)

    def __hash__(self):
        return hash(self.fields)

    def __eq__(self, other):
        return isinstance(other, ProblemKey) and self.fields == other.fields


def whole(problem: Problem, theta0, free):
    """The fit program: a whole `FitResult` per refit (multi-start)."""
    return _run(problem, theta0, free)


@_full_precision
def estimate(problem: Problem, theta0, free) -> dict:
    """The fit program's solver loop and status without its covariance pass: what a bootstrap
    keeps of a refit (estimate, lnL, iterations, status), for ~3/4 of the work.

    The status is decided as `_fit` decides it, from the same final state: a failed start, a
    non-finite lnL, a failed line search, max_iter, separation (probed by one lnL pass, as the fit
    probes it), and a curvature matrix at the end that is singular or not positive definite (the
    observed information for Newton, the solver's own matrix for the others; BFGS gets -H).
    """
    c = problem
    method = METHODS[c.method]
    free_idx = np.flatnonzero(free)
    all_free = len(free_idx) == len(free)

    def embed(theta_free):
        return theta_free if all_free else theta0.at[free_idx].set(theta_free)

    unravel = c.spec.unravel
    if c.compute_dtype is not None:

        def unravel(flat):
            return jax.tree.map(lambda x: x.astype(c.compute_dtype), c.spec.unravel(flat))

    batch = Batch(c.device_data, c.weights, c.groups)
    obj = Objective(c.logpdf, unravel, embed, batch, c.layout, c.n_groups, c.weight_kind,
                    c.expected)  # fmt: skip
    st = maximize(obj.terms(method.curvature), theta0[free_idx], method=method,
                  max_iter=c.max_iter, tol=c.tol, initial_matrix=lambda t: obj.newton(t).matrix,
                  compute_dtype=c.compute_dtype)  # fmt: skip
    if method.quasi:
        info = obj.newton(st.theta).matrix
        st = st._replace(eig=equilibrated_eigh(info))
    else:
        info = st.matrix
    probe, may_be_separated = _separation_probe(st, info)
    loglik_probe = obj.loglik_grad(probe).loglik
    _, info_status = psd_inverse(info, st.eig)
    separated = may_be_separated & jnp.isfinite(loglik_probe) & (loglik_probe > st.loglik - 1.0)
    status = fit_status(st, c.tol, separated=separated, info_status=info_status)
    return {"coef": embed(st.theta), "loglik": st.loglik, "n_iter": st.n_iter, "status": status}


@partial(jax.jit, static_argnames=("key", "free", "draw", "program"))
def _batch(args, shared, *, key: ProblemKey, free, draw: Callable, program: Callable):
    def one(arg):
        theta0, data, weights, groups = draw(arg, shared)
        return program(key.problem(data, weights, groups), theta0, free)

    return jax.vmap(one)(args)


def batch_size_for(n_reps: int, rep_bytes: int, batch_size: int | None = None) -> int:
    """Replications per batch: given, or a power of two sized from the per-replication working
    set (fewer when R itself is smaller: the next power of two above R)."""
    if batch_size is not None:
        if isinstance(batch_size, bool) or not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
        return batch_size
    backend = jax.default_backend()
    target = _CPU_BATCH_BYTES if backend == "cpu" else _ACCELERATOR_BATCH_BYTES
    cap = _MAX_BATCH.get(backend, _MAX_ACCELERATOR_BATCH)
    size = 2 ** int(np.log2(np.clip(target // max(rep_bytes, 1), 1, cap)))
    return min(size, 2 ** int(np.ceil(np.log2(max(n_reps, 1)))))


def run_batches(
    args, shared, *, key: ProblemKey, free, draw, program=estimate, batch_size: int,
    progress: bool = True, desc: str = "refits", check: Callable | None = None,
    prepare: Callable | None = None,
) -> dict:  # fmt: skip
    """Run `draw`/`program` over the leading axis of `args` in batches; host numpy arrays back.

    The last batch is padded with copies of the final argument and the padding dropped. `prepare`
    (a jitted function) turns a batch of `args` into the program's per-replication inputs (resample
    indices from keys) outside the fit program, so that every source of them shares that program.
    `check(n_done, status_so_far)` runs after every batch and may raise to stop early (its
    exception gets the partial outputs as `.partial`).
    """
    from tqdm.auto import tqdm

    n = len(jax.tree.leaves(args)[0])
    n_batches = -(-n // batch_size)
    pad = n_batches * batch_size - n
    if pad:
        args = jax.tree.map(lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], pad, 0)]), args)

    def launch(b):
        part = jax.tree.map(lambda a: a[b * batch_size : (b + 1) * batch_size], args)
        part = part if prepare is None else prepare(part)
        return _batch(part, shared, key=key, free=free, draw=draw, program=program)

    outs, n_failed = [], 0
    with tqdm(total=n, desc=desc, unit="fit", disable=not progress, leave=False) as bar:
        pending = launch(0)
        for b in range(n_batches):
            current = pending
            if b + 1 < n_batches:  # keep the device busy while the host reads this batch back
                pending = launch(b + 1)
            outs.append(jax.device_get(current))
            real = min(batch_size, n - b * batch_size)
            status = np.asarray(_status_of(outs[-1]))[:real]
            n_failed += int(np.sum(status != Status.SUCCESSFUL))
            bar.update(real)
            bar.set_postfix(failed=n_failed, refresh=False)
            if check is not None:
                done = b * batch_size + real
                try:
                    check(done, np.concatenate([np.asarray(_status_of(o)) for o in outs])[:done])
                except Exception as e:
                    e.partial = jax.tree.map(lambda *xs, d=done: np.concatenate(xs)[:d], *outs)
                    raise
    return jax.tree.map(lambda *xs: np.concatenate(xs)[:n], *outs)


def _status_of(out):
    return out["status"] if isinstance(out, dict) else out.status


def failure_lines(status: np.ndarray, what: str = "replications", shown: int = 8) -> list[str]:
    """One line per failure status with the replications it hit, and its words."""
    import textwrap

    lines = []
    codes = [c for c in np.unique(status) if c != Status.SUCCESSFUL]
    for c in codes:
        idx = np.flatnonzero(status == c)
        listed = ", ".join(map(str, idx[:shown])) + (", ..." if len(idx) > shown else "")
        lines.append(f"  {len(idx)} x {Status(int(c)).name.lower()}: {what} {listed}")
        lines += textwrap.wrap(
            MESSAGES[Status(int(c))], 96, initial_indent=" " * 4, subsequent_indent=" " * 4
        )
    return lines
