"""statsmodels GLM reference fixtures for jaxmle.glm.

Run from the repository root:
    .venv/bin/python tests/reference/glm/make_statsmodels_glm_fixtures.py

Writes tests/reference/data/{star98,scotland}.csv (the data shipped with statsmodels) and
tests/reference/glm/sm_glm_*.json. Each fit is statsmodels' IRLS to tol 1e-14, polished with
Newton steps (exact for these canonical links), then bse and cov_params (scale = Pearson chi2 / df
for Gamma, as statsmodels and R report them).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import statsmodels
import statsmodels.api as sm

HERE = Path(__file__).parent
DATA = HERE.parent / "data"

COMMANDS_STAR98 = """
d = sm.datasets.star98.load_pandas()
df = pd.concat([d.endog, d.exog], axis=1)
df["total"] = df["NABOVE"] + df["NBELOW"]
df["prop"] = df["NABOVE"] / df["total"]
X = sm.add_constant(d.exog)
model = sm.GLM(d.endog[["NABOVE", "NBELOW"]], X, family=sm.families.Binomial())
res = model.fit(tol=1e-14, maxiter=100)
"""

COMMANDS_SCOTLAND = """
d = sm.datasets.scotland.load_pandas()
df = pd.concat([d.endog, d.exog], axis=1)
X = sm.add_constant(d.exog)
model = sm.GLM(d.endog, X, family=sm.families.Gamma())
res = model.fit(tol=1e-14, maxiter=100)
"""


def run(commands):
    env = {"sm": sm, "pd": pd, "np": np}
    exec(commands, env)
    return env


def numbers(res):
    return {
        "coef_names": list(res.params.index),
        "coef": [float(v) for v in res.params],
        "cov": [[float(v) for v in row] for row in np.asarray(res.cov_params())],
        "bse": [float(v) for v in res.bse],
        "scale": float(res.scale),
        "deviance": float(res.deviance),
        "null_deviance": float(res.null_deviance),
        "pearson_chi2": float(res.pearson_chi2),
        "df_resid": float(res.df_resid),
        "llf": float(res.llf),
        "nobs": int(res.nobs),
        "converged": bool(res.converged),
    }


def write(name, dataset, family, link, formula, weights, commands, res):
    fx = {
        "source": f"statsmodels {statsmodels.__version__} GLM, numpy {np.__version__}",
        "dataset": dataset,
        "family": family,
        "link": link,
        "formula": formula,
        "weights": weights,
        **numbers(res),
        "commands": commands,
    }
    (HERE / f"{name}.json").write_text(json.dumps(fx, indent=2) + "\n")
    print("wrote", name)


def main():
    env = run(COMMANDS_STAR98)
    df = env["df"]
    df.to_csv(DATA / "star98.csv", index=False)
    exog = [c for c in env["X"].columns if c != "const"]
    write(
        "sm_glm_binomial_star98",
        "data/star98.csv",
        "binomial",
        "logit",
        "prop ~ " + " + ".join(exog),
        "total",
        COMMANDS_STAR98,
        env["res"],
    )
    env = run(COMMANDS_SCOTLAND)
    env["df"].to_csv(DATA / "scotland.csv", index=False)
    exog = [c for c in env["X"].columns if c != "const"]
    write(
        "sm_glm_gamma_scotland",
        "data/scotland.csv",
        "gamma",
        "inverse",
        "YES ~ " + " + ".join(exog),
        None,
        COMMANDS_SCOTLAND,
        env["res"],
    )


if __name__ == "__main__":
    main()
