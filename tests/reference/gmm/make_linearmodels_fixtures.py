"""linearmodels IVGMM reference fixtures for jaxmle.gmm (tests/test_gmm.py), and the Mroz data.

Run from the repository root:   python tests/reference/gmm/make_linearmodels_fixtures.py
Writes tests/reference/data/mroz.csv (linearmodels.datasets.mroz, Wooldridge's MROZ: 753 women, 428
working) and tests/reference/gmm/lm_*.json.

The wage equation: lwage = b0 + b1 exper + b2 expersq + b3 educ + e, educ endogenous, instruments
motheduc, fatheduc, huseduc (m = 6 moments z_i e_i, k = 4, J on 2 df). linearmodels starts from 2SLS,
W_0 = (Z'Z/n)^-1, then W = S(theta)^-1 with S = sum z z' e^2 / n (uncentred, weight_type="robust"),
or the cluster sums (weight_type="clustered"); its "robust" covariance is the full sandwich
(G'WG)^-1 G'W S W G (G'WG)^-1 / n with S at the final estimate and the W of the last step.
"""

import json
from pathlib import Path

import linearmodels
import numpy as np
import pandas as pd
from linearmodels.datasets import mroz
from linearmodels.iv import IVGMM

HERE = Path(__file__).parent
DATA = HERE.parent / "data"

df = mroz.load()
df.to_csv(DATA / "mroz.csv", index=False)
work = df.dropna(subset=["lwage"]).reset_index(drop=True)
work["const"] = 1.0
exog, endog = work[["const", "exper", "expersq"]], work[["educ"]]
instr = work[["motheduc", "fatheduc", "huseduc"]]
z = np.column_stack([exog, instr])
w_2sls = np.linalg.inv(z.T @ z / len(work))

FITS = {
    "two_step": dict(fit={"iter_limit": 2}, model={}),
    "iterated": dict(fit={"iter_limit": 10_000, "tol": 1e-16}, model={}),
    "two_step_center": dict(fit={"iter_limit": 2}, model={"center": True}),
    "two_step_clustered": dict(
        fit={"iter_limit": 2, "cov_type": "clustered", "clusters": work["age"]},
        model={"weight_type": "clustered", "clusters": work["age"]},
    ),
}
for name, opts in FITS.items():
    model = IVGMM(work["lwage"], exog, endog, instr, **opts["model"])
    res = model.fit(**opts["fit"])
    out = {
        "name": name,
        "dataset": "../data/mroz.csv",
        "rows": "lwage not missing (428)",
        "equation": "lwage ~ 1 + exper + expersq + [educ ~ motheduc + fatheduc + huseduc]",
        "moments": "z_i (lwage_i - x_i'b), z = (1, exper, expersq, motheduc, fatheduc, huseduc)",
        "call": f"IVGMM(lwage, exog, endog, instr, **{opts['model']!r}).fit(**{ {k: v for k, v in opts['fit'].items() if k != 'clusters'}!r})"
        + (" (clusters = age)" if "clusters" in opts["fit"] else ""),
        "param_names": list(res.params.index),
        "params": [float(v) for v in res.params],
        "cov": np.asarray(res.cov).tolist(),
        "j_stat": float(res.j_stat.stat),
        "j_df": int(res.j_stat.df),
        "weight_matrix_first": w_2sls.tolist(),
        "iterations": int(res.iterations),
        "versions": {
            "linearmodels": linearmodels.__version__,
            "numpy": np.__version__,
            "pandas": pd.__version__,
        },
    }
    (HERE / f"lm_{name}.json").write_text(json.dumps(out, indent=1))
    print(name, out["params"], out["j_stat"], out["iterations"])
