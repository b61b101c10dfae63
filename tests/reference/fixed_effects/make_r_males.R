# Reference fixture for fixed-effects logit on a real panel: R plm::Males (Vella and Verbeek 1998,
# NLS Youth Sample, 545 men, 1980-1987). Union membership on experience, marital status, log wage
# and health, with one effect per person; persons whose union status never changes have infinite
# effects and are dropped (as fixest and jaxmle do), leaving the switchers.
#
# Run from the repository root:
#     Rscript tests/reference/fixed_effects/make_r_males.R
# Writes tests/reference/data/males.csv (the whole data set, factors as 0/1) and
# tests/reference/fixed_effects/r_males_logit.json. The reference is the plain maximum-likelihood
# logit with explicit person dummies (glm), whose covariate block of the inverse information is
# what jaxmle's concentrated fit must reproduce; cluster-robust by person from sandwich::vcovCL.

library(plm)
library(sandwich)
library(jsonlite)

data(Males, package = "plm")
males <- data.frame(
  nr = Males$nr,
  year = Males$year,
  union = as.integer(Males$union == "yes"),
  married = as.integer(Males$married == "yes"),
  health = as.integer(Males$health == "yes"),
  exper = Males$exper,
  wage = Males$wage
)
write.csv(males, "tests/reference/data/males.csv", row.names = FALSE)

switches <- tapply(males$union, males$nr, function(u) length(unique(u)) > 1)
kept <- males[males$nr %in% as.integer(names(switches)[switches]), ]

commands <- '
m <- glm(union ~ exper + married + wage + health + factor(nr) - 1, family = binomial, data = kept,
         control = glm.control(epsilon = 1e-14, maxit = 100))
V <- vcov(m)
Vcl <- vcovCL(m, cluster = ~nr, type = "HC0", cadjust = TRUE)
Vhc0 <- sandwich(m)
'
eval(parse(text = commands))
b <- c("exper", "married", "wage", "health")
out <- list(
  source = paste0(R.version.string, "; plm ", packageVersion("plm"), ", sandwich ",
                  packageVersion("sandwich")),
  dataset = "data/males.csv",
  description = paste("logit of union on exper, married, wage, health with person effects a[nr];",
                      "persons whose union status never changes dropped"),
  n_persons = length(unique(males$nr)),
  n_persons_kept = length(unique(kept$nr)),
  n_obs_kept = nrow(kept),
  param_names = b,
  params = unname(coef(m)[b]),
  loglik = as.numeric(logLik(m)),
  cov_hessian = unname(V[b, b]),
  cov_sandwich = unname(Vhc0[b, b]),
  cov_cluster = unname(Vcl[b, b]),
  commands = commands
)
writeLines(toJSON(out, digits = I(17), auto_unbox = TRUE, pretty = TRUE, matrix = "rowmajor"),
           "tests/reference/fixed_effects/r_males_logit.json")
cat("kept", out$n_persons_kept, "persons,", out$n_obs_kept, "rows\n")
