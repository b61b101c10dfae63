"""statsmodels MixedLM reference fixtures for jaxmle.lmer (sleepstudy, correlated random slope).

Run from the repository root:
    python tests/reference/mixed/make_lmer_statsmodels_fixtures.py

Writes tests/reference/mixed/lmer_sm_sleepstudy_{reml,ml}.json. The calls are stored verbatim in
"commands". MixedLM is fitted with its default optimisers, then polished from its own estimate by
BFGS at gtol 1e-6 (statsmodels' `fit(start_params=..., method="bfgs", gtol=...)`), so the reference is
its optimum, not where a default tolerance left it.
"""

import json
from pathlib import Path

import pandas as pd
import statsmodels
import statsmodels.formula.api as smf

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = """\
md = smf.mixedlm("Reaction ~ Days", df, groups=df["Subject"], re_formula="~Days")
m0 = md.fit(reml={reml})
m = md.fit(reml={reml}, start_params=m0.params, method="bfgs", gtol=1e-6, maxiter=2000)
"""


def main():
    df = pd.read_csv(ROOT / "data" / "lmer_sleepstudy.csv")
    for reml in (True, False):
        env = {"smf": smf, "df": df}
        exec(COMMANDS.format(reml=reml), env)
        m = env["m"]
        out = {
            "name": f"lmer_sm_sleepstudy_{'reml' if reml else 'ml'}",
            "dataset": "data/lmer_sleepstudy.csv",
            "formula": "Reaction ~ Days + (Days | Subject)",
            "reml": reml,
            "commands": COMMANDS.format(reml=reml),
            "versions": {"statsmodels": statsmodels.__version__, "pandas": pd.__version__},
            "converged": bool(m.converged),
            "fe_names": list(m.fe_params.index),
            "fe_params": [float(v) for v in m.fe_params],
            "bse_fe": [float(v) for v in m.bse_fe],
            "cov_re": m.cov_re.to_numpy().tolist(),
            "scale": float(m.scale),
            "llf": float(m.llf),
        }
        path = ROOT / "mixed" / f"{out['name']}.json"
        path.write_text(json.dumps(out, indent=1) + "\n")
        print(path.name, out["llf"], out["fe_params"])


if __name__ == "__main__":
    main()
