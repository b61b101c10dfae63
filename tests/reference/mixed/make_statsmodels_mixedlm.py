"""statsmodels MixedLM reference for the sleepstudy random-slope model, ML (not REML).

Run from the repository root: .venv/bin/python tests/reference/mixed/make_statsmodels_mixedlm.py
Writes tests/reference/mixed/sm_mixedlm_sleepstudy.json: fixed effects, the random-effect covariance,
the residual variance and lnL, with the exact call and the statsmodels version.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import statsmodels
import statsmodels.formula.api as smf  # noqa: F401  (used by eval(CALL))

HERE = Path(__file__).parent
df = pd.read_csv(HERE.parent / "data" / "sleepstudy.csv")
CALL = (
    'smf.mixedlm("Reaction ~ Days", df, groups=df["Subject"], re_formula="~Days")'
    '.fit(reml=False, method=["lbfgs"], pgtol=1e-12, factr=10.0, maxiter=10000)'
)
m = eval(CALL)
cov_re = np.asarray(m.cov_re)
L = np.linalg.cholesky(cov_re)
out = {
    "source": f"statsmodels {statsmodels.__version__}",
    "command": CALL,
    "params": {
        "beta": [float(m.fe_params.iloc[0]), float(m.fe_params.iloc[1])],
        "sigma": float(np.sqrt(m.scale)),
        "L": [float(L[0, 0]), float(L[1, 0]), float(L[1, 1])],
    },
    "loglik": float(m.llf),
    "converged": bool(m.converged),
}
(HERE / "sm_mixedlm_sleepstudy.json").write_text(json.dumps(out, indent=2) + "\n")
print(out)
