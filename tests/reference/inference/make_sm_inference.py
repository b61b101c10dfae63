"""statsmodels reference numbers for jaxmle's inference (tests/test_inference.py).

Run from the repository root:

    .venv/bin/python tests/reference/inference/make_sm_inference.py

Writes tests/reference/inference/sm_inference.json from the committed CSVs in
tests/reference/data (spector, mtcars, quine). Each block is kept as a string, executed verbatim and
stored in "commands". Floats are written by the json module (repr: exact round trip).
"""

import json
import os
import sys

import numpy as np
import pandas as pd
import scipy
import statsmodels
import statsmodels.api as sm
from statsmodels.base._parameter_inference import _lm_robust

OUT = os.path.join("tests", "reference", "inference", "sm_inference.json")
DATA = os.path.join("tests", "reference", "data")
if not os.path.isdir(DATA):
    sys.exit("run from the repository root")
SOURCE = (
    f"statsmodels {statsmodels.__version__} (numpy {np.__version__}, scipy {scipy.__version__})"
)
CHECKS = []


def check(label, a, b, tol):
    a, b = np.asarray(a, float), np.asarray(b, float)
    r = float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))
    msg = f"{label}: max rel diff {r:.3g}"
    print("   check", msg)
    if not r < tol:
        raise SystemExit("FAILED " + msg)
    CHECKS.append(msg)


def run_block(code, **ns):
    ns = dict(ns, np=np, pd=pd, sm=sm, _lm_robust=_lm_robust)
    exec(code, ns)
    return ns


def f(x):
    return float(np.asarray(x).squeeze())


# ---------------------------------------------------------------------------------------------
# spector Logit: GRADE ~ 1 + GPA + TUCE + PSI (jaxmle: b[0..3] in this order)
# ---------------------------------------------------------------------------------------------
print("== spector logit")
CODE_SPECTOR = """
spector = pd.read_csv("tests/reference/data/spector.csv")
y = spector["GRADE"].to_numpy(float)
X = sm.add_constant(spector[["GPA", "TUCE", "PSI"]].to_numpy(float), prepend=True)
model = sm.Logit(y, X)
res = model.fit(method="newton", tol=1e-14, maxiter=100, disp=0)
res_hc0 = model.fit(method="newton", tol=1e-14, maxiter=100, disp=0, cov_type="HC0")
R = np.array([[0.0, 1.0, -1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])  # "GPA = TUCE, PSI = 0"
wald = res.wald_test(R, use_f=False, scalar=True)
wald_hc0 = res_hc0.wald_test(R, use_f=False, scalar=True)
t_diff = res.t_test(np.array([[0.0, 1.0, -1.0, 0.0]]))      # GPA - TUCE = 0 (z test)
t_psi = res_hc0.t_test(np.array([[0.0, 0.0, 0.0, 1.0]]))    # PSI = 0, robust

# nonlinear: g(b) = (b_GPA * b_PSI, b_TUCE / b_GPA), analytic Jacobian
def g(b):
    return np.array([b[1] * b[3], b[2] / b[1]])

def dg(b):
    return np.array([[0.0, b[3], 0.0, b[1]], [0.0, -b[2] / b[1] ** 2, 1.0 / b[1], 0.0]])

nl = res._get_wald_nonlinear(g, deriv=dg)
nl_stat, nl_p = nl.wald_test(np.zeros(2))
nl_hc0 = res_hc0._get_wald_nonlinear(g, deriv=dg)
nl_hc0_stat, nl_hc0_p = nl_hc0.wald_test(np.array([0.5, 0.0]))

# score test of TUCE = PSI = 0 from the restricted GLM (const, GPA)
glm_r = sm.GLM(y, X[:, :2], family=sm.families.Binomial()).fit(tol=1e-14, maxiter=100)
score = glm_r.score_test(exog_extra=X[:, 2:], observed=True)
# robust (Boos 1992): statsmodels' _lm_robust with the UNCENTRED meat sum_i u_i u_i'
# (statsmodels' own cov_type="HC0" score test centres the scores: n * np.cov(score_obs.T))
glm_f = sm.GLM(y, X, family=sm.families.Binomial())
theta_r = np.r_[glm_r.params, 0.0, 0.0]
U = glm_f.score(theta_r)
S = glm_f.score_obs(theta_r)
H = glm_f.hessian(theta_r)
R_score = np.array([[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
score_robust = _lm_robust(U, R_score, np.linalg.inv(-H), S.T @ S)
score_opg = U @ np.linalg.solve(S.T @ S, U)
"""
ns = run_block(CODE_SPECTOR)
res = ns["res"]
check("Logit newton gradient ~ 0", np.abs(res.model.score(res.params)).max() + 1, 1.0, 1e-10)
check(
    "GLM restricted == Logit restricted llf",
    ns["glm_r"].llf,
    sm.Logit(ns["y"], ns["X"][:, :2]).fit(disp=0, tol=1e-14).llf,
    1e-12,
)
check(
    "score nonrobust == U'(-H)^-1 U",
    f(ns["score"].statistic),
    ns["U"] @ np.linalg.solve(-ns["H"], ns["U"]),
    1e-10,
)
spector = dict(
    dataset="../data/spector.csv",
    params=[float(v) for v in res.params],
    loglik=float(res.llf),
    wald=dict(statistic=f(ns["wald"].statistic), pvalue=f(ns["wald"].pvalue), df=2),
    wald_hc0=dict(statistic=f(ns["wald_hc0"].statistic), pvalue=f(ns["wald_hc0"].pvalue), df=2),
    t_diff=dict(
        effect=f(ns["t_diff"].effect),
        sd=f(ns["t_diff"].sd),
        z=f(ns["t_diff"].tvalue),
        pvalue=f(ns["t_diff"].pvalue),
    ),
    t_psi_hc0=dict(
        effect=f(ns["t_psi"].effect),
        sd=f(ns["t_psi"].sd),
        z=f(ns["t_psi"].tvalue),
        pvalue=f(ns["t_psi"].pvalue),
    ),
    nonlinear=dict(
        estimate=[float(v) for v in ns["nl"].predicted()],
        cov=[[float(v) for v in row] for row in ns["nl"].cov()],
        statistic=f(ns["nl_stat"]),
        pvalue=f(ns["nl_p"]),
        df=2,
    ),
    nonlinear_hc0_r=dict(
        r=[0.5, 0.0], statistic=f(ns["nl_hc0_stat"]), pvalue=f(ns["nl_hc0_p"]), df=2
    ),
    score=dict(
        statistic=f(ns["score"].statistic),
        pvalue=f(ns["score"].pvalue),
        df=int(ns["score"].k_constraint),
    ),
    score_robust=dict(
        statistic=f(ns["score_robust"].statistic), pvalue=f(ns["score_robust"].pvalue), df=2
    ),
    score_opg=dict(statistic=float(ns["score_opg"]), df=2),
    commands=CODE_SPECTOR,
)

# ---------------------------------------------------------------------------------------------
# mtcars OLS (normal linear model by ML): compare_lr_test, compare_lm_test
# ---------------------------------------------------------------------------------------------
print("== mtcars OLS")
CODE_MTCARS = """
mtcars = pd.read_csv("tests/reference/data/mtcars.csv")
y = mtcars["mpg"].to_numpy(float)
X = sm.add_constant(mtcars[["wt", "hp"]].to_numpy(float), prepend=True)
full = sm.OLS(y, X).fit()
restricted = sm.OLS(y, X[:, :2]).fit()          # mpg ~ 1 + wt  (b_hp = 0)
lr_stat, lr_p, lr_df = full.compare_lr_test(restricted)
# LM with the expected information of (beta, sigma) at the restricted ML estimate:
# n * s' (sigma2_r X'X / n)^-1 s, s = mean of x_i e_i (restricted residuals), sigma2_r = RSS_r / n
lm_stat, lm_p, lm_df = full.compare_lm_test(restricted, demean=False)
"""
ns = run_block(CODE_MTCARS)
e = ns["restricted"].resid
Xm = ns["X"]
s2 = np.mean(e**2)
check(
    "compare_lm_test == (X'e)'(s2 X'X)^-1 (X'e)",
    ns["lm_stat"],
    (Xm.T @ e) @ np.linalg.solve(s2 * Xm.T @ Xm, Xm.T @ e),
    1e-10,
)
check(
    "compare_lr_test == 2 dllf", ns["lr_stat"], 2 * (ns["full"].llf - ns["restricted"].llf), 1e-12
)
mtcars = dict(
    dataset="../data/mtcars.csv",
    lr=dict(statistic=float(ns["lr_stat"]), pvalue=float(ns["lr_p"]), df=int(ns["lr_df"])),
    lm_expected=dict(statistic=float(ns["lm_stat"]), pvalue=float(ns["lm_p"]), df=int(ns["lm_df"])),
    commands=CODE_MTCARS,
)

# ---------------------------------------------------------------------------------------------
# quine NB2 in its natural dispersion alpha (jaxmle: jm.positive() on alpha, optimised in log alpha)
# ---------------------------------------------------------------------------------------------
print("== quine NB2 (alpha)")
CODE_QUINE = """
quine = pd.read_csv("tests/reference/data/quine.csv")
y = quine["Days"].to_numpy(float)
X = sm.add_constant(quine[["EthN", "SexM", "AgeF1", "AgeF2", "AgeF3", "LrnSL"]].to_numpy(float),
                    prepend=True)
model = sm.NegativeBinomial(y, X, loglike_method="nb2")
res = model.fit(method="newton", tol=1e-14, maxiter=200, disp=0)
res_hc0 = model.fit(method="newton", tol=1e-14, maxiter=200, disp=0, cov_type="HC0")
params = res.params                      # b[0..6], alpha (natural scale, not log)
cov_hessian = res.cov_params()           # inv(-Hessian in (b, alpha)), analytic
cov_hc0 = res_hc0.cov_params()
"""
ns = run_block(CODE_QUINE)
with open(os.path.join("tests", "reference", "r_negbin2_quine.json")) as fh:
    R_QUINE_LOGLIK = json.load(fh)["loglik"]
m, p_ = ns["model"], ns["params"]
check(
    "NB2 Newton step ~ 0",
    1 + np.abs(np.linalg.solve(-m.hessian(p_), m.score(p_)) / p_).max(),
    1.0,
    1e-11,
)
check(
    "NB2 loglik == R fixture (log_alpha fit)",
    ns["res"].llf,
    R_QUINE_LOGLIK,
    1e-10,
)
quine = dict(
    dataset="../data/quine.csv",
    params=[float(v) for v in p_],
    loglik=float(ns["res"].llf),
    cov_hessian=[
        [float(v) for v in row] for row in 0.5 * (ns["cov_hessian"] + ns["cov_hessian"].T)
    ],
    cov_sandwich=[[float(v) for v in row] for row in 0.5 * (ns["cov_hc0"] + ns["cov_hc0"].T)],
    commands=CODE_QUINE,
)

with open(OUT, "w") as fh:
    json.dump(
        dict(
            source=SOURCE, spector_logit=spector, mtcars_ols=mtcars, quine_nb2=quine, checks=CHECKS
        ),
        fh,
        indent=2,
    )
    fh.write("\n")
print("wrote", OUT)
