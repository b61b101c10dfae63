"""Reference marginal effects for jm.margins: statsmodels `get_margeff` and closed forms.

Run from the repository root:

    .venv/bin/python tests/reference/margins/make_sm_margins.py

Writes tests/reference/margins/sm_margins.json. Data: tests/reference/data/{spector,randhie,
birthwt_race}.csv (already committed by the other fixture scripts). Each block is kept as a string,
executed verbatim and stored in "commands". Floats are written by the json module (repr).

- spector logit and randhie Poisson: statsmodels' average marginal effects and effects at the means,
  binary columns as discrete changes (`dummy=True`), with its delta-method standard errors.
- birthwt logit with the 3-level factor race: the average contrasts of each level against the first
  and the average slope of age in closed form, mu = F(eta), F the logistic cdf,
      AME_l = mean_i [F(x_i(l)'b) - F(x_i(ref)'b)],  J_l = mean_i [f(x_i(l)'b) x_i(l) - f(x_i(ref)'b) x_i(ref)]
      AME_age = mean_i f(x_i'b) b_age,               J_age = mean_i [f(x_i'b) e_age + b_age f'(x_i'b) x_i]
  with se = sqrt(J V J'), V = statsmodels' inverse Hessian (Stata `margins r.race` / `dydx(age)`).
"""

import json
import os
import sys

import numpy as np
import pandas as pd
import scipy
import statsmodels
import statsmodels.api as sm
import statsmodels.formula.api as smf

OUT = os.path.join("tests", "reference", "margins")
DATA = os.path.join("tests", "reference", "data")
if not os.path.isdir(OUT):
    sys.exit("run from the repository root")
SOURCE = (
    f"statsmodels {statsmodels.__version__} (numpy {np.__version__}, scipy {scipy.__version__})"
)

fixtures = {}
LIBS = {"np": np, "pd": pd, "sm": sm, "smf": smf, "os": os, "DATA": DATA}


def run(block: str) -> dict:
    """Execute a command block verbatim; its variables."""
    ns = dict(LIBS)
    exec(block, ns)
    return ns


SPECTOR = """
df = pd.read_csv(os.path.join(DATA, "spector.csv"))
X = sm.add_constant(df[["GPA", "TUCE", "PSI"]])
res = sm.Logit(df["GRADE"], X).fit(disp=0, method="newton", tol=1e-14, maxiter=100)
overall = res.get_margeff(at="overall", dummy=True)
means = res.get_margeff(at="mean", dummy=True)
"""
v = run(SPECTOR)
res, overall, means = v["res"], v["overall"], v["means"]
fixtures["spector_logit"] = {
    "dataset": "data/spector.csv",
    "formula": "GRADE ~ GPA + TUCE + PSI",
    "family": "binomial",
    "names": ["GPA", "TUCE", "PSI"],
    "params": list(res.params),
    "overall": {"estimate": list(overall.margeff), "se": list(overall.margeff_se)},
    "mean": {"estimate": list(means.margeff), "se": list(means.margeff_se)},
    "commands": SPECTOR,
}

RANDHIE = """
df = pd.read_csv(os.path.join(DATA, "randhie.csv"))
cols = ["lncoins", "idp", "lpi", "fmde", "physlm", "disea", "hlthg", "hlthf", "hlthp"]
X = sm.add_constant(df[cols])
res = sm.Poisson(df["mdvis"], X).fit(disp=0, method="newton", tol=1e-14, maxiter=100)
overall = res.get_margeff(at="overall", dummy=True)
means = res.get_margeff(at="mean", dummy=True)
"""
v = run(RANDHIE)
res, overall, means, cols, df = v["res"], v["overall"], v["means"], v["cols"], v["df"]
fixtures["randhie_poisson"] = {
    "dataset": "data/randhie.csv",
    "formula": "mdvis ~ " + " + ".join(cols),
    "family": "poisson",
    "names": cols,
    "params": list(res.params),
    "binary": [c for c in cols if set(np.unique(df[c])) <= {0, 1}],
    "overall": {"estimate": list(overall.margeff), "se": list(overall.margeff_se)},
    "mean": {"estimate": list(means.margeff), "se": list(means.margeff_se)},
    "commands": RANDHIE,
}

RACE = """
df = pd.read_csv(os.path.join(DATA, "birthwt_race.csv"))
res = smf.logit("low ~ age + lwt + C(race) + smoke", df).fit(disp=0, method="newton", tol=1e-14)
b, V, names = res.params.to_numpy(), res.cov_params().to_numpy(), list(res.params.index)
X = res.model.exog
F = lambda e: 1 / (1 + np.exp(-e))
f = lambda e: F(e) * (1 - F(e))
df1 = lambda e: f(e) * (1 - 2 * F(e))
levels = sorted(df["race"].unique())
dummies = [names.index(f"C(race)[T.{lev}]") for lev in levels[1:]]
ref = X.copy(); ref[:, dummies] = 0
contrasts = []
for j in dummies:
    at = ref.copy(); at[:, j] = 1
    est = np.mean(F(at @ b) - F(ref @ b))
    J = np.mean(f(at @ b)[:, None] * at - f(ref @ b)[:, None] * ref, axis=0)
    contrasts.append((est, float(np.sqrt(J @ V @ J))))
a = names.index("age")
eta = X @ b
J_age = np.mean(f(eta)[:, None] * np.eye(len(b))[a] + b[a] * df1(eta)[:, None] * X, axis=0)
age = (np.mean(f(eta) * b[a]), float(np.sqrt(J_age @ V @ J_age)))
"""
v = run(RACE)
levels, contrasts, age = v["levels"], v["contrasts"], v["age"]
fixtures["birthwt_race_logit"] = {
    "dataset": "data/birthwt_race.csv",
    "formula": "low ~ age + lwt + C(race) + smoke",
    "family": "binomial",
    "levels": levels,
    "race": {"estimate": [c[0] for c in contrasts], "se": [c[1] for c in contrasts]},
    "age": {"estimate": age[0], "se": age[1]},
    "commands": RACE,
}

for fx in fixtures.values():
    fx["source"] = SOURCE
with open(os.path.join(OUT, "sm_margins.json"), "w") as fh:
    json.dump(fixtures, fh, indent=1)
print("wrote", os.path.join(OUT, "sm_margins.json"))
