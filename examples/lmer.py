"""Linear mixed models from an lme4 formula, as R's lmer: reaction times over days of sleep
deprivation (lme4::sleepstudy) with a random intercept and slope per subject, by REML and by ML.

Run: python examples/lmer.py
"""

from pathlib import Path

import pandas as pd

import jaxmle as jm

DATA = Path(__file__).resolve().parent.parent / "tests" / "reference" / "data"
sleep = pd.read_csv(DATA / "lmer_sleepstudy.csv")

# REML (lmer's default): R lmer(Reaction ~ Days + (Days | Subject), sleepstudy)
m = jm.lmer("Reaction ~ Days + (Days | Subject)", sleep)
print(m.summary())
print(m.varcorr())  # R as.data.frame(VarCorr(m))
print(m.ranef(condvar=True)["Subject"].head())  # R ranef(m, condVar = TRUE)

# ML: the same compiled program (REML and ML differ by an array, not a static option)
ml = jm.lmer("Reaction ~ Days + (Days | Subject)", sleep, reml=False)
print(
    f"ML: lnL = {float(ml.loglik):.4f}, AIC = {float(ml.aic):.3f}, Days = {float(ml.params['Days']):.4f}"
)
