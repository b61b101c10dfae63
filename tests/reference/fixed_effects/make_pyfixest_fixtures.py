"""Reference fixtures for fixed-effects fits: pyfixest (feglm logit, fepois) on simulated panels and
on R plm::Males, each checked against statsmodels with explicit dummies where that fits.

Run from the repository root, after make_r_males.R (which writes data/males.csv):

    .venv/bin/python tests/reference/fixed_effects/make_pyfixest_fixtures.py

Writes tests/reference/data/fe_{logit,poisson}_panel.csv (simulated, fixed seeds) and
tests/reference/fixed_effects/pf_*.json. Each model block is kept as a string, executed verbatim and
stored in the fixture's "commands".

Finite-sample factors: pyfixest's default iid covariance carries (N-1)/(N-K), K counting every
fixed-effect level; with `ssc=pf.ssc(k_adj=False)` it is the covariate block of the inverse full
information, which the script checks against statsmodels with explicit dummies (to 1e-8). CRV1 with
`ssc(k_adj=False)` is A^-1 B_c A^-1 x G/(G-1) (`G_adj`), jaxmle's cov="cluster".

pyfixest drops the rows of levels whose outcome is all 0 (its "separation" check) but not those all
1 in a logit; the fixtures are therefore fitted on the rows of the levels whose outcome varies, and
record how many levels and rows the full data lose, which jaxmle must find by itself.
"""

import json
import os
import sys
import warnings

import numpy as np
import pandas as pd
import pyfixest as pf
import statsmodels
import statsmodels.api as sm

OUT = os.path.join("tests", "reference", "fixed_effects")
DATA = os.path.join("tests", "reference", "data")
if not os.path.isdir(OUT):
    sys.exit("run from the repository root")
SOURCE = f"pyfixest {pf.__version__}, statsmodels {statsmodels.__version__}, numpy {np.__version__}"


def simulate_logit():
    rng = np.random.default_rng(20260101)
    n, g = 3000, 100
    x = rng.normal(size=(n, 3))
    firm = rng.integers(0, g, n)
    a = 1.5 * rng.normal(size=g)
    eta = x @ np.array([0.5, -0.3, 0.2]) + a[firm]
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-eta))).astype(int)
    y[firm == 7] = 0  # constant outcomes: infinite effects, dropped
    y[firm == 8] = 1
    df = pd.DataFrame({"y": y, "x0": x[:, 0], "x1": x[:, 1], "x2": x[:, 2], "firm": firm})
    return df


def simulate_poisson():
    """A gravity-style panel over two years: exporter-year and importer-year effects, trade only
    within a year, so the two sets of effects are identified up to one constant per year."""
    rng = np.random.default_rng(20260102)
    n, g1, g2 = 4000, 60, 40
    x = 0.5 * rng.normal(size=(n, 2))
    year = rng.integers(0, 2, n)
    exporter = year * (g1 // 2) + rng.integers(0, g1 // 2, n)
    importer = year * (g2 // 2) + rng.integers(0, g2 // 2, n)
    a, c = 0.5 * rng.normal(size=g1), 0.5 * rng.normal(size=g2)
    mu = np.exp(x @ np.array([0.3, -0.2]) + a[exporter] + c[importer])
    y = rng.poisson(mu)
    y[exporter == 5] = 0  # an exporter-year with no trade: dropped
    return pd.DataFrame(
        {"y": y, "x0": x[:, 0], "x1": x[:, 1], "exporter": exporter, "importer": importer,
         "year": year}
    )  # fmt: skip


def write(df, name):
    path = os.path.join(DATA, name)
    df.to_csv(path, index=False)  # repr: the shortest string that reads back exactly
    back = pd.read_csv(path, float_precision="round_trip")
    for c in df.columns:
        assert np.array_equal(back[c].to_numpy(float), df[c].to_numpy(float)), (name, c)
    return "data/" + name


def varying(df, by):
    """Rows of the levels (of every column in `by`, repeatedly) whose outcome varies; Poisson
    levels with y > 0 somewhere count as varying."""
    keep = np.ones(len(df), bool)
    while True:
        sub = df[keep]
        bad = np.zeros(len(df), bool)
        for col in by:
            s = sub.groupby(col)["y"].agg(["min", "max"])
            const = s.index[s["min"] == s["max"]]
            bad |= df[col].isin(const).to_numpy() & keep
        if not bad.any():
            return keep
        keep &= ~bad


def relmax(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def dummies_check(fit_family, df, xcols, fe, pf_cov):
    """statsmodels with explicit dummies: the covariate block of its inverse information."""
    d = pd.get_dummies(df[fe].astype(str), prefix=fe, dtype=float)
    if isinstance(fe, list):
        d = pd.concat(
            [pd.get_dummies(df[f].astype(str), prefix=f, dtype=float) for f in fe], axis=1
        )
        # one reference level of the second set per year (connected component)
        first = df.groupby("year")[fe[1]].min()
        d = d.drop(columns=[f"{fe[1]}_{v}" for v in first])
    design = pd.concat([df[xcols], d], axis=1)
    m = sm.GLM(df["y"], design, family=fit_family).fit(tol=1e-14, maxiter=200)
    cov = m.cov_params().loc[xcols, xcols].to_numpy()
    r = relmax(cov, pf_cov)
    print(f"   statsmodels dummies vs pyfixest ssc(k_adj=False): max rel diff {r:.3g}")
    assert r < 1e-8, r
    return r


def run(name, commands, env):
    print(name)
    exec(commands, env)
    return env


def dump(name, out):
    with open(os.path.join(OUT, name), "w") as fh:
        json.dump(out, fh, indent=1)
        fh.write("\n")


def main():
    warnings.simplefilter("ignore")
    logit = simulate_logit()
    poisson = simulate_poisson()
    males = pd.read_csv(os.path.join(DATA, "males.csv"), float_precision="round_trip")
    files = {
        "logit": write(logit, "fe_logit_panel.csv"),
        "poisson": write(poisson, "fe_poisson_panel.csv"),
    }

    # ---- one-way logit, simulated
    keep = varying(logit, ["firm"])
    cmd = """
fit = logit[keep].reset_index(drop=True)
iid = pf.feglm("y ~ x0 + x1 + x2 | firm", data=fit, family="logit", vcov="iid",
               ssc=pf.ssc(k_adj=False), iwls_tol=1e-14, iwls_maxiter=100)
crv = pf.feglm("y ~ x0 + x1 + x2 | firm", data=fit, family="logit", vcov={"CRV1": "firm"},
               ssc=pf.ssc(k_adj=False), iwls_tol=1e-14, iwls_maxiter=100)
default = pf.feglm("y ~ x0 + x1 + x2 | firm", data=fit, family="logit", iwls_tol=1e-14,
                   iwls_maxiter=100)
"""
    env = run("logit", cmd, {"pf": pf, "logit": logit, "keep": keep})
    check = dummies_check(
        sm.families.Binomial(), env["fit"], ["x0", "x1", "x2"], "firm", env["iid"]._vcov
    )
    dump("pf_logit_panel.json", {
        "source": SOURCE, "dataset": files["logit"], "model": "logit, y ~ x0 + x1 + x2 | firm",
        "param_names": ["x0", "x1", "x2"],
        "n_obs": int(keep.sum()), "dropped_rows": int((~keep).sum()),
        "dropped_levels": int(logit[~keep]["firm"].nunique()),
        "params": env["iid"].coef().tolist(),
        "cov_iid_no_k_adj": env["iid"]._vcov.tolist(),
        "cov_crv1_firm_no_k_adj": env["crv"]._vcov.tolist(),
        "se_default": env["default"].se().tolist(),
        "k_fe": int(env["fit"]["firm"].nunique()),
        "statsmodels_dummies_check": check,
        "commands": cmd,
    })  # fmt: skip

    # ---- two-way Poisson, simulated
    keep = varying(poisson, ["exporter", "importer"])
    cmd = """
fit = poisson[keep].reset_index(drop=True)
iid = pf.fepois("y ~ x0 + x1 | exporter + importer", data=fit, vcov="iid",
                ssc=pf.ssc(k_adj=False), iwls_tol=1e-14, iwls_maxiter=100, fixef_tol=1e-14)
crv = pf.fepois("y ~ x0 + x1 | exporter + importer", data=fit, vcov={"CRV1": "exporter"},
                ssc=pf.ssc(k_adj=False), iwls_tol=1e-14, iwls_maxiter=100, fixef_tol=1e-14)
"""
    env = run("poisson", cmd, {"pf": pf, "poisson": poisson, "keep": keep})
    check = dummies_check(
        sm.families.Poisson(), env["fit"], ["x0", "x1"], ["exporter", "importer"], env["iid"]._vcov
    )
    dump("pf_poisson_panel.json", {
        "source": SOURCE, "dataset": files["poisson"],
        "model": "Poisson, y ~ x0 + x1 | exporter + importer (exporter-year, importer-year)",
        "n_components": int(poisson[keep]["year"].nunique()),
        "param_names": ["x0", "x1"],
        "n_obs": int(keep.sum()), "dropped_rows": int((~keep).sum()),
        "params": env["iid"].coef().tolist(),
        "cov_iid_no_k_adj": env["iid"]._vcov.tolist(),
        "cov_crv1_exporter_no_k_adj": env["crv"]._vcov.tolist(),
        "statsmodels_dummies_check": check,
        "commands": cmd,
    })  # fmt: skip

    # ---- plm::Males, union membership with person effects
    keep = varying(males.rename(columns={"union": "y"}), ["nr"])
    cmd = """
fit = males[keep].reset_index(drop=True)
iid = pf.feglm("union ~ exper + married + wage + health | nr", data=fit, family="logit",
               vcov="iid", ssc=pf.ssc(k_adj=False), iwls_tol=1e-14, iwls_maxiter=100)
crv = pf.feglm("union ~ exper + married + wage + health | nr", data=fit, family="logit",
               vcov={"CRV1": "nr"}, ssc=pf.ssc(k_adj=False), iwls_tol=1e-14, iwls_maxiter=100)
"""
    env = run("males", cmd, {"pf": pf, "males": males, "keep": keep})
    with open(os.path.join(OUT, "r_males_logit.json")) as fh:
        r = json.load(fh)
    rel = relmax(env["iid"].coef(), r["params"]), relmax(env["iid"]._vcov, r["cov_hessian"])
    print(f"   pyfixest vs R glm with dummies: params {rel[0]:.3g}, cov {rel[1]:.3g}")
    assert max(rel) < 1e-7, rel
    dump("pf_males_logit.json", {
        "source": SOURCE, "dataset": "data/males.csv",
        "model": "logit, union ~ exper + married + wage + health | nr (switchers)",
        "param_names": ["exper", "married", "wage", "health"],
        "n_obs": int(keep.sum()), "dropped_rows": int((~keep).sum()),
        "params": env["iid"].coef().tolist(),
        "cov_iid_no_k_adj": env["iid"]._vcov.tolist(),
        "cov_crv1_nr_no_k_adj": env["crv"]._vcov.tolist(),
        "agreement_with_r_glm_dummies": {"params": rel[0], "cov": rel[1]},
        "commands": cmd,
    })  # fmt: skip


if __name__ == "__main__":
    main()
