"""Inference after a fit: Wald, LR and score tests, the delta method, profile intervals, bounded
parameters, a comparison table, and the rejection rate of all three tests in one compiled call.

Run: python examples/inference.py
"""

import jax
import jax.numpy as jnp
import numpy as np

import jaxmle as jm

# jaxmle's own calls are float64 whatever this flag; the simulation study at the end generates its
# data inside jit, where dtypes follow JAX's setting
jax.config.update("jax_enable_x64", True)

rng = np.random.default_rng(1)
n = 500
x = rng.normal(size=(n, 2))
z = rng.normal(size=(n, 2))
eta = 0.3 + x @ np.array([0.8, -0.5]) + z @ np.array([0.25, 0.0])
data = {"x": x, "z": z, "y": (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)}


def logit(theta, obs):
    """Log-density of ONE observation; b: intercept and x, g: the coefficients under test."""
    eta = theta["b0"] + obs["x"] @ theta["b"] + obs["z"] @ theta["g"]
    return obs["y"] * eta - jnp.logaddexp(0.0, eta)


init = {"b0": 0.0, "b": jnp.zeros(2), "g": jnp.zeros(2)}
full = jm.fit(logit, init, data)
restricted = jm.fit(logit, init, data, fixed={"g": jnp.zeros(2)})
print(full.summary())

print("\nH0: g = 0, three ways")
print(" ", jm.wald_test(full, "g[0] = 0, g[1] = 0"))
print(" ", jm.lr_test(restricted, full))
print(" ", jm.score_test(restricted))
print(" ", jm.score_test(restricted, cov="sandwich"), "(robust)")
print(" ", jm.wald_test(full, "b[0] = -b[1]"))  # any linear restriction, by name
print(" ", jm.wald_test(full, lambda p: p["b"][0] * p["b"][1] + 0.4))  # nonlinear, delta method

print("\nDelta method: the odds ratios of x")
print(jm.delta_method(full, lambda p: {"or_x": jnp.exp(p["b"])}).summary())

print("\nProfile-likelihood vs Wald 95% intervals")
lo, hi = full.conf_int()
for j, name in enumerate(("b[0]", "b[1]")):
    profile = jm.profile_ci(full, name)
    print(f"  {name}: profile [{profile[0]:.4f}, {profile[1]:.4f}]", end="  ")
    print(f"Wald [{float(lo['b'][j]):.4f}, {float(hi['b'][j]):.4f}]")

print("\nModels compared")
only_x = jm.fit(logit, init, data, fixed={"b": jnp.zeros(2), "g": jnp.zeros(2)})
print(jm.compare({"intercept": only_x, "+ x": restricted, "+ x, z": full}))

print("\nA bounded parameter: the model in sigma, the optimiser in log(sigma)")


def normal(theta, obs):
    r = (obs["y"] - theta["mu"]) / theta["sigma"]
    return -0.5 * r**2 - jnp.log(theta["sigma"]) - 0.5 * jnp.log(2 * jnp.pi)


y = rng.normal(2.0, 1.5, size=200)
res = jm.fit_transformed(normal, {"mu": 0.0, "sigma": 1.0}, {"y": y}, {"sigma": jm.positive()})
print(res.summary())  # sigma with its delta-method standard error
print("  profile interval for sigma:", jm.profile_ci(res, "sigma"))

print("\nSize of the three tests under H0 (g = 0), 500 replications in one compiled call")


def replication(key):
    kx, kz, ky = jax.random.split(key, 3)
    x = jax.random.normal(kx, (200, 2))
    z = jax.random.normal(kz, (200, 2))
    y = jax.random.bernoulli(ky, jax.nn.sigmoid(0.3 + x @ jnp.array([0.8, -0.5])))
    d = {"x": x, "z": z, "y": y.astype(float)}
    f = jm.fit(logit, init, d)
    r = jm.fit(logit, init, d, fixed={"g": jnp.zeros(2)})
    tests = (jm.wald_test(f, "g[0], g[1]"), jm.lr_test(r, f), jm.score_test(r))
    return jnp.stack([t.pvalue < 0.05 for t in tests])


rejections = jax.jit(jax.vmap(replication))(jax.random.split(jax.random.key(0), 500))
for name, rate in zip(("Wald", "LR", "score"), np.asarray(rejections).mean(axis=0), strict=True):
    print(f"  {name:<6} rejects {rate:.3f} at the 5% level")
