"""The bootstrap of a logit, BCa intervals for odds ratios, the score bootstrap, and average
marginal effects with delta-method standard errors.

Run: python examples/bootstrap.py
"""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

import jaxmle as jm

rng = np.random.default_rng(7)
n = 1000
frame = pd.DataFrame({"age": rng.uniform(18, 45, n), "smoke": (rng.random(n) < 0.4).astype(float)})
eta = -2.0 + 0.04 * frame["age"] + 0.7 * frame["smoke"]
frame["low"] = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)


def logit(theta, obs):
    """Log-density of ONE observation."""
    eta = theta["b0"] + theta["b_age"] * obs["age"] + theta["b_smoke"] * obs["smoke"]
    return obs["low"] * eta - jnp.logaddexp(0.0, eta)


res = jm.fit(logit, {"b0": 0.0, "b_age": 0.0, "b_smoke": 0.0}, dict(frame))
print(res.summary())

# 999 pairs replications, refitted in one compiled program
bs = jm.bootstrap(res, n_boot=999, key=jax.random.key(0), kind="pairs")
print()
print(bs.summary())

print("\nOdds ratio of smoking, 95% intervals")
odds = bs.apply(lambda p: {"or_smoke": jnp.exp(p["b_smoke"])})
for method in ("percentile", "basic", "bca"):
    lo, hi = odds.ci(method)
    print(f"  {method:<10} {float(lo['or_smoke']):.4f} .. {float(hi['or_smoke']):.4f}")
delta = jm.delta_method(res, lambda p: {"or_smoke": jnp.exp(p["b_smoke"])})
lo, hi = delta.conf_int()
print(f"  {'Wald':<10} {float(lo['or_smoke']):.4f} .. {float(hi['or_smoke']):.4f} (delta method)")

# Kline-Santos score bootstrap: no refits; its se estimates the sandwich (HC0) standard errors
score = jm.bootstrap(res, n_boot=4000, key=1, kind="score")
sandwich = res.with_cov("sandwich")
print("\nScore bootstrap se vs sandwich se:")
for name in res.names:
    print(f"  {name:<8} {float(score.se[name]):.5f}  {float(sandwich.se[name]):.5f}")


def prob(theta, obs):
    """P(low = 1) for one row: the quantity whose effects we report."""
    return jax.nn.sigmoid(
        theta["b0"] + theta["b_age"] * obs["age"] + theta["b_smoke"] * obs["smoke"]
    )


print()
print(jm.margins(res, prob, frame).summary())  # age: a derivative; smoke (0/1): a change 0 -> 1
print(jm.margins(res, prob, frame, effect="prediction", at={"smoke": [0, 1]}).summary())
