"""SubsetResult: a fit whose covariance covers a block of its parameters (`fit(..., se_for=[...])`,
the Hessian-free methods, and fits with `index=`), so that no k x k matrix is ever stored.

`params`, `score`, `names` and `free` cover all k parameters, as in `FitResult`; `se` too, NaN
outside the block. `cov`, `information`, `meat`, `opg`, `expected_information` are s x s over the
block (`block`: flat indices in ravel order, `block_names`), and `score_groups` is G x s:

    information   Sigma_ss^-1, Sigma_ss = ((-H)^-1)_ss: the information of the block with every
                  other parameter partialled out (for fixed effects, the Schur complement
                  A_bb - A_ba A_aa^-1 A_ab), so that A^-1 of `_covariance` is the block of (-H)^-1
    meat          sum_i c_i u~_i u~_i',  u~_i = Sigma_ss^-1 (((-H)^-1)_s. u_i), the block's scores
                  with the others partialled out (for fixed effects u_b - A_ba A_aa^-1 u_a)
    score_groups  sum_{i in g} w_i u~_i

With these, the kinds "hessian", "sandwich" and "cluster" of `_covariance` give exactly the block
of the full-vector covariance, and `covariance(kind)` / `with_cov(kind)` work without the data.
"opg" and "expected" need k x k matrices of their own; they are NaN here and refused by name
(except when the block is every free parameter and the fit formed them).

Fits with `index=` also carry what the fixed-effects preparation did (`EffectsInfo`): levels
dropped because their outcome is constant (their effects are infinite; rows left out, effects NaN),
levels with no rows, and the reference levels set to 0 to identify two sets of additive effects.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._covariance import KINDS, Pieces, covariance
from ._results import FitResult, _stored_covariance, replace, result_class, static
from ._scope import host64
from ._tables import coefficient_table, head_lines, table_lines

# A summary lists every parameter up to this many; beyond it only the block (and says so).
_SHOW_ALL = 60


class EffectsInfo(NamedTuple):
    """Per indexed key of `fit(index=...)` (arrays of length m, in the order of `index`)."""

    n_levels: jax.Array  # G_m, the length of the parameter vector
    n_dropped: jax.Array  # levels whose rows all have a constant outcome: dropped
    n_empty: jax.Array  # levels with no (remaining) rows: not estimable
    n_references: jax.Array  # reference levels set to 0 (one per connected component)
    n_dropped_rows: jax.Array  # rows left out (scalar)


@result_class
class SubsetResult(FitResult):
    """A `FitResult` whose covariance leaves cover the block `block` only (see the module)."""

    effects: EffectsInfo | None = None
    n_clusters: jax.Array | None = None  # clusters with rows left (fixed effects drop rows)
    block: tuple[int, ...] = static()
    index: tuple[tuple[str, str], ...] = static(default=())

    @property
    def n_params(self) -> int:
        """Estimated parameters: the free ones less the effects dropped, empty or held as
        references (the k of AIC and BIC)."""
        if self.effects is None:
            return super().n_params
        e = self.effects
        held = int(np.sum(e.n_dropped) + np.sum(e.n_empty) + np.sum(e.n_references))
        return super().n_params - held

    def variance(self, j: int) -> float:
        """Var(theta_hat_j), NaN outside the block."""
        if j not in self.block:
            return float("nan")
        i = self.block.index(j)
        return float(np.asarray(self.cov)[i, i])

    @property
    def block_names(self) -> tuple[str, ...]:
        return tuple(self.names[i] for i in self.block)

    def pieces(self) -> Pieces:
        return Pieces(
            self.information,
            self.opg,
            self.meat,
            self.score_groups,
            self.expected_information,
            self.n_obs,
            n_clusters=self.n_clusters,
        )

    def available(self) -> dict[str, bool]:
        out = super().available()
        out["opg"] = bool(np.isfinite(np.asarray(self.opg)).all())
        return out

    def check_cov(self, kind: str, **options):
        if kind in ("opg", "expected") and not self.available().get(kind, False):
            raise ValueError(
                f"cov={kind!r} needs the k x k {kind} matrix of every parameter, which this fit "
                f"does not form (k = {len(self.names)}, covariance block of {len(self.block)}); "
                "use 'hessian', 'sandwich' or 'cluster', or fit the full model with "
                "method='newton' and no se_for/index"
            )
        return super().check_cov(kind, **options)

    @host64
    def covariance(self, kind: str, **options) -> jax.Array:
        """The covariance of another kind over the block (s x s, `block_names` order)."""
        entry = self.check_cov(kind, **options)
        return _stored_covariance(
            entry,
            (True,) * len(self.block),
            self.pieces(),
            tuple(sorted(options.items())),
            type(self).bread_inverse,
        )

    def _se_flat(self, cov) -> jax.Array:
        se = jnp.sqrt(jnp.diagonal(cov, axis1=-2, axis2=-1))
        flat = jnp.full((*se.shape[:-1], len(self.names)), jnp.nan, se.dtype)
        return flat.at[..., np.asarray(self.block, int)].set(se)

    @host64
    def with_cov(self, kind: str, **options) -> SubsetResult:
        cov = self.covariance(kind, **options)
        se = self._se_flat(cov)
        unravel = jax.flatten_util.ravel_pytree(self.params)[1]
        return replace(self, cov=cov, se=unravel(se) if se.ndim == 1 else se, cov_type=kind)

    def on_cov(self, g, check: bool = True):
        """The entries (last axis) of a (q, k) restriction, a Jacobian or theta that `cov` covers;
        a restriction that involves a parameter outside the block has no covariance here (a plain
        error when `check`)."""
        idx = np.asarray(self.block, int)
        if check and not isinstance(g, jax.core.Tracer):
            rest = np.delete(np.asarray(g), idx, axis=-1)
            if np.any(rest != 0):
                raise ValueError(
                    "this restriction involves parameters outside the covariance block "
                    f"({len(self.block)} of {len(self.names)} parameters: se_for); refit with "
                    "se_for naming them"
                )
        return g[..., idx]

    def table(self, level: float = 0.95) -> dict[str, np.ndarray]:
        self._require_single("table")
        est = np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(self.params)])
        se = np.full(len(self.names), np.nan)
        se[np.asarray(self.block, int)] = np.sqrt(np.diagonal(np.asarray(self.cov)))
        return coefficient_table(est, se, level)

    def head(self) -> list[tuple[str, str]]:
        head = super().head()
        if self.n_clusters is not None:
            head = [(k, f"{int(self.n_clusters)}" if k == "Clusters" else v) for k, v in head]
        head.insert(4, ("Std. errors", f"{len(self.block)} of {len(self.names)} parameters"))
        if self.effects is not None:
            e = jax.tree.map(np.asarray, self.effects)
            for m, (key, column) in enumerate(self.index):
                text = f"{key}[{column}]: {int(e.n_levels[m]):,} levels"
                if int(e.n_dropped[m]):
                    text += f", {int(e.n_dropped[m]):,} dropped (constant outcome)"
                if int(e.n_empty[m]):
                    text += f", {int(e.n_empty[m]):,} without rows"
                if int(e.n_references[m]):
                    text += f", {int(e.n_references[m]):,} reference level(s) set to 0"
                head.append(("Effects", text))
            if int(e.n_dropped_rows):
                head.append(("Dropped rows", f"{int(e.n_dropped_rows):,} (constant outcome)"))
        return head

    def summary(self, level: float = 0.95) -> str:
        """The table of the block's parameters (of all when k is small); effects are counted in
        the head, their estimates are in `params`."""
        self._require_single("summary")
        table = self.table(level)
        show = (
            list(range(len(self.names)))
            if len(self.names) <= _SHOW_ALL and not self.index
            else list(self.block)
        )
        fixed = [not self.free[i] for i in show]
        lines = head_lines("Maximum-likelihood fit (jaxmle)", self.head())
        rows = {c: v[show] for c, v in table.items()}
        lines += table_lines([self.names[i] for i in show], rows, level, fixed=fixed)
        hidden = len(self.names) - len(show)
        if hidden:
            lines.append(f"  {hidden:,} further parameters not shown (no standard errors): params")
        return "\n".join(lines)


def reduce_pieces(pieces: Pieces, block: np.ndarray) -> Pieces:
    """Pieces over the free parameters -> pieces over `block` (indices into them), exactly:
    Sigma_ss = (A^-1)_ss, information Sigma_ss^-1, meat and cluster sums of u~ = Sigma_ss^-1 X'u,
    X = A^-1 E_s. OPG and expected kinds are kept only when the block is everything."""
    k = pieces.information.shape[-1]
    if len(block) == k and np.array_equal(block, np.arange(k)):
        return pieces
    if not len(block):
        empty = jnp.zeros((0, 0), pieces.information.dtype)
        groups = jnp.zeros((pieces.score_groups.shape[0], 0), empty.dtype)
        return Pieces(
            empty, empty, empty, groups, empty, pieces.n_obs, n_clusters=pieces.n_clusters
        )
    x = jnp.linalg.solve(pieces.information, jnp.eye(k, dtype=pieces.information.dtype)[:, block])
    sigma = x[block]
    info = jnp.linalg.inv(0.5 * (sigma + sigma.T))
    proj = x @ info  # u~_i = proj' u_i
    nan = jnp.full((len(block), len(block)), jnp.nan, info.dtype)
    return Pieces(
        information=0.5 * (info + info.T),
        opg=nan,
        meat=proj.T @ pieces.meat @ proj,
        score_groups=pieces.score_groups @ proj,
        expected=nan,
        n_obs=pieces.n_obs,
        n_clusters=pieces.n_clusters,
    )


def block_indices(init, keys, free) -> tuple[int, ...]:
    """Flat indices (ravel order) of the entries of the top-level keys `keys` of `init`; every one
    must be a free parameter (a plain error otherwise)."""
    if not isinstance(init, dict):
        raise TypeError("se_for names top-level keys of init, so init must be a dict")
    if isinstance(keys, str):
        keys = [keys]
    unknown = [key for key in keys if key not in init]
    if unknown:
        raise KeyError(f"se_for names {unknown}, which are not keys of init ({list(init)})")
    out, start = [], 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(init)[0]:
        size = int(np.size(leaf))
        if path[0].key in keys:
            out += range(start, start + size)
        start += size
    held = [i for i in out if not free[i]]
    if held:
        raise ValueError("se_for names parameters held by fixed=; they have no standard errors")
    if not out:
        raise ValueError("se_for names no parameters")
    return tuple(out)


def subset_of(res: FitResult, block: tuple[int, ...]) -> SubsetResult:
    """The SubsetResult of a dense fit: its pieces reduced to `block` (flat indices, all free)."""
    position = np.cumsum(res.free) - 1
    pieces = reduce_pieces(res.pieces(), position[np.asarray(block, int)])
    cov, _ = covariance(KINDS[res.cov_type], pieces)
    se = (
        jnp.full(len(res.names), jnp.nan, cov.dtype)
        .at[np.asarray(block, int)]
        .set(jnp.sqrt(jnp.diagonal(cov)))
    )
    fields = {f: getattr(res, f) for f in ("params", "loglik", "score", "n_obs", "n_iter",
              "n_damped", "start_rows", "scaled_gradient", "status", "names", "free", "method",
              "cov_type")}  # fmt: skip
    return SubsetResult(
        **fields,
        se=jax.flatten_util.ravel_pytree(res.params)[1](se),
        cov=cov,
        information=pieces.information,
        expected_information=pieces.expected,
        opg=pieces.opg,
        meat=pieces.meat,
        score_groups=pieces.score_groups,
        block=tuple(int(i) for i in block),
    )
