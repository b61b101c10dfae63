"""Estimating equations: a GEE for repeated binary outcomes (geepack's ohio data), an M-estimator
with a non-symmetric Jacobian (a ratio, geex's example on mtcars), and an over-identified IV wage
equation by efficient two-step GMM with Hansen's J (Mroz).

Run: python examples/estimating_equations.py
"""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd

import jaxmle as jm

DATA = Path(__file__).resolve().parent.parent / "tests" / "reference" / "data"

# Wheeze at ages 7-10 (geepack::ohio): 537 children, 4 visits each; exchangeable working correlation.
ohio = pd.read_csv(DATA / "gee_ohio.csv")
res = jm.gee(
    "resp ~ age + smoke", ohio, family="binomial", groups="id", corstr="exchangeable", time="age"
)
print(res.summary())  # robust (sandwich) standard errors = geepack summary(geeglm(...))
for kind in ("naive", "bias_reduced"):
    print(f"{kind:>13} se:", {k: round(float(v), 5) for k, v in res.with_cov(kind).se.items()})
print("correlation", float(res.correlation), "scale", float(res.scale), "QIC", res.qic()["QIC"])
print(jm.wald_test(res, "age = 0, smoke = 0"))


# M-estimation: theta solves sum_i psi(theta, obs_i) = 0; cov = A^-1 B A^-T.
def ratio(theta, obs):
    return {
        "mpg": obs["mpg"] - theta["mpg"],
        "hp": obs["hp"] - theta["hp"],
        "ratio": theta["mpg"] - theta["ratio"] * theta["hp"],
    }


cars = pd.read_csv(DATA / "mtcars.csv")
m = jm.estimate(
    ratio,
    {"mpg": 1.0, "hp": 1.0, "ratio": 1.0},
    {"mpg": cars["mpg"].to_numpy(float), "hp": cars["hp"].to_numpy(float)},
)
print(m.summary())


# GMM: log wage on experience and education, instruments the parents' and husband's education.
mroz = pd.read_csv(DATA / "mroz.csv").dropna(subset=["lwage"])
data = {
    "y": mroz["lwage"].to_numpy(float),
    "x": np.column_stack([np.ones(len(mroz)), mroz[["exper", "expersq", "educ"]]]),
    "z": np.column_stack(
        [np.ones(len(mroz)), mroz[["exper", "expersq", "motheduc", "fatheduc", "huseduc"]]]
    ),
}


def iv(theta, obs):
    return obs["z"] * (obs["y"] - obs["x"] @ theta["b"])


two_step = jm.gmm(iv, {"b": jnp.zeros(4)}, data, weighting="two-step")
print(two_step.summary())  # with Hansen's J test of the 2 over-identifying restrictions
