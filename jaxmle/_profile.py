"""Profile likelihood of one parameter: interval, values and plot (host; refits the model).

    profile     {theta_j : 2 (lnL_hat - max_{others} lnL(theta_j, .)) <= chi2_{1,level}}

Profile intervals refit the model (they need the data a host-side fit keeps) and run on the host.
"""

from __future__ import annotations

import difflib
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtri

from ._bounds import Bounds, _derivatives, flat_inverse
from ._fit import refit
from ._results import FitResult
from ._scope import host64, traced
from ._status import Status
from ._tables import check_level
from ._transforms import profile_scale

# Profile search: first step is the Wald half-width, then doubling, at most this many times
# (2^20 Wald half-widths from the estimate) before the side is declared open.
MAX_DOUBLINGS = 20
# Two doublings apart the profile moved by less than this (relative): it has levelled off.
FLAT_RTOL = 1e-10
# Bracketing root search on the profile: the bound to this fraction of the Wald half-width.
PROFILE_XTOL = 1e-10
# Refit outcomes that give a usable profile value (a singular information matrix of the others
# leaves their maximum, hence lnL, well defined).
_USABLE = (Status.SUCCESSFUL, Status.SINGULAR_INFORMATION, Status.BOUNDARY)


def _name_index(res: FitResult, name: str) -> int:
    if isinstance(name, (int, np.integer)) and not isinstance(name, bool):
        if not 0 <= name < len(res.names):
            raise IndexError(f"parameter index {name} out of range 0..{len(res.names) - 1}")
        return int(name)
    if name in res.names:
        return res.names.index(name)
    close = difflib.get_close_matches(str(name), res.names, n=3)
    hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
    raise KeyError(f"no parameter {name!r}{hint}; the parameters are: {', '.join(res.names)}")


def _require_single_host(res: FitResult, what: str) -> None:
    if traced(res.loglik) or np.ndim(res.status):
        raise ValueError(
            f"{what} refits the model, so it needs one host-side fit with its data; this result "
            "is a batch or a traced value (from jit/vmap): take one fit, res[i], and give it its "
            "data with jm.attach(res[i], logpdf, data_i)"
        )
    res.problem  # noqa: B018 - raises, saying how to give the result its data back


class ProfileInterval(tuple):
    """(lower, upper) profile-likelihood interval; `.open_lower`/`.open_upper` and `.note` say in
    words when the profile never crosses the cut-off on a side (that end is the end of the
    parameter's range: -inf/+inf, or the bound of its transform)."""

    def __new__(cls, lower, upper, *, name, level, open_lower, open_upper, note):
        self = super().__new__(cls, (lower, upper))
        self.lower, self.upper, self.name, self.level = lower, upper, name, level
        self.open_lower, self.open_upper, self.note = open_lower, open_upper, note
        return self

    def __repr__(self) -> str:
        text = f"ProfileInterval({self.name}, {self.level:g}: lower={self.lower:.10g}, "
        text += f"upper={self.upper:.10g})"
        return text + (f"  # {self.note}" if self.note else "")


class _Profile:
    """The profile log-likelihood of one parameter, on its unconstrained scale u.

    lnL_p(t) = max over the others of lnL with theta_j = t: one refit per t through the same
    compiled program (held parameter mask), warm-started from the nearest t already done.
    """

    def __init__(self, res: FitResult, name):
        _require_single_host(res, "profile_ci")
        self.j = j = _name_index(res, name)
        self.name = res.names[j]
        if not res.free[j]:
            raise ValueError(f"{self.name} is held fixed in this fit: it has no profile")
        if not bool(res.converged):
            raise ValueError(
                f"a profile needs a converged fit to start from; this one: {res.message}"
            )
        self.res = res
        self.bounds = profile_scale(res, j)
        transforms = res.problem.transforms
        coef = res.coef
        all_bounds = (
            transforms.flat_bounds(res.params)
            if transforms is not None
            else (Bounds(),) * len(coef)
        )
        self.coef_u = np.asarray(flat_inverse(all_bounds, coef))
        self.u_hat = float(self.coef_u[j])
        du_dx = float(_derivatives((self.bounds,), coef[j : j + 1])[0][0])
        se_u = float(np.sqrt(res.variance(j))) * abs(du_dx)
        self.se_u = se_u if np.isfinite(se_u) and se_u > 0 else 0.1 * max(1.0, abs(self.u_hat))
        # a box the fit keeps theta in (fit_mixed's lower=/upper=): the profile stops at its edge
        box = res.problem.box if transforms is None else None
        self.box = (-math.inf, math.inf) if box is None else (float(box[0][j]), float(box[1][j]))
        self.mask = tuple(bool(f) and i != j for i, f in enumerate(res.free))
        self.loglik_hat = float(res.loglik)
        self.points: dict[float, tuple[float, np.ndarray]] = {
            self.u_hat: (self.loglik_hat, self.coef_u)
        }
        self.notes: list[str] = []

    def natural(self, t: float) -> float:
        with jax.enable_x64(True):
            return float(self.bounds.forward(jnp.asarray(t, jnp.float64)))

    def _refit(self, t, start):
        theta0 = np.array(start, dtype=float)
        theta0[self.j] = t
        if any(self.mask):
            out = refit(self.res, theta0=theta0, free=self.mask)
        else:  # nothing else to maximise over: lnL at theta0 (no iterations)
            out = refit(self.res, theta0=theta0, free=self.res.free, max_iter=0)
            return float(out.loglik), np.asarray(theta0), Status.SUCCESSFUL
        return float(out.loglik), np.asarray(out.coef), Status(int(out.status))

    def __call__(self, t: float) -> float:
        """lnL_p(t); -inf where lnL is not finite (outside the parameter's range)."""
        t = float(t)
        if t in self.points:
            return self.points[t][0]
        near = min(self.points, key=lambda s: abs(s - t))
        ll, coef, status = self._refit(t, self.points[near][1])
        if status not in _USABLE and near != self.u_hat:  # retry from the estimate
            ll2, coef2, status2 = self._refit(t, self.coef_u)
            if status2 in _USABLE or (np.isfinite(ll2) and not ll2 < ll):
                ll, coef, status = ll2, coef2, status2
        if not np.isfinite(ll):
            return -math.inf
        if status not in _USABLE:
            self.notes.append(
                f"the re-maximisation at {self.name} = {self.natural(t):.6g} ended with "
                f"'{status.name.lower()}': the profile there may be too low"
            )
        self.points[t] = (ll, coef)
        return ll

    def bound(self, side: int, cut: float):
        """(u bound, open?, note) on one side (-1 lower, +1 upper)."""
        from scipy.optimize import brentq

        target = self.loglik_hat - cut
        h = math.sqrt(2.0 * cut) * self.se_u
        t_in, prev, step = self.u_hat, self.loglik_hat, h
        where = "below" if side < 0 else "above"
        edge = self.box[0] if side < 0 else self.box[1]
        for m in range(MAX_DOUBLINGS + 1):
            t = self.u_hat + side * step
            if (t - edge) * side >= 0:  # the box's edge: the profile ends there
                t = edge
                if self(t) >= target:
                    reach = "down to" if side < 0 else "up to"
                    note = (
                        f"{self.name}: the profile stays above the cut-off {reach} the bound "
                        f"{edge:.6g} of its range (fit_mixed's lower=/upper=), the interval's end"
                    )
                    return t, True, note
                break
            ll = self(t)
            if ll == -math.inf:
                edge_in, edge_out = t_in, t
                while abs(edge_out - edge_in) > 1e-12 * max(1.0, abs(edge_out)):
                    mid = 0.5 * (edge_in + edge_out)
                    llm = self(mid)
                    if llm == -math.inf:
                        edge_out = mid
                    elif llm < target:
                        t_in, t = edge_in, mid
                        break
                    else:
                        edge_in = mid
                else:
                    note = (
                        f"open {where}: lnL is not finite beyond {self.name} = "
                        f"{self.natural(edge_in):.6g} and the profile is still above the cut-off there"
                    )
                    return side * math.inf, True, note
                break
            if ll < target:
                break
            if m >= 2 and abs(ll - prev) <= FLAT_RTOL * (1.0 + abs(ll)):
                note = (
                    f"open {where}: the profile levels off at lnL_hat - {self.loglik_hat - ll:.4g}, "
                    f"above the cut-off lnL_hat - {cut:.4g} (from {self.name} = "
                    f"{self.natural(t):.6g} on)"
                )
                return side * math.inf, True, note
            t_in, prev, step = t, ll, 2.0 * step
        else:
            note = (
                f"open {where}: the profile stays above the cut-off up to {self.name} = "
                f"{self.natural(t):.6g} ({2**MAX_DOUBLINGS} Wald half-widths from the estimate)"
            )
            return side * math.inf, True, note
        lo, hi = sorted((t_in, t))
        root = brentq(
            lambda s: self(s) - target, lo, hi, xtol=PROFILE_XTOL * h, rtol=1e-14, maxiter=200
        )
        return root, False, ""


def _cutoff(level: float) -> float:
    level = check_level(level)
    return 0.5 * float(ndtri(0.5 + 0.5 * level)) ** 2  # chi2_{1,level} / 2


@host64
def profile_ci(res: FitResult, name: str, level: float = 0.95) -> ProfileInterval:
    """Profile-likelihood interval for one parameter, named as in `summary()`.

    {t : 2 (lnL_hat - lnL_p(t)) <= chi2_{1,level}}, lnL_p(t) = max over the others of lnL with
    the parameter at t; each bound by a bracketing root search (Brent), refitting the others
    (warm-started, one compile). A side where the profile never drops below the cut-off within the
    parameter's range is open: that end is -inf/+inf (or the bound of its transform, or of the box
    a fit keeps it in, as a variance at 0 for `fit_mixed(lower=...)`) and `.note`
    says why. Unlike the Wald interval theta_hat -/+ z se, it is invariant to reparametrisation
    and follows a skewed likelihood. Equals R `confint(profile(m))` (MASS, bbmle
    `confint(m, method = "uniroot")`), Stata `pllf`.
    """
    prof = _Profile(res, name)
    return _interval(prof, level)


def _interval(prof: _Profile, level: float) -> ProfileInterval:
    cut = _cutoff(level)
    out = []
    for side in (-1, 1):
        t, is_open, note = prof.bound(side, cut)
        edge = prof.box[0] if side < 0 else prof.box[1]
        if is_open and math.isfinite(edge):
            value = edge
        elif is_open:
            value = prof.bounds.lower if side < 0 else prof.bounds.upper
        else:
            value = prof.natural(t)
        out.append((value, is_open, note))
    notes = "; ".join([n for _, _, n in out if n] + list(dict.fromkeys(prof.notes)))
    return ProfileInterval(
        out[0][0],
        out[1][0],
        name=prof.name,
        level=level,
        open_lower=out[0][1],
        open_upper=out[1][1],
        note=notes,
    )


@host64
def profile_loglik(res: FitResult, name: str, values) -> np.ndarray:
    """lnL_p at each natural value in `values` (host; -inf outside the parameter's range)."""
    prof = _Profile(res, name)
    return _profile_values(prof, np.asarray(values, dtype=float))


def _profile_values(prof: _Profile, values: np.ndarray) -> np.ndarray:
    with jax.enable_x64(True):
        u = np.asarray(prof.bounds.inverse(jnp.asarray(values, jnp.float64)))
    out = np.full(values.shape, -np.inf)
    order = np.argsort(np.abs(u - prof.u_hat), kind="stable")  # outward: warm starts stay close
    for i in order.ravel():
        if np.isfinite(u.flat[i]):
            out.flat[i] = prof(u.flat[i])
    return out


@host64
def profile_plot(res: FitResult, name: str, level: float = 0.95, *, ax=None, n_points: int = 41):
    """Draw lnL_p with the cut-off lnL_hat - chi2_{1,level}/2, the profile interval and, dotted,
    the Wald quadratic lnL_hat - (t - theta_hat)^2 / (2 se^2). Needs matplotlib; returns the Axes."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("profile_plot needs matplotlib: pip install 'jaxmle[plot]'") from e
    prof = _Profile(res, name)
    ci = _interval(prof, level)
    cut = _cutoff(level)
    with jax.enable_x64(True):
        lo_u, hi_u = (
            float(prof.bounds.inverse(jnp.asarray(v, jnp.float64))) for v in (ci.lower, ci.upper)
        )
    reach = 2.0 * math.sqrt(2.0 * cut) * prof.se_u
    lo_u = prof.u_hat - reach if ci.open_lower else lo_u - 0.25 * (prof.u_hat - lo_u)
    hi_u = prof.u_hat + reach if ci.open_upper else hi_u + 0.25 * (hi_u - prof.u_hat)
    grid_u = np.linspace(lo_u, hi_u, n_points)
    grid = np.array([prof.natural(t) for t in grid_u])
    ll = _profile_values(prof, grid)
    if ax is None:
        _, ax = plt.subplots()
    ax.plot(grid, ll, color="C0", label="profile lnL")
    x_hat = float(res.coef[prof.j])
    se = float(np.sqrt(res.variance(prof.j)))
    ax.plot(
        grid,
        prof.loglik_hat - 0.5 * ((grid - x_hat) / se) ** 2,
        color="0.5",
        linestyle=":",
        label="Wald quadratic",
    )
    ax.axhline(prof.loglik_hat - cut, color="C3", linestyle="--", label=f"cut-off ({level:g})")
    for v, is_open in ((ci.lower, ci.open_lower), (ci.upper, ci.open_upper)):
        if not is_open:
            ax.axvline(v, color="C3", linewidth=0.8)
    ax.set_xlabel(prof.name)
    ax.set_ylabel("profile log-likelihood")
    ax.set_title(f"{prof.name}: {level:g} profile interval [{ci.lower:.4g}, {ci.upper:.4g}]")
    ax.legend()
    return ax
