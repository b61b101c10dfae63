"""GLMs from a formula and a DataFrame, as R's glm: a Poisson rate model with an offset, a negative
binomial for overdispersed counts, a probit dose-response curve with trials as weights, and the same
probit written by hand as theta -> distribution.

Run: python examples/glm.py
"""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.scipy.special import ndtr

import jaxmle as jm
from jaxmle import families as jf

DATA = Path(__file__).resolve().parent.parent / "tests" / "reference" / "data"

# Insurance claims (MASS::Insurance): claim counts, policy holders as the exposure (an offset).
claims = pd.read_csv(DATA / "insurance.csv")
res = jm.glm(
    "Claims ~ C(District) + Group + Age", claims, family="poisson", offset=np.log(claims["Holders"])
)
print(res.summary())

# Days absent from school (MASS::quine): overdispersed counts, negative binomial (MASS::glm.nb).
quine = pd.read_csv(DATA / "quine_factors.csv")
nb = jm.glm("Days ~ Eth + Sex + Age + Lrn", quine, family="negative_binomial")
print(
    f"\nnegative binomial: theta = {float(nb.params['theta']):.4f} (se {float(nb.se['theta']):.4f})"
)
print(nb.to_frame()[["estimate", "std_err", "p_value"]])

# Age at menarche (MASS::menarche): proportions, with the number of girls as binomial weights.
girls = pd.read_csv(DATA / "menarche.csv")
probit = jm.glm("prop ~ Age", girls, family="binomial", link="probit", weights="Total")
print("\nprobit, predicted proportions with delta-method standard errors:")
print(probit.predict(pd.DataFrame({"Age": [11.0, 13.0, 15.0]})))


# The same probit as a model theta -> distribution: Fisher scoring, expected information.
def predict(theta, obs):
    return jf.Binomial(obs["n"], probs=ndtr(theta["a"] + theta["b"] * obs["age"]))


model = jf.Model(predict, response="k")
data = {k: girls[c].to_numpy() for k, c in [("n", "Total"), ("k", "Menarche"), ("age", "Age")]}
init = {"a": jnp.asarray(-10.0), "b": jnp.asarray(0.8)}
by_hand = jm.fit(model, init, data, method="fisher", cov="expected", expected=model.expected)
print("\nthe same probit written as predict -> distribution:")
print(by_hand.to_frame()[["estimate", "std_err"]])
print(probit.to_frame()[["estimate", "std_err"]])
