"""statsmodels GEE reference fixtures for jaxmle.gee (tests/test_gee.py).

Run from the repository root:   python tests/reference/gee/make_statsmodels_fixtures.py
Writes tests/reference/gee/sm_*.json from the CSVs that make_geepack_fixtures.R wrote.

statsmodels differs from geepack in its defaults: the scale divides by N - p (ddof_scale = p) and is
fixed at 1 for binomial and Poisson in the naive covariance, the exchangeable alpha divides by
(pairs - p), AR(1) uses lag-1 pairs, unstructured normalises by each wave's own variance. With
ddof_scale=0 its exchangeable and independence fits have geepack's fixed point, so the coefficients,
robust and bias-reduced ("bias_reduced", Mancl-DeRouen) covariances are comparable; its naive
covariance is comparable where it estimates the scale (gaussian). Each fixture stores the exact call.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import statsmodels
import statsmodels.api as sm
import statsmodels.formula.api as smf

HERE = Path(__file__).parent
DATA = HERE.parent / "data"

FITS = [
    (
        "ohio_exchangeable",
        "gee_ohio.csv",
        "resp ~ age + smoke",
        "id",
        "age",
        "Binomial",
        "Exchangeable",
    ),
    (
        "ohio_independence",
        "gee_ohio.csv",
        "resp ~ age + smoke",
        "id",
        "age",
        "Binomial",
        "Independence",
    ),
    (
        "epil_exchangeable",
        "gee_epil.csv",
        "y ~ lbase * C(trt) + lage + V4",
        "subject",
        "period",
        "Poisson",
        "Exchangeable",
    ),
    (
        "dietox_exchangeable",
        "gee_dietox.csv",
        "Weight ~ Time + C(Cu)",
        "Pig",
        "Time",
        "Gaussian",
        "Exchangeable",
    ),
    (
        "ohio_gaps_exchangeable",
        "gee_ohio_gaps.csv",
        "resp ~ age + smoke",
        "id",
        "age",
        "Binomial",
        "Exchangeable",
    ),
]

for name, csv, formula, group, time, family, cov_struct in FITS:
    df = pd.read_csv(DATA / csv).sort_values([group, time], kind="stable").reset_index(drop=True)
    call = (
        f"smf.gee({formula!r}, {group!r}, df, time=df[{time!r}], family=sm.families.{family}(), "
        f"cov_struct=sm.cov_struct.{cov_struct}()).fit(ddof_scale=0, maxiter=200, params_niter=1, "
        f"first_dep_update=0, ctol=1e-12, cov_type=...)"
    )
    out = {
        "name": name,
        "dataset": f"../data/{csv}",
        "formula": formula,
        "groups": group,
        "time": time,
        "family": family.lower(),
        "corstr": cov_struct.lower(),
        "call": call,
        "versions": {"statsmodels": statsmodels.__version__, "numpy": np.__version__},
    }
    for cov_type in ("robust", "naive", "bias_reduced"):
        model = smf.gee(
            formula,
            group,
            df,
            family=getattr(sm.families, family)(),
            cov_struct=getattr(sm.cov_struct, cov_struct)(),
        )
        res = model.fit(ddof_scale=0, maxiter=200, ctol=1e-12, cov_type=cov_type)
        out["coef_names"] = list(res.params.index)
        out["params"] = [float(v) for v in res.params]
        out[f"cov_{cov_type}"] = np.asarray(res.cov_params()).tolist()
        out["dep_params"] = (
            float(np.atleast_1d(model.cov_struct.dep_params)[0])
            if cov_struct != "Independence"
            else 0.0
        )
        out["scale"] = float(res.scale)
        out["converged"] = bool(res.converged) if hasattr(res, "converged") else None
    (HERE / f"sm_{name}.json").write_text(json.dumps(out, indent=1))
    print(name, out["params"][:3], out["dep_params"])
