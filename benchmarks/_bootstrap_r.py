"""The bootstrap benchmark's shared pieces: the logit data (N = 10,000, p = 10), jaxmle's bootstrap,
and R `boot` with `glm` (or `glm.fit`) run by Rscript on the same data, timed inside R.

R's statistic refits the model on `d[i, ]` as R users write it:

    boot(d, function(d, i) coef(glm(y ~ ., family = binomial, data = d[i, ])), R = 2000)

`glm.fit` on the design matrix (no model frame) is the fastest plain-R refit, shown beside it.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time

import _models as M
import jax
import numpy as np

N, P, REPS = 10_000, 10, 2000
SEED = 20261127

R_CODE = r"""
suppressPackageStartupMessages(library(boot))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1]); R <- as.integer(args[2]); how <- args[3]
X <- cbind(1, as.matrix(d[, -1])); y <- d$y
stat <- if (how == "glm") {
  function(d, i) coef(glm(y ~ ., family = binomial, data = d[i, ]))
} else {
  function(d, i) glm.fit(X[i, ], y[i], family = binomial())$coefficients
}
set.seed(1)
tm <- system.time(b <- boot(d, stat, R = R))
elapsed <- tm[["elapsed"]]; cpu <- tm[["user.self"]] + tm[["sys.self"]]
se <- apply(b$t, 2, sd)
cat(sprintf('{"elapsed": %.6f, "cpu": %.6f, "se": [%s], "boot": "%s", "R": "%s"}\n', elapsed, cpu,
            paste(sprintf("%.10g", se), collapse = ", "), packageVersion("boot"),
            paste(R.version$major, R.version$minor, sep = ".")))
"""


def data():
    x, y = M.simulate_logit(N, P, SEED)
    return x, y


def write_csv(x, y, folder) -> str:
    path = os.path.join(folder, "logit.csv")
    header = "y," + ",".join(f"x{j}" for j in range(x.shape[1]))
    np.savetxt(
        path, np.column_stack([y, x]), delimiter=",", header=header, comments="", fmt="%.17g"
    )
    return path


def jaxmle_fit(x, y):
    import jaxmle as jm

    return jm.fit(M.logit_logpdf, M.logit_init(x.shape[1]), {"x": x, "y": y})


def jaxmle_bootstrap(res, reps: int = REPS, key: int = 0):
    import jaxmle as jm

    bs = jm.bootstrap(res, reps, key=key, progress=False)
    jax.block_until_ready(bs.replicates)
    return bs


def flat_se(bs) -> np.ndarray:
    """jaxmle's bootstrap SEs in R's coefficient order (intercept first)."""
    se = bs.se
    return np.concatenate([[float(se["b0"])], np.asarray(se["b"])])


def r_boot(csv: str, reps: int = REPS, how: str = "glm") -> dict:
    """Run R boot in a subprocess: {"elapsed", "cpu": R's own wall and CPU seconds for boot(),
    "se": (k,), "wall": the subprocess's wall seconds}."""
    with tempfile.NamedTemporaryFile("w", suffix=".R", delete=False) as f:
        f.write(R_CODE)
    try:
        t0 = time.perf_counter()
        out = subprocess.run(["Rscript", f.name, csv, str(reps), how], check=True,
                             capture_output=True, text=True)  # fmt: skip
        wall = time.perf_counter() - t0
    finally:
        os.unlink(f.name)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["se"] = np.asarray(result["se"])
    result["wall"] = wall
    return result
