# R `boot` reference for jm.bootstrap: the same resamples, replications, influence values and
# percentile / basic / BCa intervals.
#
# Run from the repository root:
#     Rscript tests/reference/bootstrap/make_r_bootstrap.R
#
# Writes tests/reference/bootstrap/r_boot_birthwt.json. Data: tests/reference/data/birthwt.csv
# (MASS::birthwt, as written by tests/reference/make_r_fixtures.R). Numbers are written by
# jsonlite with digits = NA (15 significant digits).
#
# The index matrix `boot.array(b, indices = TRUE)` lets jaxmle replay exactly R's resamples; the
# replications `b$t` let the interval arithmetic be checked on R's own numbers; the influence values
# are given to boot.ci as `L =` (R's default, empinf(type = "reg"), is a regression on the resample
# counts, not what jaxmle computes): `L_inf` = estfun(m) %*% bread(m) (the infinitesimal jackknife
# of the MLE, analytic) and `L_jack` = empinf(b, type = "jack") (leave-one-out refits). A second
# model (with ht) on the same resamples shows the replications where the MLE does not exist.

suppressPackageStartupMessages({
  library(boot)
  library(sandwich)
  library(jsonlite)
})

out <- "tests/reference/bootstrap/r_boot_birthwt.json"
d <- read.csv("tests/reference/data/birthwt.csv")
formula <- low ~ age + lwt + smoke + ui
ctrl <- glm.control(epsilon = 1e-14, maxit = 100)

commands <- '
m <- glm(formula, family = binomial, data = d, control = ctrl)
stat <- function(d, i) coef(glm(formula, family = binomial, data = d[i, ], control = ctrl))
set.seed(20261125)
b <- boot(d, stat, R = 999)
idx <- boot.array(b, indices = TRUE)
L_inf <- estfun(m) %*% bread(m)
L_jack <- sapply(seq_along(b$t0), function(j) empinf(b, type = "jack", index = j))
ci <- lapply(seq_along(b$t0), function(j) lapply(c(0.95, 0.90), function(level) {
  inf <- boot.ci(b, conf = level, type = c("perc", "basic", "bca"), index = j, L = L_inf[, j])
  jack <- boot.ci(b, conf = level, type = "bca", index = j, L = L_jack[, j])
  list(level = level, percentile = inf$percent[4:5], basic = inf$basic[4:5],
       bca_inf = inf$bca[4:5], bca_jack = jack$bca[4:5])
}))
'
eval(parse(text = commands))

# The same resamples with ht (12 mothers with hypertension) in the model: in some of them every ht
# mother has a low-weight baby, the MLE does not exist (quasi-complete separation) and glm returns a
# diverged coefficient with the warning "fitted probabilities numerically 0 or 1 occurred".
formula_ht <- low ~ age + lwt + smoke + ht + ui
stat_ht <- function(d, i) coef(glm(formula_ht, family = binomial, data = d[i, ], control = ctrl))
t_ht <- t(apply(idx, 1, function(i) suppressWarnings(stat_ht(d, i))))

fixture <- list(
  source = "R boot",
  versions = list(R = R.version.string, boot = as.character(packageVersion("boot")),
                  sandwich = as.character(packageVersion("sandwich"))),
  dataset = "data/birthwt.csv",
  formula = deparse(formula),
  commands = commands,
  names = names(b$t0),
  t0 = unname(b$t0),
  t = unname(b$t),
  indices = unname(idx),
  L_inf = unname(L_inf),
  L_jack = unname(L_jack),
  ci = ci,
  formula_ht = deparse(formula_ht),
  t_ht = unname(t_ht)
)
writeLines(toJSON(fixture, digits = NA, auto_unbox = TRUE, pretty = FALSE), out)
cat("wrote", out, "\n")
