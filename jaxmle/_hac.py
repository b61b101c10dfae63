"""Heteroskedasticity- and autocorrelation-consistent (HAC) meats: kernels and bandwidth rules.

For rows c_t in time order (t = 1..n; c_t = u_t, or w_t u_t with sampling weights), a kernel k and a
bandwidth b (Newey & West 1987; Andrews 1991; docs/theory.md, "Covariance kinds"):

    B_HAC = sum_{t,s} k(|t - s| / b) c_t c_s' = Gamma_0 + sum_{j >= 1} k(j / b) (Gamma_j + Gamma_j'),
    Gamma_j = sum_{t > j} c_t c_{t-j}'

    bartlett            k(x) = max(0, 1 - |x|)          `lags=L` is b = L + 1 (weights 1 - j/(L+1))
    quadratic-spectral  k(x) = 3/y^2 (sin(y)/y - cos(y)), y = 6 pi x / 5

The sum over all n lags is one Toeplitz product, computed by FFT (O(n log n) per column), so a
bandwidth chosen from the data needs no static lag count. Bandwidth rules, both on the rows
combined as h_t = c_t' v with v = 1 for every parameter except an intercept (R's convention; all
ones when that leaves nothing):

    Newey-West (1994)   sigma_j = sum_t h_t h_{t+j} / n, j = 0..m, m = floor(4 (n/100)^r),
                        r = 2/9 (bartlett) or 2/25 (QS); s0 = sigma_0 + 2 sum sigma_j,
                        s_q = 2 sum j^q sigma_j;  b = 1.1447 (s1/s0)^(2/3) n^(1/3) (bartlett),
                        b = 1.3221 (s2/s0)^(2/5) n^(1/5) (QS)
    Andrews (1991)      an AR(1) fitted by OLS (with intercept) to every column a of c: rho_a,
                        sigma_a^2 = RSS / (n - 1); with d_a = v_a sigma_a^4:
                        alpha1 = sum d_a 4 rho_a^2 / ((1-rho_a)^6 (1+rho_a)^2) / D,
                        alpha2 = sum d_a 4 rho_a^2 / (1-rho_a)^8 / D,  D = sum d_a / (1-rho_a)^4;
                        b = 1.1447 (n alpha1)^(1/3) (bartlett), b = 1.3221 (n alpha2)^(1/5) (QS)

Equal R `sandwich::bwNeweyWest(m, kernel, prewhite = FALSE)` and `bwAndrews(m, kernel,
prewhite = FALSE)` (sandwich 3.0-2). Kernel weights below 1e-7 at the tail are dropped, as R's
`weightsAndrews(tol = 1e-7)` does.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

KERNELS = ("bartlett", "quadratic-spectral")
BANDWIDTH_RULES = ("newey-west", "andrews")
# R's weightsAndrews drops the kernel weights after the last one above this size.
_WEIGHT_TOL = 1e-7
# R's kweights replaces the QS kernel near 0 (|x| < 1e-3) by exp(c x^2), c = 1e6 log k(1e-3).
_QS_NEAR_ZERO = 1e-3


def _qs(x):
    y = 6.0 * jnp.pi * x / 5.0
    return 3.0 / y**2 * (jnp.sin(y) / y - jnp.cos(y))


def kernel_weights(kernel: str, n: int, bandwidth) -> jax.Array:
    """k(j / b) for the lags j = 0..n-1, zero after the last weight above 1e-7 (R's tolerance)."""
    x = jnp.arange(n) / bandwidth
    if kernel == "bartlett":
        w = jnp.maximum(1.0 - x, 0.0)
    else:
        near = jnp.abs(x) < _QS_NEAR_ZERO
        c = 1e6 * jnp.log(_qs(jnp.asarray(_QS_NEAR_ZERO, x.dtype)))
        w = jnp.where(near, jnp.exp(c * x**2), _qs(jnp.where(near, 1.0, x)))
    lags = jnp.arange(n)
    last = jnp.max(jnp.where(jnp.abs(w) > _WEIGHT_TOL, lags, 0))
    return jnp.where(lags <= last, w, 0.0)


def lag_weights(lags: int, n: int, dtype) -> jax.Array:
    """Newey-West weights 1 - j/(L+1), j = 0..L (R `NeweyWest(lag = L)`), zero beyond."""
    j = jnp.arange(n, dtype=dtype)
    return jnp.maximum(1.0 - j / (lags + 1.0), 0.0)


def toeplitz_meat(c, w):
    """sum_{t,s} w_|t-s| c_t c_s' for rows c (n x k) and lag weights w (n,), by FFT."""
    n = c.shape[0]
    size = 2 ** math.ceil(math.log2(2 * n))
    column = jnp.concatenate([w, jnp.zeros(size - 2 * n + 1, w.dtype), w[1:][::-1]])
    padded = jnp.concatenate([c, jnp.zeros((size - n, c.shape[1]), c.dtype)])
    product = jnp.fft.irfft(
        jnp.fft.rfft(column)[:, None] * jnp.fft.rfft(padded, axis=0), n=size, axis=0
    )[:n]
    meat = c.T @ product
    return 0.5 * (meat + meat.T)


def selection(select):
    """R's column weights v: as given, or all ones when none is positive or there is one column."""
    if select.shape[0] < 2:
        return jnp.ones_like(select)
    return jnp.where(jnp.any(select > 0), select, jnp.ones_like(select))


def bandwidth_newey_west(c, select, kernel: str):
    """Newey-West (1994) automatic bandwidth (module docstring)."""
    n = c.shape[0]
    bartlett = kernel == "bartlett"
    m = math.floor(4 * (n / 100) ** (2 / 9 if bartlett else 2 / 25))
    h = c @ selection(select)
    sigma = jnp.stack([jnp.sum(h[: n - j] * h[j:]) / n for j in range(m + 1)])
    j = jnp.arange(1, m + 1, dtype=c.dtype)
    s0 = sigma[0] + 2.0 * jnp.sum(sigma[1:])
    if bartlett:
        s1 = 2.0 * jnp.sum(j * sigma[1:])
        return 1.1447 * ((s1 / s0) ** 2) ** (1 / 3) * n ** (1 / 3)
    s2 = 2.0 * jnp.sum(j**2 * sigma[1:])
    return 1.3221 * ((s2 / s0) ** 2) ** (1 / 5) * n ** (1 / 5)


def bandwidth_andrews(c, select, kernel: str):
    """Andrews (1991) automatic bandwidth from AR(1) fits to the columns (module docstring)."""
    n = c.shape[0]
    x = c - jnp.mean(c, axis=0)
    y, z = x[1:], x[:-1]
    yc, zc = y - jnp.mean(y, axis=0), z - jnp.mean(z, axis=0)
    rho = jnp.sum(yc * zc, axis=0) / jnp.sum(zc * zc, axis=0)
    sigma2 = jnp.sum((yc - rho * zc) ** 2, axis=0) / (n - 1)
    v = selection(select)
    d = v * sigma2**2
    denominator = jnp.sum(d / (1.0 - rho) ** 4)
    if kernel == "bartlett":
        alpha1 = jnp.sum(d * 4.0 * rho**2 / ((1.0 - rho) ** 6 * (1.0 + rho) ** 2)) / denominator
        return 1.1447 * (n * alpha1) ** (1 / 3)
    alpha2 = jnp.sum(d * 4.0 * rho**2 / (1.0 - rho) ** 8) / denominator
    return 1.3221 * (n * alpha2) ** (1 / 5)


def hac_weights(c, select, *, lags=None, kernel="bartlett", bandwidth=None):
    """The lag weights w_j (j = 0..n-1) that `lags`, `kernel` and `bandwidth` ask for.

    lags=L                  Bartlett, 1 - j/(L+1)                 R `NeweyWest(m, lag = L)`
    bandwidth=b (a number)  k(j/b)                                R `kernHAC(m, kernel, bw = b)`
    bandwidth="newey-west" | "andrews"   k(j/b) with that rule's b (continuous)
    neither, bartlett       L = floor(Newey-West 1994 b)           R `NeweyWest(m)`
    neither, QS             b = Andrews (1991)                     R `kernHAC(m)`
    """
    n = c.shape[0]
    if lags is not None:
        return lag_weights(lags, n, c.dtype)
    if bandwidth is None and kernel == "bartlett":
        lag = jnp.floor(bandwidth_newey_west(c, select, kernel))
        return lag_weights(lag, n, c.dtype)
    if bandwidth is None:
        bandwidth = "andrews"
    if isinstance(bandwidth, str):
        rule = bandwidth_andrews if bandwidth == "andrews" else bandwidth_newey_west
        bandwidth = rule(c, select, kernel)
    return kernel_weights(kernel, n, bandwidth)


def check_options(options) -> None:
    """Plain errors for HAC options that cannot work (called before any work)."""
    lags = options.get("lags")
    kernel = options.get("kernel", "bartlett")
    bandwidth = options.get("bandwidth")
    if kernel not in KERNELS:
        raise ValueError(f"HAC kernel {kernel!r} is unknown; choose one of {KERNELS}")
    if lags is not None:
        if isinstance(lags, bool) or not isinstance(lags, int) or lags < 0:
            raise ValueError(f"HAC lags must be an int >= 0 (or None: automatic), got {lags!r}")
        if kernel != "bartlett":
            raise ValueError("HAC lags= sets the Bartlett truncation; for kernel='quadratic-"
                             "spectral' pass bandwidth= (a number, 'andrews' or 'newey-west')")  # fmt: skip
        if bandwidth is not None:
            raise ValueError("HAC takes lags= or bandwidth=, not both (lags=L is bandwidth=L+1)")
    if bandwidth is not None and not (
        bandwidth in BANDWIDTH_RULES
        or (
            isinstance(bandwidth, (int, float))
            and not isinstance(bandwidth, bool)
            and 0 < bandwidth < math.inf
        )
    ):
        raise ValueError(
            f"HAC bandwidth must be a positive number or one of {BANDWIDTH_RULES}, got {bandwidth!r}"
        )
    if not isinstance(options.get("adjust", False), bool):
        raise ValueError(f"HAC adjust must be True or False, got {options['adjust']!r}")
