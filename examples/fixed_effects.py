"""Many parameters: a logit with one effect per person (R plm::Males, union membership), fitted
with the effects declared by `index=` (eliminated in every Newton step, as fixest concentrates them
out), person-clustered standard errors for the covariates only; then the same model written
generically and fitted by truncated Newton ("newton-cg") with `se_for`.

Run: python examples/fixed_effects.py
"""

from pathlib import Path

import numpy as np
import pandas as pd

import jaxmle as jm

DATA = Path(__file__).resolve().parent.parent / "tests" / "reference" / "data"

males = pd.read_csv(DATA / "males.csv")
person, persons = pd.factorize(males["nr"])  # index columns hold integer codes 0..G-1
data = {
    "x": males[["exper", "married", "wage", "health"]].to_numpy(float),
    "y": males["union"].to_numpy(float),
    "person": person.astype(np.int32),
}


def logit(theta, obs):
    """One row's log-likelihood; theta["a"] is read only as theta["a"][obs["person"]]."""
    eta = obs["x"] @ theta["b"] + theta["a"][obs["person"]]
    return obs["y"] * eta - jm.log1pexp(eta)


init = {"a": np.zeros(len(persons)), "b": np.zeros(4)}
res = jm.fit(logit, init, data, index={"a": "person"}, groups=person, cov="cluster")
print(res.summary())  # the head counts the persons dropped (never in the union, or always)

# The generic path: no index=, truncated Newton (CG on Hessian-vector products) over all 250
# parameters, the covariates' covariance from CG solves (never a k x k matrix beyond 500
# parameters); the persons whose outcome never varies have no finite effect, so this fit keeps
# only the others. method="lbfgs" takes the same arguments.
keep = np.asarray(np.isfinite(res.params["a"]))[person]
kept, codes = np.unique(person[keep], return_inverse=True)
sub = {"x": data["x"][keep], "y": data["y"][keep], "person": codes.astype(np.int32)}
init = {"a": np.zeros(len(kept)), "b": np.zeros(4)}
cg = jm.fit(logit, init, sub, method="newton-cg", se_for=["b"], groups=codes, cov="cluster")
b_cg, b_index = np.asarray(cg.params["b"]), np.asarray(res.params["b"])
se_cg, se_index = np.asarray(cg.se["b"]), np.asarray(res.se["b"])
print(f"\nnewton-cg: {int(cg.n_iter)} iterations, {cg.message}")
print(f"max |b_cg - b_index| = {np.max(np.abs(b_cg - b_index)):.1e}, "
      f"max |se_cg / se_index - 1| = {np.max(np.abs(se_cg / se_index - 1)):.1e}")  # fmt: skip
