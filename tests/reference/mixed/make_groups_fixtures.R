# Reference fixtures for jm.fit_groups: conditional logit and Cox partial likelihood (Breslow ties).
#
# Run from the repository root:
#     Rscript tests/reference/mixed/make_groups_fixtures.R
# Writes tests/reference/data/{infert,lung_inst}.csv and tests/reference/mixed/groups_*.json.
# Each fixture stores the exact call (`commands`), the R and package versions, the coefficients,
# lnL (the partial log-likelihood, R `m$loglik[2]`), the model-based covariance `vcov` (inverse of
# the observed information) and, where R gives it, the robust covariance `robust` (coxph with
# `cluster = <the stratum>`: per-stratum sums of score residuals, D'D, no small-sample factor).
suppressPackageStartupMessages(library(survival))
source("tests/reference/mixed/json.R")
out <- "tests/reference/mixed"; data_dir <- "tests/reference/data"
if (!dir.exists(out)) stop("run from the repository root")
versions <- list(R = paste(R.version$major, R.version$minor, sep = "."),
                 survival = as.character(packageVersion("survival")))
tight <- coxph.control(eps = 1e-14, iter.max = 100, toler.chol = 1e-15)

fixture <- function(name, m, commands, data_file, extra = list()) {
  # with cluster =, m$var is the robust covariance and m$naive.var the model-based one
  robust <- !is.null(m$naive.var)
  res <- c(list(
    dataset = data_file, commands = commands, versions = versions,
    names = I(names(coef(m))), params = unname(coef(m)), loglik = m$loglik[2],
    n = m$n, nevent = m$nevent,
    vcov = if (robust) m$naive.var else unclass(m$var),
    robust = if (robust) unclass(m$var) else NULL
  ), extra)
  write_json17(res, file.path(out, paste0("groups_", name, ".json")))
}

# 1. conditional logit: infert (83 matched sets, 1 case and 1-2 controls each)
inf <- infert[, c("case", "spontaneous", "induced", "stratum")]
write.csv(inf, file.path(data_dir, "infert.csv"), row.names = FALSE)
cmd <- 'm <- clogit(case ~ spontaneous + induced + strata(stratum), data = inf, method = "breslow", cluster = stratum, control = tight)'
eval(parse(text = cmd))
fixture("clogit_infert", m, cmd, "data/infert.csv")

# 2. Cox partial likelihood, Breslow ties, one risk-set group: lung
lung3 <- na.omit(lung[, c("time", "status", "age", "sex", "ph.ecog", "inst")])
lung3$event <- as.integer(lung3$status == 2); lung3$status <- NULL
write.csv(lung3, file.path(data_dir, "lung_inst.csv"), row.names = FALSE)
cmd <- 'm <- coxph(Surv(time, event) ~ age + sex + ph.ecog, data = lung3, ties = "breslow", control = tight)'
eval(parse(text = cmd))
fixture("coxph_lung", m, cmd, "data/lung_inst.csv")

# 3. stratified by institution (18 strata of 2..36 rows), robust by institution
cmd <- 'm <- coxph(Surv(time, event) ~ age + sex + ph.ecog + strata(inst), data = lung3, ties = "breslow", cluster = inst, control = tight)'
eval(parse(text = cmd))
fixture("coxph_lung_strata", m, cmd, "data/lung_inst.csv")
