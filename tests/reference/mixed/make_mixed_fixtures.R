# Reference fixtures for jm.fit_mixed: GLMMs and LMMs fitted by lme4 and glmmTMB on data R ships.
#
# Run from the repository root:
#     Rscript tests/reference/mixed/make_mixed_fixtures.R
# Writes tests/reference/data/{cbpp,grouseticks,sleepstudy,penicillin,infert,corr_boundary}.csv
# and tests/reference/mixed/mixed_*.json.
#
# Every model is fitted (a) by lme4 with its default optimiser, (b) by lme4 with tight tolerances and
# two optimisers (bobyqa and Nelder-Mead), whose agreement is recorded as digits, and (c) by glmmTMB
# (TMB: Laplace with exact AD gradient), polished by Newton steps with the Hessian of TMB's exact
# gradient taken by numDeriv's Richardson extrapolation. The stored reference is (c): its estimates,
# its lnL and its covariance (the inverse of that Hessian), mapped by the delta method to the
# parameters of the hand-written log-densities in tests/test_mixed.py:
#     GLMM    beta, sigma (b = sigma u, u ~ N(0, 1))
#     LMM     beta, sigma (residual SD), L (lower-triangular, b = L u, row-major lower entries)
# Adaptive quadrature (nAGQ > 1) exists in lme4 only: its fixtures are lme4's tight fits.
suppressPackageStartupMessages({
  library(lme4); library(glmmTMB); library(numDeriv); library(MASS)
})
source("tests/reference/mixed/json.R")
out <- "tests/reference/mixed"; data_dir <- "tests/reference/data"
if (!dir.exists(out)) stop("run from the repository root")
versions <- list(R = paste(R.version$major, R.version$minor, sep = "."),
                 lme4 = as.character(packageVersion("lme4")),
                 glmmTMB = as.character(packageVersion("glmmTMB")),
                 TMB = as.character(packageVersion("TMB")),
                 numDeriv = as.character(packageVersion("numDeriv")))
tight_g <- function(opt) glmerControl(optimizer = opt, tolPwrss = 1e-12,
  optCtrl = if (opt == "bobyqa") list(rhoend = 1e-12, maxfun = 1e5) else
            list(FtolAbs = 1e-14, FtolRel = 1e-15, XtolRel = 1e-12, maxfun = 1e5))
tight_l <- function(opt) lmerControl(optimizer = opt,
  optCtrl = if (opt == "bobyqa") list(rhoend = 1e-12, maxfun = 1e5) else
            list(FtolAbs = 1e-14, FtolRel = 1e-15, XtolRel = 1e-12, maxfun = 1e5))
digits <- function(a, b) -log10(max(abs(a - b) / pmax(abs(b), 1e-8)))

# Newton polish of a glmmTMB fit: exact AD gradient, Hessian of the gradient by Richardson
polish <- function(m, steps = 4) {
  obj <- m$obj; par <- m$fit$par
  for (i in seq_len(steps)) {
    H <- jacobian(obj$gr, par, method = "Richardson")
    par <- par - solve(0.5 * (H + t(H)), as.vector(obj$gr(par)))
  }
  H <- jacobian(obj$gr, par, method = "Richardson"); H <- 0.5 * (H + t(H))
  list(par = par, H = H, grad = as.vector(obj$gr(par)), loglik = -obj$fn(par))
}
# our parameters as a function of glmmTMB's, and the delta-method covariance
mapped <- function(p, to) {
  est <- to(p$par); J <- jacobian(to, p$par)
  list(params = est, cov = J %*% solve(p$H) %*% t(J))
}
# Newton polish of a glmer fit on lme4's own deviance function of c(theta, beta) (Laplace or AGQ),
# numDeriv Richardson gradient and Hessian; for nAGQ > 1 lme4's deviance omits the saturated
# log-likelihood (it sums deviance residuals), which `saturated` adds back.
polish_lme4 <- function(m, saturated, steps = 4) {
  dd <- update(m, devFunOnly = TRUE); par <- c(getME(m, "theta"), fixef(m))
  for (i in seq_len(steps)) par <- par - solve(hessian(dd, par), grad(dd, par, method = "Richardson"))
  nt <- length(getME(m, "theta")); agq <- m@devcomp$dims[["nAGQ"]] > 1
  list(beta = unname(par[-seq_len(nt)]), theta = unname(par[seq_len(nt)]),
       gradient = grad(dd, par, method = "Richardson"),
       loglik = -dd(par) / 2 + if (agq) saturated else 0, saturated = saturated)
}
lme4_fit <- function(m) list(beta = unname(fixef(m)), theta = unname(getME(m, "theta")),
                             loglik = as.numeric(logLik(m)), se_beta = unname(sqrt(diag(as.matrix(vcov(m))))))
save <- function(name, x) write_json17(c(list(versions = versions), x), file.path(out, paste0("mixed_", name, ".json")))

# --------------------------------------------------------------------------- cbpp, binomial (1 | herd)
cb <- cbpp; cb$herd <- as.integer(cb$herd); cb$period <- as.integer(cb$period)
write.csv(cb[, c("herd", "incidence", "size", "period")], file.path(data_dir, "cbpp.csv"), row.names = FALSE)
f_cbpp <- cbind(incidence, size - incidence) ~ factor(period) + (1 | herd)
cmds <- c(
  default = 'glmer(f_cbpp, family = binomial, data = cb)',
  bobyqa = 'glmer(f_cbpp, family = binomial, data = cb, control = tight_g("bobyqa"))',
  nelder_mead = 'glmer(f_cbpp, family = binomial, data = cb, control = tight_g("Nelder_Mead"))',
  agq10_bobyqa = 'glmer(f_cbpp, family = binomial, data = cb, nAGQ = 10, control = tight_g("bobyqa"))',
  agq10_nelder_mead = 'glmer(f_cbpp, family = binomial, data = cb, nAGQ = 10, control = tight_g("Nelder_Mead"))',
  agq25_bobyqa = 'glmer(f_cbpp, family = binomial, data = cb, nAGQ = 25, control = tight_g("bobyqa"))',
  tmb = 'glmmTMB(f_cbpp, family = binomial, data = cb)')
fits <- lapply(cmds, function(s) eval(parse(text = s)))
p <- polish(fits$tmb)
ref <- mapped(p, function(x) c(x[1:4], exp(x[5])))
lme <- lapply(fits[names(fits) != "tmb"], lme4_fit)
sat <- sum(dbinom(cb$incidence, cb$size, cb$incidence / cb$size, log = TRUE))
save("cbpp", list(
  polished = list(laplace = polish_lme4(fits$bobyqa, sat), agq10 = polish_lme4(fits$agq10_bobyqa, sat),
                  agq25 = polish_lme4(fits$agq25_bobyqa, sat)),
  dataset = "data/cbpp.csv", formula = deparse(f_cbpp), commands = as.list(cmds),
  params = ref$params, cov = ref$cov, loglik = p$loglik, tmb_gradient = p$grad,
  tmb_default = list(params = unname(c(fits$tmb$fit$par[1:4], exp(fits$tmb$fit$par[5]))),
                     loglik = as.numeric(logLik(fits$tmb))),
  lme4 = lme,
  agree_laplace_digits = digits(c(lme$bobyqa$beta, lme$bobyqa$theta), c(lme$nelder_mead$beta, lme$nelder_mead$theta)),
  agree_agq10_digits = digits(c(lme$agq10_bobyqa$beta, lme$agq10_bobyqa$theta), c(lme$agq10_nelder_mead$beta, lme$agq10_nelder_mead$theta))))

# --------------------------------------------------------------------------- grouseticks, Poisson
gt <- grouseticks
gt2 <- data.frame(ticks = gt$TICKS, year = as.integer(as.character(gt$YEAR)), cheight = gt$cHEIGHT,
                  brood = as.integer(as.character(gt$BROOD)), index = as.integer(as.character(gt$INDEX)),
                  location = as.integer(as.character(gt$LOCATION)))
write.csv(gt2, file.path(data_dir, "grouseticks.csv"), row.names = FALSE)
f_gt1 <- ticks ~ factor(year) + cheight + (1 | brood)
cmds <- c(
  default = 'glmer(f_gt1, family = poisson, data = gt2)',
  bobyqa = 'glmer(f_gt1, family = poisson, data = gt2, control = tight_g("bobyqa"))',
  nelder_mead = 'glmer(f_gt1, family = poisson, data = gt2, control = tight_g("Nelder_Mead"))',
  agq10_bobyqa = 'glmer(f_gt1, family = poisson, data = gt2, nAGQ = 10, control = tight_g("bobyqa"))',
  agq10_nelder_mead = 'glmer(f_gt1, family = poisson, data = gt2, nAGQ = 10, control = tight_g("Nelder_Mead"))',
  tmb = 'glmmTMB(f_gt1, family = poisson, data = gt2)')
fits <- lapply(cmds, function(s) eval(parse(text = s)))
p <- polish(fits$tmb)
ref <- mapped(p, function(x) c(x[1:4], exp(x[5])))
lme <- lapply(fits[names(fits) != "tmb"], lme4_fit)
sat <- sum(dpois(gt2$ticks, gt2$ticks, log = TRUE))
save("grouseticks", list(
  polished = list(laplace = polish_lme4(fits$bobyqa, sat), agq10 = polish_lme4(fits$agq10_bobyqa, sat)),
  dataset = "data/grouseticks.csv", formula = deparse(f_gt1), commands = as.list(cmds),
  params = ref$params, cov = ref$cov, loglik = p$loglik, tmb_gradient = p$grad, lme4 = lme,
  agree_laplace_digits = digits(c(lme$bobyqa$beta, lme$bobyqa$theta), c(lme$nelder_mead$beta, lme$nelder_mead$theta)),
  agree_agq10_digits = digits(c(lme$agq10_bobyqa$beta, lme$agq10_bobyqa$theta), c(lme$agq10_nelder_mead$beta, lme$agq10_nelder_mead$theta))))

# three factors: observation-level (index), brood nested in location
f_gt3 <- ticks ~ factor(year) + cheight + (1 | brood) + (1 | index) + (1 | location)
cmds <- c(
  bobyqa = 'glmer(f_gt3, family = poisson, data = gt2, control = tight_g("bobyqa"))',
  nelder_mead = 'glmer(f_gt3, family = poisson, data = gt2, control = tight_g("Nelder_Mead"))',
  tmb = 'glmmTMB(f_gt3, family = poisson, data = gt2)')
fits <- lapply(cmds, function(s) eval(parse(text = s)))
p <- polish(fits$tmb)
# glmmTMB orders the terms as written: brood, index, location (our dict order too)
ref <- mapped(p, function(x) c(x[1:4], exp(x[5:7])))
lme <- lapply(fits[names(fits) != "tmb"], lme4_fit)
save("grouseticks3", list(
  polished = list(laplace = polish_lme4(fits$bobyqa, 0)),
  dataset = "data/grouseticks.csv", formula = deparse(f_gt3), commands = as.list(cmds),
  params = ref$params, cov = ref$cov, loglik = p$loglik, tmb_gradient = p$grad, lme4 = lme,
  agree_laplace_digits = digits(c(lme$bobyqa$beta, lme$bobyqa$theta), c(lme$nelder_mead$beta, lme$nelder_mead$theta))))

# --------------------------------------------------------------------------- sleepstudy, random slope, ML
ss <- sleepstudy; ss$Subject <- as.integer(as.character(ss$Subject))
write.csv(ss, file.path(data_dir, "sleepstudy.csv"), row.names = FALSE)
f_ss <- Reaction ~ Days + (Days | Subject)
# glmmTMB: betad = ln sigma^2; theta = (ln sd1, ln sd2, t), rho = t / sqrt(1 + t^2)
to_ss <- function(x) {
  sd1 <- exp(x[4]); sd2 <- exp(x[5]); rho <- x[6] / sqrt(1 + x[6]^2)
  c(x[1:2], exp(x[3] / 2), sd1, rho * sd2, sd2 * sqrt(1 - rho^2))
}
cmds <- c(
  bobyqa = 'lmer(f_ss, data = ss, REML = FALSE, control = tight_l("bobyqa"))',
  nelder_mead = 'lmer(f_ss, data = ss, REML = FALSE, control = tight_l("Nelder_Mead"))',
  tmb = 'glmmTMB(f_ss, data = ss, REML = FALSE)')
fits <- lapply(cmds, function(s) eval(parse(text = s)))
p <- polish(fits$tmb)
ref <- mapped(p, to_ss)
lme <- lapply(fits[names(fits) != "tmb"], function(m) c(lme4_fit(m), list(sigma = sigma(m))))
save("sleepstudy", list(
  dataset = "data/sleepstudy.csv", formula = deparse(f_ss), commands = as.list(cmds),
  params = ref$params, cov = ref$cov, loglik = p$loglik, tmb_gradient = p$grad, lme4 = lme,
  agree_digits = digits(c(lme$bobyqa$beta, lme$bobyqa$theta), c(lme$nelder_mead$beta, lme$nelder_mead$theta))))

# --------------------------------------------------------------------------- Penicillin, crossed, ML
pen <- Penicillin; pen$plate <- as.integer(pen$plate); pen$sample <- as.integer(pen$sample)
write.csv(pen, file.path(data_dir, "penicillin.csv"), row.names = FALSE)
f_pen <- diameter ~ 1 + (1 | plate) + (1 | sample)
cmds <- c(
  bobyqa = 'lmer(f_pen, data = pen, REML = FALSE, control = tight_l("bobyqa"))',
  nelder_mead = 'lmer(f_pen, data = pen, REML = FALSE, control = tight_l("Nelder_Mead"))',
  tmb = 'glmmTMB(f_pen, data = pen, REML = FALSE)')
fits <- lapply(cmds, function(s) eval(parse(text = s)))
p <- polish(fits$tmb)
ref <- mapped(p, function(x) c(x[1], exp(x[2] / 2), exp(x[3:4])))  # beta, sigma, sd_plate, sd_sample
lme <- lapply(fits[names(fits) != "tmb"], function(m) c(lme4_fit(m), list(sigma = sigma(m))))
save("penicillin", list(
  dataset = "data/penicillin.csv", formula = deparse(f_pen), commands = as.list(cmds),
  params = ref$params, cov = ref$cov, loglik = p$loglik, tmb_gradient = p$grad, lme4 = lme,
  agree_digits = digits(c(lme$bobyqa$beta, lme$bobyqa$theta), c(lme$nelder_mead$beta, lme$nelder_mead$theta))))

# --------------------------------------------------------------------------- boundary: sigma = 0
# infert with a random intercept per matched set: glmer's fit is singular (theta = 0), so the GLMM's
# maximum is the logistic GLM's: beta and lnL equal glm's (a closed-form check of the boundary fit).
inf <- infert[, c("case", "spontaneous", "induced", "stratum")]
cmds <- c(glmer = 'glmer(case ~ spontaneous + induced + (1 | stratum), data = inf, family = binomial, control = tight_g("bobyqa"))',
          glm = 'glm(case ~ spontaneous + induced, data = inf, family = binomial, control = glm.control(epsilon = 1e-14, maxit = 100))')
fits <- lapply(cmds, function(s) eval(parse(text = s)))
save("infert_boundary", list(
  dataset = "data/infert.csv", commands = as.list(cmds), singular = isSingular(fits$glmer),
  lme4 = lme4_fit(fits$glmer),
  params = unname(coef(fits$glm)), loglik = as.numeric(logLik(fits$glm)),
  cov = unname(vcov(fits$glm))))

# --------------------------------------------------------------------------- boundary: correlation +1
# a simulated random intercept and slope with b1 = 0.4 b0 exactly: lmer's ML fit is singular with
# theta_3 = 0 (correlation +1) and nonzero variances
set.seed(3); G <- 12; n <- 6
g <- rep(1:G, each = n); x <- rep(0:(n - 1), G)
b0 <- rnorm(G, 0, 1); b1 <- 0.4 * b0
y <- 1 + 0.3 * x + b0[g] + b1[g] * x + rnorm(G * n, 0, 1)
cb1 <- data.frame(y = y, x = x, g = g)
write.csv(cb1, file.path(data_dir, "corr_boundary.csv"), row.names = FALSE)
cmds <- c(bobyqa = 'lmer(y ~ x + (x | g), data = cb1, REML = FALSE, control = tight_l("bobyqa"))',
          nelder_mead = 'lmer(y ~ x + (x | g), data = cb1, REML = FALSE, control = tight_l("Nelder_Mead"))')
fits <- lapply(cmds, function(s) eval(parse(text = s)))
lme <- lapply(fits, function(m) c(lme4_fit(m), list(sigma = sigma(m), singular = isSingular(m))))
m <- fits$bobyqa
# our L = sigma * Lambda (lme4's relative Cholesky factor)
save("corr_boundary", list(
  dataset = "data/corr_boundary.csv", commands = as.list(cmds), lme4 = lme,
  params = c(unname(fixef(m)), sigma(m), sigma(m) * unname(getME(m, "theta"))),
  loglik = as.numeric(logLik(m)),
  agree_digits = digits(c(lme$bobyqa$beta, lme$bobyqa$theta), c(lme$nelder_mead$beta, lme$nelder_mead$theta))))
cat("done\n")
