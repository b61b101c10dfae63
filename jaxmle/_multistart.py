"""fit_multistart(): the best of many starts, for likelihoods with several local maxima (mixtures).

Every start s = 1..S is fitted through ONE compiled program (`_refits`: jit(vmap(fit from s))); among
the fits that converged (status 0) the one with the largest lnL wins, and it is returned as an
ordinary result, refitted from its estimate by the single-fit program so that it carries its model
and data (`res.problem`: profiles, score tests, the bootstrap work on it). How many starts reached
that maximum (lnL within `REACHED_ATOL` + `REACHED_RTOL` |lnL|), which lower maxima the others found,
and which failed, is kept in the result and printed by `summary()`.

Newton's method climbs to the maximum of the basin it starts in: a single start is a local answer.
Like R `mixtools::normalmixEM` with several `arbmean` starts, or Stata `ml ... , difficult` with
`ml search`; the starts here run in parallel, not one after another.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._fit import fit, refit
from ._inputs import prepare_init
from ._refits import ProblemKey, batch_size_for, failure_lines, run_batches, whole
from ._results import FitResult, replace, result_class, with_handles
from ._status import Status

PyTree = Any
# Two converged fits whose lnL differ by less than this reached the same maximum: both stop within
# ~1e-12 (the scaled gradient) of it, far inside; distinct local maxima differ by far more.
REACHED_ATOL, REACHED_RTOL = 1e-6, 1e-10


@result_class
class MultiStartResult(FitResult):
    """The best converged fit of several starts (an ordinary `FitResult`), with every start's lnL
    (`start_loglik`, NaN where none) and status (`start_status`), and its final estimate
    (`start_coef`, S x k, ravel order)."""

    start_loglik: jax.Array
    start_status: jax.Array
    start_coef: jax.Array

    @property
    def n_starts(self) -> int:
        return int(np.shape(self.start_status)[-1])

    def reached(self) -> np.ndarray:
        """(S,) bool: the start converged to this fit's maximum."""
        ll = np.asarray(self.start_loglik)
        ok = np.asarray(self.start_status) == Status.SUCCESSFUL
        best = float(self.loglik)
        return ok & (np.abs(ll - best) <= REACHED_ATOL + REACHED_RTOL * abs(best))

    @property
    def n_reached(self) -> int:
        return int(self.reached().sum())

    def local_maxima(self) -> list[tuple[float, int]]:
        """[(lnL, number of starts)] of the distinct maxima the converged starts found, best first."""
        ll = np.asarray(self.start_loglik)[np.asarray(self.start_status) == Status.SUCCESSFUL]
        out: list[list] = []
        for v in np.sort(ll)[::-1]:
            if out and abs(out[-1][0] - v) <= REACHED_ATOL + REACHED_RTOL * abs(v):
                out[-1][1] += 1
            else:
                out.append([float(v), 1])
        return [(v, n) for v, n in out]

    def head(self) -> list[tuple[str, str]]:
        maxima = self.local_maxima()
        n_failed = int(np.sum(np.asarray(self.start_status) != Status.SUCCESSFUL))
        best = int(np.flatnonzero(self.reached())[0]) if self.n_reached else -1
        text = f"{self.n_starts}; {self.n_reached} reached this maximum (first: start {best})"
        lower = sum(n for _, n in maxima[1:])
        if lower:
            shown = ", ".join(f"{v:.6f} ({n})" for v, n in maxima[1:4])
            more = ", ..." if len(maxima) > 4 else ""
            text += f", {lower} stopped at lower maxima: lnL {shown}{more}"
        if n_failed:
            text += f", {n_failed} failed"
        return [*super().head(), ("Starts", text)]


def fit_multistart(
    logpdf: Callable[[PyTree, PyTree], jax.Array],
    starts: PyTree | Sequence[PyTree],
    data: PyTree,
    *,
    batch_size: int | None = None,
    progress: bool = False,
    **fit_options,
) -> MultiStartResult:
    """`jm.fit` from every start in `starts`; the best converged fit, as an ordinary result.

    Args:
      logpdf, data, **fit_options: as for `jm.fit` (method, cov, weights, groups, fixed, names,
        max_iter, tol, ...).
      starts: a list of start pytrees (each shaped like `init` of `jm.fit`), or one pytree whose
        leaves carry a leading axis S of starts (`{"mu": (S, 2) array, ...}`, e.g. drawn with
        `jax.random`). Parameters named in `fixed=` are held at the fixed values in every start.
      batch_size: starts per compiled call (default: sized to the data).
      progress: a progress bar over the batches.

    Returns a `MultiStartResult`: the fit with the largest lnL among the starts that converged,
    refitted from its estimate (so it has `res.problem` and profiles like any fit), with
    `n_reached`, `local_maxima()` and every start's outcome; `summary()` says how many starts
    reached the maximum. Raises when no start converged, with the reasons.
    """
    stacked = _stack(starts)
    n = int(np.shape(jax.tree.leaves(stacked)[0])[0])
    first = _first_valid(logpdf, stacked, n, data, fit_options)
    problem = first.problem
    if problem.transforms is not None or problem.layout.host is not None:
        raise ValueError("fit_multistart fits in device memory, without transforms")
    with jax.enable_x64(problem.dtype == jnp.float64):
        thetas = jnp.stack([_flat_start(stacked, s, fit_options, problem.dtype) for s in range(n)])
        size = batch_size_for(n, 8 * problem.n_rows * (len(first.free) + 2), batch_size)
        out = run_batches(
            thetas, (problem.data, problem.weights, problem.groups), key=ProblemKey(problem),
            free=first.free, draw=_from_start, program=whole, batch_size=size, progress=progress,
            desc="starts",
        )  # fmt: skip
        status, loglik = np.asarray(out.status), np.asarray(out.loglik, float)
        coef = np.stack([np.concatenate([np.ravel(x[s]) for x in jax.tree.leaves(out.params)])
                         for s in range(n)])  # fmt: skip
        ok = status == Status.SUCCESSFUL
        if not ok.any():
            raise RuntimeError(
                f"fit_multistart: none of the {n} starts converged:\n"
                + "\n".join(failure_lines(status, "starts"))
            )
        best = int(np.flatnonzero(ok)[np.argmax(loglik[ok])])
        res = refit(first, theta0=coef[best])
        # the iterations are the winning start's (the refit from its estimate takes none)
        res = replace(res, n_iter=jnp.asarray(out.n_iter[best]),
                      n_damped=jnp.asarray(out.n_damped[best]))  # fmt: skip
        fields = {f.name: getattr(res, f.name) for f in dataclasses.fields(FitResult)}
        result = MultiStartResult(
            **fields,
            start_loglik=jnp.asarray(np.where(np.isfinite(loglik), loglik, np.nan)),
            start_status=jnp.asarray(status),
            start_coef=jnp.asarray(coef),
        )
    return with_handles(result, _problem=res.problem)


def _stack(starts) -> PyTree:
    if isinstance(starts, (list, tuple)):
        if not starts:
            raise ValueError("starts is empty")
        structures = {jax.tree.structure(s) for s in starts}
        if len(structures) > 1:
            raise ValueError("every start must have the same structure (the keys of init)")
        return jax.tree.map(lambda *xs: np.stack([np.asarray(x, float) for x in xs]), *starts)
    leaves = jax.tree.leaves(starts)
    sizes = {np.shape(x)[0] if np.ndim(x) else None for x in leaves}
    if not leaves or None in sizes or len(sizes) != 1:
        raise ValueError(
            "starts must be a list of start pytrees, or a pytree whose leaves all carry the same "
            f"leading axis of starts; got leaves of shapes {[np.shape(x) for x in leaves]}"
        )
    return jax.tree.map(lambda x: np.asarray(x, float), starts)


def _one(stacked, s):
    return jax.tree.map(lambda x: x[s], stacked)


def _first_valid(logpdf, stacked, n, data, options) -> FitResult:
    """The ordinary fit from the first start whose values the log-density accepts: it validates the
    data and options once and provides the model's `problem`."""
    error = None
    for s in range(n):
        try:
            return fit(logpdf, _one(stacked, s), data, **options)
        except ValueError as e:  # a start outside the support: try the next one
            if "start values" not in str(e):
                raise
            error = error or e
    raise ValueError(f"fit_multistart: every start is outside the model's support: {error}")


def _flat_start(stacked, s, options, dtype):
    init, _, _ = prepare_init(_one(stacked, s), options.get("fixed"), dtype, options.get("names"))
    return jnp.concatenate([jnp.ravel(jnp.asarray(x)) for x in jax.tree.leaves(init)])


def _from_start(theta0, shared):
    data, weights, groups = shared
    return theta0, data, weights, groups
