"""fit_groups(): maximum likelihood when the log-likelihood factors by GROUP of rows, not by row.

    lnL(theta) = sum_g l_g(theta),   l_g = group_logpdf(theta, rows_g, mask_g)

Conditional (fixed-effects) logit, Cox's partial likelihood over the risk sets of a stratum,
rank-ordered logit, a random-effects model whose effects are integrated out: none is a sum over rows,
each is a sum over independent groups. The group is then the unit every covariance is built from
(theory.md, with u_g = d l_g / d theta in place of u_i):

    hessian   A^-1,  A = -sum_g d2 l_g / d theta d theta'
    opg       (sum_g u_g u_g')^-1
    sandwich  A^-1 (sum_g u_g u_g') A^-1              R `coxph(..., cluster = <stratum>)`,
                                                     `clogit(..., cluster = <stratum>)` (no factor)
    cluster   the sandwich times G/(G-1)              Stata `vce(cluster <stratum>)` convention

Stata's `ml` refuses `vce(robust)` and `vce(opg)` for `d0`/`lf0` evaluators (those that give only
the total lnL): it has no per-unit scores to build them from. Here the log-density is written per
group and the per-group scores come from autodiff, so every kind above exists; they are valid when
the groups are independent (the rows inside a group may depend on each other in any way).

Layout (decided once on the host): the rows are sorted by group (a stable sort, so rows keep their
order inside a group), and each group is padded to the capacity of its size bucket (a power of two;
buckets holding few groups are merged into the next one while that costs little padding). Each
bucket is one (G_b, n_b, ...) block of the data and a (G_b, n_b) mask; the fit's objective is the
sum over buckets of `jm.fit`'s objective with the group as the observation, so one program covers
groups of very unequal size with no Python loop over groups, at most ~3x the rows in padded
cells. Padding rows are copies of a real row of the group (finite values): `group_logpdf` must
weight every row's term by its `mask` entry.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._accumulate import Layout, auto_chunk_size
from ._covariance import KINDS, check_kind
from ._fit import ParamSpec, Problem, _full_precision, default_tol, solve
from ._inputs import prepare_data, prepare_init
from ._objective import Batch, Objective, ScoreTerms, Terms
from ._results import FitResult, parameter_names, with_handles
from ._scope import float64_scope, traced
from ._solvers import METHODS, check_method

PyTree = Any

# Buckets are merged into the next larger one, smallest first, while the padding that adds stays
# below this share of all rows in total: each bucket is one more copy of every pass in the compiled
# program. Measured (lung by institution, 18 strata of 2..36 rows, Cox): 5 buckets took 14.8 s of
# CPU to compile and run the first time, 2 buckets 8.3 s, 1 bucket 5.7 s; repeat fits 13-18 ms
# either way. So compilation dominates until the padding is large.
_MERGE_PADDING = 1.0


# ---------------------------------------------------------------- host-side layout


class GroupIndex(NamedTuple):
    """Rows grouped on the host: `codes` (N,) 0..G-1, `sizes` (G,), and each bucket as (group
    codes (G_b,), row indices (G_b, n_b) into the data, mask (G_b, n_b))."""

    codes: np.ndarray
    sizes: np.ndarray
    buckets: tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]


def factorize(groups, n: int, what: str = "groups") -> tuple[np.ndarray, np.ndarray]:
    """(codes 0..G-1, sorted unique labels) of (N,) labels of any kind; errors name the problem."""
    labels = np.asarray(groups)
    if labels.shape != (n,):
        raise ValueError(f"{what} must have shape (N,) = ({n},), got {labels.shape}")
    if labels.dtype.kind == "f" and not np.isfinite(labels).all():
        bad = np.flatnonzero(~np.isfinite(labels))
        raise ValueError(
            f"{what} has NaN or inf labels in {bad.size} row(s), first at row {bad[0]}"
        )
    if labels.dtype == object and any(v is None or v != v for v in labels):
        bad = [i for i, v in enumerate(labels) if v is None or v != v]
        raise ValueError(f"{what} has missing labels in {len(bad)} row(s), first at row {bad[0]}")
    unique, codes = np.unique(labels, return_inverse=True)
    return codes.astype(np.int32).reshape(n), unique


def group_index(codes: np.ndarray, n_groups: int) -> GroupIndex:
    """Sort rows by group once and pad each group to its size bucket (module docstring)."""
    sizes = np.bincount(codes, minlength=n_groups)
    order = np.argsort(codes, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    capacity = np.where(sizes > 0, 2 ** np.ceil(np.log2(np.maximum(sizes, 1))).astype(int), 0)
    caps = sorted(set(capacity[sizes > 0].tolist()))
    n_rows = int(sizes.sum())
    # merge small buckets upward while the added padding stays cheap
    merged: list[int] = []
    budget = _MERGE_PADDING * n_rows
    for i, cap in enumerate(caps):
        if i + 1 < len(caps):
            nxt = caps[i + 1]
            extra = int(np.sum(capacity == cap)) * (nxt - cap)
            if extra <= budget:
                budget -= extra
                capacity[capacity == cap] = nxt
                continue
        merged.append(cap)
    buckets = []
    for cap in merged:
        ids = np.flatnonzero(capacity == cap).astype(np.int32)
        slot = np.arange(cap)
        mask = slot[None, :] < sizes[ids][:, None]
        # padding slots point at the group's first row: finite values, masked out
        rows = order[starts[ids][:, None] + np.where(mask, slot[None, :], 0)]
        buckets.append((ids, rows.astype(np.int32), mask))
    return GroupIndex(codes, sizes, tuple(buckets))


def gather_blocks(data: PyTree, index: GroupIndex, dtype) -> tuple[dict, ...]:
    """One {"rows", "mask", "ids"} block per bucket (jnp gathers: traced data pass through)."""
    out = []
    for ids, rows, mask in index.buckets:
        block = jax.tree.map(lambda x, r=rows: jnp.take(x, jnp.asarray(r), axis=0), data)
        out.append({"rows": block, "mask": jnp.asarray(mask, dtype), "ids": jnp.asarray(ids)})
    return tuple(out)


# ---------------------------------------------------------------- the objective


@dataclasses.dataclass(frozen=True)
class _Block:
    """The group log-density as `jm.fit` sees it: the group is the observation."""

    group_logpdf: Callable

    def __call__(self, theta, obs):
        return self.group_logpdf(theta, obs["rows"], obs["mask"])


@dataclasses.dataclass(frozen=True)
class SumObjective:
    """The sum of several `Objective`s (one per size bucket), with their passes."""

    parts: tuple[Objective, ...]

    def _replace(self, **changes) -> SumObjective:
        return SumObjective(tuple(p._replace(**changes) for p in self.parts))

    def _sum(self, pass_name, *args, kind=Terms):
        outs = [getattr(p, pass_name)(*args) for p in self.parts]
        return kind(*(sum(xs[1:], xs[0]) for xs in zip(*outs, strict=True)))

    def newton(self, theta):
        return self._sum("newton", theta)

    def bhhh(self, theta):
        return self._sum("bhhh", theta)

    def fisher(self, theta):  # pragma: no cover - fit_groups takes no expected information
        raise NotImplementedError("fit_groups has no expected information")

    def loglik_grad(self, theta):
        lls, gs = zip(*[p.loglik_grad(theta)[:2] for p in self.parts], strict=True)
        return Terms(sum(lls[1:], lls[0]), sum(gs[1:], gs[0]), jnp.zeros((0, 0), gs[0].dtype))

    def scores(self, theta, probe):
        return self._sum("scores", theta, probe, kind=ScoreTerms)

    def terms(self, curvature):
        return {"hessian": self.newton, "opg": self.bhhh, "none": self.loglik_grad}[curvature]


@partial(
    jax.jit,
    static_argnames=(
        "group_logpdf", "spec", "names", "free", "method", "cov", "max_iter", "tol", "chunks",
        "n_groups",
    ),
)  # fmt: skip
@_full_precision
def _groups_compiled(
    theta0, blocks, *, group_logpdf, spec, names, free, method, cov, max_iter, tol, chunks,
    n_groups,
) -> FitResult:  # fmt: skip
    block_logpdf = _Block(group_logpdf)
    parts = tuple(
        Objective(
            block_logpdf,
            spec.unravel,
            None,
            Batch({"rows": b["rows"], "mask": b["mask"]}, None, b["ids"]),
            Layout(chunk),
            n_groups,
            "frequency",
            None,
        )
        for b, chunk in zip(blocks, chunks, strict=True)
    )
    return solve(
        SumObjective(parts), theta0, free=free, spec=spec, names=names, method=method, cov=cov,
        max_iter=max_iter, tol=tol, n_obs=n_groups, bad_groups=jnp.asarray(False), expected=None,
        compute_dtype=None,
    )  # fmt: skip


@dataclasses.dataclass(frozen=True, eq=False)
class GroupProblem(Problem):
    """A `Problem` whose observations are groups: `blocks` are the padded buckets the program
    sums over, `chunks` the groups per chunk of each bucket."""

    blocks: tuple = ()
    chunks: tuple[int, ...] = ()
    labels: np.ndarray | None = None

    def run(self, theta0, free) -> FitResult:
        return _groups_compiled(
            theta0, self.blocks, group_logpdf=self.logpdf, spec=self.spec, names=self.names,
            free=free, method=METHODS[self.method], cov=self.cov, max_iter=self.max_iter,
            tol=self.tol, chunks=self.chunks, n_groups=self.n_groups,
        )  # fmt: skip


# ---------------------------------------------------------------- fit_groups


def fit_groups(
    group_logpdf: Callable[[PyTree, PyTree, jax.Array], jax.Array],
    init: PyTree,
    data: PyTree,
    groups,
    *,
    method: str = "newton",
    cov: str = "hessian",
    fixed: dict | None = None,
    max_iter: int = 100,
    tol: float | None = None,
    names: dict | None = None,
    throw: bool = False,
) -> FitResult:
    """Maximum-likelihood fit of lnL = sum_g group_logpdf(theta, rows_g, mask_g).

    Args:
      group_logpdf: `group_logpdf(theta, rows, mask) -> scalar`, the log-likelihood of ONE group:
        `rows` is the data pytree restricted to that group's rows and padded to n_max rows (each
        leaf (n_max, ...)), `mask` (n_max,) is 1 for the group's real rows and 0 for padding (which
        repeats a real row: weight every row's term by its mask entry, and mask padding out of any
        sum over rows, e.g. a risk set). Rows keep their order within the group.
      init: start values, any pytree of floats (as `jm.fit`).
      data: any pytree of arrays sharing the leading axis N (rows).
      groups: (N,) group labels of any kind (numbers, strings). They are laid out on the host, so
        they must be concrete: under `jax.vmap` over data sets, keep the groups the same (close
        over them) and batch only the data.
      method: "newton" (default), "bhhh" (the OPG of the per-group scores) or "bfgs".
      cov: "hessian" | "opg" | "sandwich" | "cluster" (module docstring): every kind is built from
        the per-group scores u_g, the group being the independent unit; `res.with_cov(kind)`
        gives the others later.
      fixed, max_iter, tol, names, throw: as for `jm.fit`.

    Returns a `FitResult` whose `n_obs` is G (the number of groups, the independent units) and
    whose `score_groups` are the per-group scores. The inference functions (`wald_test`,
    `lr_test`, `delta_method`, `profile_ci`) take it as any fit. See the module docstring for the
    covariances and how they differ from Stata's refusal of robust covariances for d0 evaluators.
    """
    entry = check_method(method)
    if entry.curvature == "expected":
        raise ValueError("method='fisher' needs an expected information, which fit_groups lacks")
    check_kind(KINDS, cov, has={"groups": True, "expected": False})
    if isinstance(max_iter, bool) or not (isinstance(max_iter, int) and max_iter >= 0):
        raise ValueError(f"max_iter must be a non-negative int, got {max_iter!r}")
    if tol is not None and not (
        isinstance(tol, (int, float)) and not isinstance(tol, bool) and 0 < tol < math.inf
    ):
        raise ValueError(f"tol must be a positive finite number, got {tol!r}")
    if traced(groups):
        raise ValueError(
            "fit_groups lays the groups out on the host, so groups must be concrete: under "
            "jit/vmap close over fixed group labels and batch only the data"
        )
    is_traced = traced(init, data)
    with float64_scope(init, data):
        dtype = jnp.dtype(jnp.result_type(float))
        tol = default_tol(dtype) if tol is None else float(tol)
        init, free, labels = prepare_init(init, fixed, dtype, names)
        param_names = parameter_names(init, labels)
        leaves, treedef = jax.tree.flatten(init)
        xp = np if all(isinstance(x, np.ndarray) for x in leaves) else jnp
        theta0 = xp.concatenate([xp.ravel(x) for x in leaves])
        spec = ParamSpec(treedef, tuple(tuple(np.shape(x)) for x in leaves))
        data, n = prepare_data(data, dtype, is_traced)
        codes, unique = factorize(groups, n)
        n_groups = len(unique)
        if cov == "cluster" and n_groups < 2:
            raise ValueError("cov='cluster' needs at least 2 groups; groups has 1")
        index = group_index(codes, n_groups)
        blocks = gather_blocks(data, index, dtype)
        _check_group_logpdf(group_logpdf, init, blocks[0])
        chunks = tuple(
            auto_chunk_size({"rows": b["rows"]}, sum(free)) for b in blocks
        )  # groups per chunk: the rows of a group count as one observation's data
        problem = GroupProblem(
            logpdf=group_logpdf, spec=spec, names=param_names, data=data, weights=None,
            groups=jnp.asarray(codes), n_groups=n_groups, weight_kind="frequency", expected=None,
            method=entry.name, cov=cov, max_iter=max_iter, tol=tol, layout=Layout(0), n_rows=n,
            dtype=dtype, compute_dtype=None, blocks=blocks, chunks=chunks, labels=unique,
        )  # fmt: skip
        res = problem.run(theta0, free)
    if not is_traced:
        res = with_handles(res, _problem=problem)
    if throw:
        import equinox as eqx

        if is_traced:
            return eqx.error_if(res, ~res.converged, "jaxmle.fit_groups did not succeed")
        if not bool(res.converged):
            raise RuntimeError(f"jaxmle.fit_groups: {res.message}")
    return res


def _check_group_logpdf(group_logpdf, init, block) -> None:
    """group_logpdf must return a scalar for ONE padded group (traced on shapes only)."""
    rows = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), block["rows"])
    mask = jax.ShapeDtypeStruct(block["mask"].shape[1:], block["mask"].dtype)
    try:
        out = jax.eval_shape(group_logpdf, init, rows, mask)
    except Exception as e:
        raise type(e)(f"group_logpdf(theta, rows, mask) failed on one padded group: {e}") from e
    if getattr(out, "shape", None) != ():
        raise ValueError(
            "group_logpdf(theta, rows, mask) must return a scalar for ONE group, got "
            f"{getattr(out, 'shape', type(out))}; sum the rows' terms inside it"
        )
