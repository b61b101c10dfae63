"""Generate statsmodels reference fixtures for jaxmle.

Run from the repository root:

    .venv/bin/python tests/reference/make_statsmodels_fixtures.py

Writes tests/reference/data/{spector,randhie}.csv (exported from the datasets
shipped inside statsmodels) and tests/reference/sm_*.json.  Each model block is
kept as a string, executed verbatim, and stored in the fixture's "commands".
Floats are written by the json module (repr: shortest exact round trip).
"""

import json
import os
import sys

import numpy as np
import pandas as pd
import scipy
import statsmodels
import statsmodels.api as sm
from statsmodels.tools.numdiff import approx_fprime, approx_hess

OUT = os.path.join("tests", "reference")
DATA = os.path.join(OUT, "data")
if not os.path.isdir(OUT):
    sys.exit("run from the repository root")
os.makedirs(DATA, exist_ok=True)

SOURCE = (
    f"statsmodels {statsmodels.__version__} (numpy {np.__version__}, scipy {scipy.__version__})"
)


def write_data(df, name):
    df = df.copy()
    for c in df.columns:  # integer-valued float columns are written as integers
        v = df[c].to_numpy(float)
        if np.all(v == np.round(v)):
            df[c] = v.astype(np.int64)
    path = os.path.join(DATA, name)
    df.to_csv(path, index=False)
    back = pd.read_csv(path)
    assert list(back.columns) == list(df.columns)
    for c in df.columns:
        assert np.array_equal(back[c].to_numpy(float), df[c].to_numpy(float)), (name, c)
    return back, "data/" + name


def relmax(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def check(label, a, b, tol):
    r = relmax(a, b)
    msg = f"{label}: max rel diff {r:.3g}"
    print("   check", msg)
    if not r < tol:
        raise SystemExit("FAILED " + msg)
    return msg


def newton_rel(model, p):
    g = model.score(p)
    step = np.linalg.solve(-model.hessian(p), g)
    r = float(np.max(np.abs(step) / np.maximum(np.abs(p), 1e-3)))
    print(f"   gradient max {np.max(np.abs(g)):.3g}; Newton step rel {r:.3g}")
    assert r < 1e-11, r
    return f"relative Newton step at stored estimate {r:.3g}"


def sym(m):
    m = np.asarray(m, float)
    return (m + m.T) / 2


def write_fixture(fname, fx):
    k = len(fx["param_names"])
    assert len(fx["params"]) == k
    cov = {}
    for key, m in fx["cov"].items():
        m = sym(m)
        assert m.shape == (k, k)
        assert np.all(np.linalg.eigvalsh(m) > 0), key
        cov[key] = [[float(v) for v in row] for row in m]
    fx = dict(fx)
    fx["cov"] = cov
    fx["params"] = [float(v) for v in fx["params"]]
    fx["loglik"] = float(fx["loglik"])
    fx["n_obs"] = int(fx["n_obs"])
    path = os.path.join(OUT, fname)
    with open(path, "w") as f:
        json.dump(fx, f, indent=2)
        f.write("\n")
    print("wrote", path)


def run_block(code, **ns):
    ns = dict(ns, np=np, pd=pd, sm=sm)
    exec(code, ns)
    return ns


# ---------------------------------------------------------------------------
# spector: Logit and Probit, GRADE ~ 1 + GPA + TUCE + PSI
# ---------------------------------------------------------------------------
spector, spector_path = write_data(
    sm.datasets.spector.load_pandas().data[["GRADE", "GPA", "TUCE", "PSI"]], "spector.csv"
)

CODE_BIN = """
y = spector["GRADE"]
X = sm.add_constant(spector[["GPA", "TUCE", "PSI"]], prepend=True)
model = Model(y, X)
res = model.fit(method="newton", tol=1e-14, maxiter=100, disp=0)
res_hc0 = model.fit(method="newton", tol=1e-14, maxiter=100, disp=0, cov_type="HC0")
params = res.params.to_numpy()
cov_hessian = res.cov_params().to_numpy()          # inv(-model.hessian(params)), analytic Hessian
cov_hc0 = res_hc0.cov_params().to_numpy()          # HC0 sandwich, no small-sample correction
S = model.score_obs(params)
cov_opg = np.linalg.inv(S.T @ S)
loglik = res.llf
"""

for name, Model, desc in [
    (
        "logit",
        sm.Logit,
        "Bernoulli logit: P(GRADE=1) = 1/(1+exp(-eta)), eta = b0 + b_GPA*GPA + b_TUCE*TUCE + b_PSI*PSI; "
        "loglik = sum(GRADE*eta - log(1+exp(eta))).",
    ),
    (
        "probit",
        sm.Probit,
        "Bernoulli probit: P(GRADE=1) = Phi(eta), eta = b0 + b_GPA*GPA + b_TUCE*TUCE + b_PSI*PSI; "
        "loglik = sum(GRADE*log Phi(eta) + (1-GRADE)*log(1-Phi(eta))). hessian = inverse OBSERVED information "
        "(statsmodels Probit analytic Hessian).",
    ),
]:
    print(f"== spector {name}")
    code = f"Model = sm.{Model.__name__}\n" + CODE_BIN
    ns = run_block(code, spector=spector)
    model, params, S = ns["model"], ns["params"], ns["S"]
    Hinv = np.linalg.inv(-model.hessian(params))
    checks = [
        newton_rel(model, params),
        check("HC0 params == nonrobust params", ns["res_hc0"].params, params, 1e-14),
        check(
            "hessian vs numerical Hessian",
            model.hessian(params),
            approx_hess(params, model.loglike),
            1e-6,
        ),
        check(
            "score_obs vs numerical",
            S,
            approx_fprime(params, model.loglikeobs, centered=True),
            1e-6,
        ),
        check("HC0 vs manual A^-1 B A^-1", ns["cov_hc0"], Hinv @ S.T @ S @ Hinv, 1e-12),
    ]
    write_fixture(
        f"sm_{name}_spector.json",
        dict(
            source=SOURCE + f"; {Model.__name__}; data statsmodels.datasets.spector",
            dataset=spector_path,
            response="GRADE",
            n_obs=ns["res"].nobs,
            model=name,
            description=desc,
            param_names=list(ns["res"].params.index),
            params=params,
            loglik=ns["loglik"],
            cov=dict(hessian=ns["cov_hessian"], sandwich=ns["cov_hc0"], opg=ns["cov_opg"]),
            cluster_var=None,
            commands=code + "\n# checks:\n# " + "\n# ".join(checks),
        ),
    )

# ---------------------------------------------------------------------------
# randhie: Poisson and NB2, mdvis ~ 1 + lncoins + idp + lpi + fmde + physlm
#                                   + disea + hlthg + hlthf + hlthp
# ---------------------------------------------------------------------------
RH_COLS = ["mdvis", "lncoins", "idp", "lpi", "fmde", "physlm", "disea", "hlthg", "hlthf", "hlthp"]
randhie, randhie_path = write_data(sm.datasets.randhie.load_pandas().data[RH_COLS], "randhie.csv")
RH_X = (
    "b0 + b_lncoins*lncoins + b_idp*idp + b_lpi*lpi + b_fmde*fmde + b_physlm*physlm + "
    "b_disea*disea + b_hlthg*hlthg + b_hlthf*hlthf + b_hlthp*hlthp"
)

print("== randhie poisson")
CODE_POIS = """
y = randhie["mdvis"]
X = sm.add_constant(randhie.drop(columns="mdvis"), prepend=True)
model = sm.Poisson(y, X)
res = model.fit(method="newton", tol=1e-14, maxiter=100, disp=0)
res_hc0 = model.fit(method="newton", tol=1e-14, maxiter=100, disp=0, cov_type="HC0")
params = res.params.to_numpy()
cov_hessian = res.cov_params().to_numpy()          # inv(-hessian); canonical link: observed = expected
cov_hc0 = res_hc0.cov_params().to_numpy()          # HC0 sandwich, no small-sample correction
S = model.score_obs(params)
cov_opg = np.linalg.inv(S.T @ S)
loglik = res.llf
"""
ns = run_block(CODE_POIS, randhie=randhie)
model, params, S = ns["model"], ns["params"], ns["S"]
Hinv = np.linalg.inv(-model.hessian(params))
checks = [
    newton_rel(model, params),
    check(
        "hessian vs numerical Hessian",
        model.hessian(params),
        approx_hess(params, model.loglike),
        1e-6,
    ),
    check("HC0 vs manual A^-1 B A^-1", ns["cov_hc0"], Hinv @ S.T @ S @ Hinv, 1e-12),
    check(
        "params vs GLM Poisson",
        params,
        sm.GLM(model.endog, model.exog, family=sm.families.Poisson()).fit(tol=1e-14).params,
        1e-8,
    ),
]
write_fixture(
    "sm_poisson_randhie.json",
    dict(
        source=SOURCE + "; Poisson; data statsmodels.datasets.randhie",
        dataset=randhie_path,
        response="mdvis",
        n_obs=ns["res"].nobs,
        model="poisson",
        description="Poisson log link: mdvis ~ Poisson(mu), log mu = "
        + RH_X
        + "; loglik = sum(mdvis*log mu - mu - lgamma(mdvis+1)).",
        param_names=list(ns["res"].params.index),
        params=params,
        loglik=ns["loglik"],
        cov=dict(hessian=ns["cov_hessian"], sandwich=ns["cov_hc0"], opg=ns["cov_opg"]),
        cluster_var=None,
        commands=CODE_POIS + "\n# checks:\n# " + "\n# ".join(checks),
    ),
)

print("== randhie NB2")
CODE_NB = """
y = randhie["mdvis"]
X = sm.add_constant(randhie.drop(columns="mdvis"), prepend=True)
model = sm.NegativeBinomial(y, X, loglike_method="nb2")
# (statsmodels parametrises the dispersion by alpha itself; last parameter "alpha")
res0 = model.fit(method="bfgs", maxiter=2000, disp=0)          # robust start
res = model.fit(start_params=res0.params, method="newton", tol=1e-14, maxiter=100, disp=0)
res_hc0 = model.fit(start_params=res.params, method="newton", tol=1e-14, maxiter=100, disp=0,
                    cov_type="HC0")
params = res.params.to_numpy()
cov_hessian = res.cov_params().to_numpy()          # inv(-model.hessian(params)) in (beta, alpha)
cov_hc0 = res_hc0.cov_params().to_numpy()          # HC0 sandwich, no small-sample correction
S = model.score_obs(params)
cov_opg = np.linalg.inv(S.T @ S)
loglik = res.llf
"""
ns = run_block(CODE_NB, randhie=randhie)
model, params, S = ns["model"], ns["params"], ns["S"]
Hinv = np.linalg.inv(-model.hessian(params))
from scipy.stats import nbinom

mu = np.exp(model.exog @ params[:-1])
alpha = params[-1]
checks = [
    newton_rel(model, params),
    check("HC0-fit params == params", ns["res_hc0"].params, params, 1e-11),
    check(
        "hessian vs numerical Hessian",
        model.hessian(params),
        approx_hess(params, model.loglike),
        1e-6,
    ),
    check(
        "score_obs vs numerical", S, approx_fprime(params, model.loglikeobs, centered=True), 1e-6
    ),
    check("HC0 vs manual A^-1 B A^-1", ns["cov_hc0"], Hinv @ S.T @ S @ Hinv, 1e-10),
    check(
        "loglik vs scipy nbinom(n=1/alpha, p=1/(1+alpha*mu))",
        ns["loglik"],
        nbinom.logpmf(model.endog, 1 / alpha, 1 / (1 + alpha * mu)).sum(),
        1e-12,
    ),
]
write_fixture(
    "sm_negbin2_randhie.json",
    dict(
        source=SOURCE
        + "; NegativeBinomial(loglike_method='nb2'); data statsmodels.datasets.randhie",
        dataset=randhie_path,
        response="mdvis",
        n_obs=ns["res"].nobs,
        model="negbin2",
        description="NB2: mdvis ~ NegBin(mean mu, Var = mu + alpha*mu^2), log mu = "
        + RH_X
        + "; last parameter is alpha ITSELF (not log alpha), theta = 1/alpha; "
        "loglik = sum(lgamma(y+1/alpha) - lgamma(1/alpha) - lgamma(y+1) + "
        "(1/alpha)*log(1/(1+alpha*mu)) + y*log(alpha*mu/(1+alpha*mu))). "
        "Covariances are w.r.t. (beta, alpha).",
        param_names=list(ns["res"].params.index),
        params=params,
        loglik=ns["loglik"],
        cov=dict(hessian=ns["cov_hessian"], sandwich=ns["cov_hc0"], opg=ns["cov_opg"]),
        cluster_var=None,
        commands=CODE_NB + "\n# checks:\n# " + "\n# ".join(checks),
    ),
)

print("done")
