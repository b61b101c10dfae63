# Conditional modes and conditional SDs of the random effects for jm.fit_mixed's ranef(), from lme4.
#
# Run from the repository root:
#     Rscript tests/reference/mixed/make_ranef_fixture.R
# Writes tests/reference/mixed/mixed_cbpp_ranef.json: R `ranef(m, condVar = TRUE)` of the cbpp
# random-intercept GLMM (Laplace), fitted with tight tolerances, on lme4's b scale (b = sigma u):
# modes b_g and sqrt(attr(, "postVar")) in herd order 1..15. For this canonical-link model lme4's
# conditional variance is the inverse of -d2 h / db2 at the mode, as jaxmle's re_sd.
suppressPackageStartupMessages(library(lme4))
source("tests/reference/mixed/json.R")
out <- "tests/reference/mixed"
if (!dir.exists(out)) stop("run from the repository root")
cb <- cbpp; cb$herd <- as.integer(cb$herd); cb$period <- as.integer(cb$period)
cmd <- paste0('glmer(cbind(incidence, size - incidence) ~ factor(period) + (1 | herd), family = binomial, ',
              'data = cb, control = glmerControl(optimizer = "bobyqa", tolPwrss = 1e-12, ',
              'optCtrl = list(rhoend = 1e-12, maxfun = 1e5)))')
m <- eval(parse(text = cmd))
re <- ranef(m, condVar = TRUE)$herd
write_json17(list(
  versions = list(R = paste(R.version$major, R.version$minor, sep = "."),
                  lme4 = as.character(packageVersion("lme4"))),
  command = cmd, ranef = "ranef(m, condVar = TRUE)$herd",
  herd = as.integer(rownames(re)), mode = unname(re[, 1]),
  condsd = sqrt(as.numeric(attr(re, "postVar"))),
  beta = unname(fixef(m)), theta = unname(getME(m, "theta")), loglik = as.numeric(logLik(m))),
  file.path(out, "mixed_cbpp_ranef.json"))
cat("done\n")
