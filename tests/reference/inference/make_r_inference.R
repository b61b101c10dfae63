# R reference numbers for jaxmle's inference (tests/test_inference.py).
#
# Run from the repository root:
#     Rscript tests/reference/inference/make_r_inference.R
#
# Writes tests/reference/inference/r_inference.json. Data are the committed CSVs in
# tests/reference/data (birthwt, lung, mtcars), made by tests/reference/make_r_fixtures.R.
# Every block below is kept as a string, evaluated verbatim and stored in "commands".
#
# Needs: R >= 4.x with lmtest, car, sandwich, survival, bbmle.

suppressPackageStartupMessages({
  library(lmtest)
  library(car)
  library(sandwich)
  library(survival)
  library(bbmle)
})

out_file <- "tests/reference/inference/r_inference.json"
data_dir <- "tests/reference/data"
if (!dir.exists(data_dir)) stop("run from the repository root")
ver <- function(p) as.character(packageVersion(p))

# ---- JSON by hand: every double as %.17g (no jsonlite dependency) ----------------------------
num17 <- function(x) {
  if (any(!is.finite(x))) stop("non-finite number in fixture")
  sprintf("%.17g", x)
}
json_str <- function(s) {
  s <- gsub("\\\\", "\\\\\\\\", s)
  s <- gsub("\"", "\\\\\"", s)
  s <- gsub("\n", "\\\\n", s)
  paste0("\"", s, "\"")
}
to_json <- function(x, ind = "") {
  ind2 <- paste0(ind, "  ")
  if (is.list(x)) {
    body <- vapply(names(x), function(nm) paste0(ind2, json_str(nm), ": ", to_json(x[[nm]], ind2)), "")
    return(paste0("{\n", paste(body, collapse = ",\n"), "\n", ind, "}"))
  }
  vals <- if (is.character(x)) vapply(x, json_str, "", USE.NAMES = FALSE) else num17(as.numeric(x))
  if (inherits(x, "AsIs") || length(x) != 1) paste0("[", paste(vals, collapse = ", "), "]") else vals
}
run_block <- function(code) {
  env <- new.env(parent = globalenv())
  eval(parse(text = code), envir = env)
  env
}
checks <- character(0)
check <- function(label, a, b, tol) {
  r <- max(abs(a - b) / pmax(abs(b), 1e-300))
  msg <- sprintf("%s: max rel diff %.3g", label, r)
  cat("   check ", msg, "\n")
  if (!(r < tol)) stop("FAILED ", msg)
  checks <<- c(checks, msg)
}

# ============================================================================================
# 1. birthwt logit: Wald (lmtest, car), LR (lmtest), Rao score (anova.glm), delta (car),
#    AIC/BIC, profile intervals (glm with an offset, uniroot to 1e-13)
# ============================================================================================
cat("== birthwt logit\n")
code_bw <- '
bw <- read.csv("tests/reference/data/birthwt.csv")
ctl <- glm.control(epsilon = 1e-14, maxit = 100)
fit <- function(f) {   # refit from the converged estimate: vcov/estfun at the final estimate
  m1 <- glm(f, family = binomial, data = bw, control = ctl)
  glm(f, family = binomial, data = bw, control = ctl, start = coef(m1))
}
# jaxmle names its parameters after these covariates ("const" for the intercept)
m_full <- fit(low ~ lwt + smoke + ht + age + ptl + ui)
m_r    <- fit(low ~ lwt + smoke + ht)
m_0    <- fit(low ~ lwt)
wald       <- waldtest(m_full, m_r, test = "Chisq")
wald_hc0   <- waldtest(m_full, m_r, test = "Chisq", vcov = sandwich)
lh         <- linearHypothesis(m_full, c("smoke = ht", "ptl = 0"), test = "Chisq")
lh_hc0     <- linearHypothesis(m_full, c("smoke = ht", "ptl = 0"), test = "Chisq",
                               vcov. = sandwich(m_full))
lr         <- lrtest(m_r, m_full)
lr3        <- lrtest(m_0, m_r, m_full)
rao        <- anova(m_r, m_full, test = "Rao")
aic        <- AIC(m_0, m_r, m_full)$AIC
bic        <- BIC(m_0, m_r, m_full)$BIC
dm_ratio   <- deltaMethod(m_full, "smoke / ht")
dm_exp_hc0 <- deltaMethod(m_full, "exp(smoke)", vcov. = sandwich(m_full))

# profile likelihood: lnL_p(b) = max over the others with coefficient j at b (glm.fit, offset)
X <- model.matrix(m_full); y <- m_full$y
ll_hat <- as.numeric(logLik(m_full))
profile_ll <- function(j, b) {
  mm <- glm.fit(X[, -j, drop = FALSE], y, family = binomial(), offset = b * X[, j],
                control = ctl, start = coef(m_full)[-j])
  sum(dbinom(y, 1, mm$fitted.values, log = TRUE))
}
profile_bound <- function(name, side, level = 0.95) {
  j <- match(name, colnames(X)); est <- coef(m_full)[[j]]; se <- sqrt(vcov(m_full)[j, j])
  f <- function(b) 2 * (ll_hat - profile_ll(j, b)) - qchisq(level, 1)
  uniroot(f, sort(c(est, est + side * 3 * se)), tol = 1e-13, maxiter = 1000)$root
}
profile_smoke <- c(profile_bound("smoke", -1), profile_bound("smoke", 1))
profile_ui_90 <- c(profile_bound("ui", -1, 0.90), profile_bound("ui", 1, 0.90))
'
e <- run_block(code_bw)
with(e, {
  check("lrtest Chisq == 2 dlnL", lr$Chisq[2], 2 * (logLik(m_full) - logLik(m_r)), 1e-12)
  check("Rao via glm == score test by hand",
        rao$Rao[2], local({
          Xf <- model.matrix(m_full); mu <- fitted(m_r)
          U <- crossprod(Xf, y - mu); I <- crossprod(Xf * (mu * (1 - mu)), Xf)
          drop(t(U) %*% solve(I, U))
        }), 1e-9)
  check("profile ll at the MLE == lnL_hat", profile_ll(3, coef(m_full)[["smoke"]]), ll_hat, 1e-12)
  check("MASS profile (spline) ~ uniroot bounds (smoke)",
        suppressMessages(confint(m_full, "smoke")), profile_smoke, 1e-3)
})
bw <- with(e, list(
  dataset = "../data/birthwt.csv",
  coef_names = I(names(coef(m_full))),
  coef = I(unname(coef(m_full))),
  loglik = as.numeric(logLik(m_full)),
  wald = list(statistic = wald$Chisq[2], df = abs(wald$Df[2]), pvalue = wald[["Pr(>Chisq)"]][2]),
  wald_hc0 = list(statistic = wald_hc0$Chisq[2], df = abs(wald_hc0$Df[2]),
                  pvalue = wald_hc0[["Pr(>Chisq)"]][2]),
  linear_hypothesis = list(statistic = lh$Chisq[2], df = lh$Df[2], pvalue = lh[["Pr(>Chisq)"]][2]),
  linear_hypothesis_hc0 = list(statistic = lh_hc0$Chisq[2], df = lh_hc0$Df[2],
                               pvalue = lh_hc0[["Pr(>Chisq)"]][2]),
  lr = list(statistic = lr$Chisq[2], df = lr$Df[2], pvalue = lr[["Pr(>Chisq)"]][2]),
  lr3 = list(loglik = I(as.numeric(lr3$LogLik)), k = I(lr3[["#Df"]]),
             statistic = I(lr3$Chisq[2:3]), df = I(lr3$Df[2:3]),
             pvalue = I(lr3[["Pr(>Chisq)"]][2:3]), aic = I(aic), bic = I(bic)),
  rao = list(statistic = rao$Rao[2], df = rao$Df[2], pvalue = rao[["Pr(>Chi)"]][2]),
  delta_ratio = list(estimate = dm_ratio$Estimate, se = dm_ratio$SE),
  delta_exp_smoke_hc0 = list(estimate = dm_exp_hc0$Estimate, se = dm_exp_hc0$SE),
  profile_smoke = I(profile_smoke),
  profile_ui_90 = I(profile_ui_90),
  commands = code_bw
))

# ============================================================================================
# 2. lung Weibull AFT (survreg): profile intervals for age (offset) and Log(scale) (scale fixed)
# ============================================================================================
cat("== lung weibull\n")
code_lung <- '
lung <- read.csv("tests/reference/data/lung.csv")
ctl <- survreg.control(rel.tolerance = 1e-13, iter.max = 200)
m_w <- survreg(Surv(time, event) ~ age + sex + ph.ecog, data = lung, dist = "weibull",
               control = ctl)
ll_hat <- m_w$loglik[2]
prof_age <- function(b) {
  survreg(Surv(time, event) ~ sex + ph.ecog + offset(b * age), data = lung, dist = "weibull",
          control = ctl)$loglik[2]
}
prof_log_scale <- function(s) {
  survreg(Surv(time, event) ~ age + sex + ph.ecog, data = lung, dist = "weibull",
          scale = exp(s), control = ctl)$loglik[2]
}
bound <- function(pl, est, se, side) {
  f <- function(b) 2 * (ll_hat - pl(b)) - qchisq(0.95, 1)
  uniroot(f, sort(c(est, est + side * 3 * se)), tol = 1e-13, maxiter = 1000)$root
}
V <- vcov(m_w)
profile_age <- c(bound(prof_age, coef(m_w)[["age"]], sqrt(V["age", "age"]), -1),
                 bound(prof_age, coef(m_w)[["age"]], sqrt(V["age", "age"]), 1))
ls_hat <- log(m_w$scale); ls_se <- sqrt(V["Log(scale)", "Log(scale)"])
profile_log_scale <- c(bound(prof_log_scale, ls_hat, ls_se, -1),
                       bound(prof_log_scale, ls_hat, ls_se, 1))
'
e <- run_block(code_lung)
with(e, {
  check("survreg profile at the MLE == lnL_hat", prof_age(coef(m_w)[["age"]]), ll_hat, 1e-12)
})
lung <- with(e, list(
  dataset = "../data/lung.csv",
  coef = I(c(unname(coef(m_w)), log(m_w$scale))),
  loglik = ll_hat,
  profile_age = I(profile_age),
  profile_log_scale = I(profile_log_scale),
  commands = code_lung
))

# ============================================================================================
# 3. mtcars normal linear model by bbmle::mle2: profile intervals with mle2(fixed = ...) refits
#    (bbmle's own confint(method = "uniroot") stops at uniroot's default tol ~1e-4, so the
#    bound is found here by the same refits with uniroot(tol = 1e-13); both are stored)
# ============================================================================================
cat("== mtcars normal (bbmle)\n")
code_mt <- '
mt <- read.csv("tests/reference/data/mtcars.csv")
nll <- function(b0, b_wt, b_hp, log_sigma)
  -sum(dnorm(mt$mpg, b0 + b_wt * mt$wt + b_hp * mt$hp, exp(log_sigma), log = TRUE))
ols <- lm(mpg ~ wt + hp, data = mt)
start <- list(b0 = coef(ols)[[1]], b_wt = coef(ols)[[2]], b_hp = coef(ols)[[3]],
              log_sigma = log(sqrt(mean(residuals(ols)^2))))
# parscale unnamed, in start order (bbmle warns that it reorders it by name; the order is right)
opt <- list(method = "BFGS", control = list(reltol = 1e-15, maxit = 10000,
                                            parscale = c(1, 0.1, 0.001, 0.1)))
m_b <- suppressWarnings(do.call(mle2, c(list(nll, start = start), opt)))
ll_hat <- as.numeric(logLik(m_b))
refit_fixed <- function(name, value) {
  st <- as.list(coef(m_b)); st[[name]] <- NULL
  fx <- list(value); names(fx) <- name
  ps <- c(b0 = 1, b_wt = 0.1, b_hp = 0.001, log_sigma = 0.1)[names(st)]
  as.numeric(logLik(mle2(nll, start = st, fixed = fx, method = "BFGS",
                         control = list(reltol = 1e-15, maxit = 10000, parscale = ps))))
}
bound <- function(name, side) {
  est <- coef(m_b)[[name]]; se <- sqrt(vcov(m_b)[name, name])
  f <- function(b) 2 * (ll_hat - refit_fixed(name, b)) - qchisq(0.95, 1)
  uniroot(f, sort(c(est, est + side * 3 * se)), tol = 1e-13, maxiter = 1000)$root
}
profile_b_wt <- c(bound("b_wt", -1), bound("b_wt", 1))
profile_log_sigma <- c(bound("log_sigma", -1), bound("log_sigma", 1))
bbmle_uniroot <- suppressWarnings(confint(m_b, parm = c("b_wt", "log_sigma"), method = "uniroot"))
# closed form for the check: with b_wt fixed, the others are OLS with an offset, sigma2 = RSS/n
closed_ll <- function(b) {
  r <- residuals(lm(mpg ~ hp + offset(b * wt), data = mt)); n <- length(r)
  -n / 2 * (log(2 * pi * mean(r^2)) + 1)
}
'
e <- run_block(code_mt)
with(e, {
  check("mle2 lnL == OLS closed form", ll_hat, -16 * (log(2 * pi * mean(residuals(ols)^2)) + 1), 1e-12)
  check("mle2 fixed refit == closed-form profile lnL (b_wt lower bound)",
        refit_fixed("b_wt", profile_b_wt[1]), closed_ll(profile_b_wt[1]), 1e-11)
  check("bbmle confint(uniroot) ~ tight bounds", c(bbmle_uniroot["b_wt", ], bbmle_uniroot["log_sigma", ]),
        c(profile_b_wt, profile_log_sigma), 1e-3)
})
mt <- with(e, list(
  dataset = "../data/mtcars.csv",
  coef = I(unname(coef(m_b))),
  loglik = ll_hat,
  profile_b_wt = I(profile_b_wt),
  profile_log_sigma = I(profile_log_sigma),
  bbmle_uniroot_b_wt = I(unname(bbmle_uniroot["b_wt", ])),
  bbmle_uniroot_log_sigma = I(unname(bbmle_uniroot["log_sigma", ])),
  commands = code_mt
))

fx <- list(
  source = sprintf("R %s.%s; lmtest %s, car %s, sandwich %s, survival %s, bbmle %s",
                   R.version$major, R.version$minor, ver("lmtest"), ver("car"), ver("sandwich"),
                   ver("survival"), ver("bbmle")),
  birthwt_logit = bw,
  lung_weibull = lung,
  mtcars_normal_bbmle = mt,
  checks = I(checks)
)
writeLines(to_json(fx), out_file)
cat("wrote", out_file, "\n")
