# R reference fixtures for jaxmle.glmer / glmer_nb (lme4::glmer, glmer.nb; glmmTMB beside them).
#
# Run from the repository root:
#     Rscript tests/reference/mixed/make_glmer_fixtures.R [model names, e.g. glmer_cbpp_slope]
#
# Writes tests/reference/data/glmer_{grouseticks,verbagg}.csv (datasets lme4 ships; VerbAgg's r2 as 0/1)
# and tests/reference/mixed/glmer_*.json; cbpp is read from tests/reference/data/cbpp.csv.
#
# As for lmer, each model is refitted by two optimisers at tight tolerances (bobyqa, Nelder_Mead);
# the fixture holds the bobyqa refit and records how many digits the two agree on. The refits also
# tighten the inner (PIRLS) tolerance, tolPwrss = 1e-12: at lme4's default 1e-7 the conditional modes
# stop short and the Laplace deviance it optimises is off by ~3e-4 in lnL on cbpp (the default fit is
# kept in "default_fit"; glmmTMB and jaxmle agree with the tight one). glmer.nb is refitted by
# update(m, control = ...). lme4's standard errors come from a finite-difference
# Hessian of the Laplace deviance (its `derivs`); glmmTMB's from the exact (AD) Hessian.
# For a non-canonical link (probit, and glmer.nb's log link for the negative binomial) lme4's PIRLS
# weights are Fisher's (expected) ones, so its "Laplace" deviance is not the Laplace approximation
# of the integral (which uses the observed curvature at the mode): glmmTMB's is, and is the
# reference there (lnL -92.583 vs lme4's -92.621 for the cbpp probit model).
# With nAGQ > 1 lme4's logLik leaves out the saturated model's log-likelihood (its deviance is built
# from deviance residuals); the fixture records that constant ("saturated_loglik").

suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})
out_dir <- "tests/reference/mixed"
data_dir <- "tests/reference/data"
if (!dir.exists(out_dir)) stop("run from the repository root")
versions <- list(R = paste(R.version$major, R.version$minor, sep = "."),
                 lme4 = as.character(packageVersion("lme4")),
                 Matrix = as.character(packageVersion("Matrix")))
has_tmb <- requireNamespace("glmmTMB", quietly = TRUE)
if (has_tmb) versions$glmmTMB <- as.character(packageVersion("glmmTMB"))

cbpp_df <- read.csv(file.path(data_dir, "cbpp.csv"))
cbpp_df$period <- factor(cbpp_df$period)
cbpp_df$herd <- factor(cbpp_df$herd)
write.csv(grouseticks, file.path(data_dir, "glmer_grouseticks.csv"), row.names = FALSE)
verb <- VerbAgg[, c("Anger", "Gender", "item", "id", "btype", "situ", "mode")]
verb$r2 <- as.integer(VerbAgg$r2 == "Y")
write.csv(verb, file.path(data_dir, "glmer_verbagg.csv"), row.names = FALSE)

tight <- list(
  bobyqa = glmerControl(optimizer = "bobyqa", tolPwrss = 1e-12,
                        optCtrl = list(rhoend = 1e-8, maxfun = 1e5)),
  nelder_mead = glmerControl(optimizer = "Nelder_Mead", tolPwrss = 1e-12,
                             optCtrl = list(FtolAbs = 1e-12, FtolRel = 1e-13, XtolRel = 1e-10,
                                            maxfun = 1e5))
)
digits_agree <- function(a, b) {
  rel <- max(abs(a - b) / pmax(abs(a), abs(b), 1e-6))
  if (rel == 0) 16 else -log10(rel)
}

summarise_fit <- function(m) {
  vc <- as.data.frame(VarCorr(m))
  re <- ranef(m, condVar = TRUE)
  ranefs <- lapply(names(re), function(f) {
    r <- re[[f]]
    pv <- attr(r, "postVar")
    condsd <- t(matrix(apply(pv, 3, function(a) sqrt(diag(as.matrix(a)))), nrow = ncol(r)))
    list(levels = I(rownames(r)), columns = I(colnames(r)), values = unname(as.matrix(r)),
         condsd = unname(condsd))
  })
  names(ranefs) <- names(re)
  list(
    fixef_names = I(names(fixef(m))), fixef = I(unname(fixef(m))),
    se = I(unname(sqrt(diag(as.matrix(vcov(m)))))), vcov = unname(as.matrix(vcov(m))),
    theta = I(unname(getME(m, "theta"))),
    loglik = as.numeric(logLik(m)), df = attr(logLik(m), "df"),
    aic = AIC(m), bic = BIC(m), nobs = nobs(m),
    varcorr = list(grp = I(vc$grp), var1 = I(ifelse(is.na(vc$var1), "", vc$var1)),
                   var2 = I(ifelse(is.na(vc$var2), "", vc$var2)), vcov = I(vc$vcov),
                   sdcor = I(vc$sdcor)),
    ngrps = as.list(ngrps(m)), ranef = ranefs, singular = isSingular(m)
  )
}

tmb <- function(text) {
  if (!has_tmb) return(NULL)
  m <- suppressWarnings(eval(parse(text = text)))
  sd <- summary(m)$coefficients$cond
  V <- vcov(m, full = TRUE)
  list(call = text, loglik = as.numeric(logLik(m)), fixef = I(unname(sd[, 1])),
       se_fixef = I(unname(sd[, 2])), par_names = I(colnames(V)),
       se_par = I(unname(sqrt(diag(V)))), par = I(unname(m$fit$par)),
       sigma = if (family(m)$family == "nbinom2") sigma(m) else NULL)
}

models <- list(
  glmer_cbpp_laplace = list(
    call = "glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp_df, family = binomial)",
    formula = "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)",
    family = "binomial", link = "logit", n_quad = 1, data = "data/cbpp.csv",
    tmb = "glmmTMB::glmmTMB(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp_df, family = binomial)"),
  glmer_cbpp_agq9 = list(
    call = "glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp_df, family = binomial, nAGQ = 9)",
    formula = "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)",
    family = "binomial", link = "logit", n_quad = 9, data = "data/cbpp.csv"),
  glmer_cbpp_probit_laplace = list(
    call = "glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp_df, family = binomial(link = 'probit'))",
    formula = "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)",
    family = "binomial", link = "probit", n_quad = 1, data = "data/cbpp.csv",
    tmb = "glmmTMB::glmmTMB(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp_df, family = binomial(link = 'probit'))"),
  glmer_cbpp_slope = list(
    call = "glmer(cbind(incidence, size - incidence) ~ period + (as.numeric(period) | herd), cbpp_df, family = binomial)",
    formula = "cbind(incidence, size - incidence) ~ C(period) + (period | herd)",
    family = "binomial", link = "logit", n_quad = 1, data = "data/cbpp.csv",
    tmb = "glmmTMB::glmmTMB(cbind(incidence, size - incidence) ~ period + (as.numeric(period) | herd), cbpp_df, family = binomial)"),
  glmer_grouseticks_poisson = list(
    call = "glmer(TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION), grouseticks, family = poisson)",
    formula = "TICKS ~ C(YEAR) + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)",
    family = "poisson", link = "log", n_quad = 1, data = "data/glmer_grouseticks.csv",
    tmb = "glmmTMB::glmmTMB(TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION), grouseticks, family = poisson)"),
  glmer_grouseticks_nb = list(
    call = "glmer.nb(TICKS ~ YEAR + cHEIGHT + (1 | BROOD), grouseticks)",
    formula = "TICKS ~ C(YEAR) + cHEIGHT + (1 | BROOD)",
    family = "negative_binomial", link = "log", n_quad = 1, data = "data/glmer_grouseticks.csv",
    tmb = "glmmTMB::glmmTMB(TICKS ~ YEAR + cHEIGHT + (1 | BROOD), grouseticks, family = glmmTMB::nbinom2)"),
  glmer_verbagg_crossed = list(
    call = "glmer(r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item), verb, family = binomial)",
    formula = "r2 ~ Anger + C(Gender) + C(btype) + C(situ) + (1 | id) + (1 | item)",
    family = "binomial", link = "logit", n_quad = 1, data = "data/glmer_verbagg.csv",
    tmb = "glmmTMB::glmmTMB(r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item), verb, family = binomial)")
)

only <- commandArgs(trailingOnly = TRUE)  # model names to (re)make; all when none are given
for (name in if (length(only)) only else names(models)) {
  spec <- models[[name]]
  m0 <- suppressWarnings(suppressMessages(eval(parse(text = spec$call))))
  refit <- function(ctrl) {
    # glmer.nb (lme4 1.1.31) passes its own `tol` on to glmer, which refuses it: refit by update()
    if (spec$family == "negative_binomial") return(suppressWarnings(suppressMessages(update(m0, control = ctrl))))
    suppressWarnings(suppressMessages(eval(parse(text = sub("\\)$", ", control = ctrl)", spec$call)))))
  }
  refits <- lapply(tight, refit)
  ref <- refits$bobyqa
  s <- summarise_fit(ref)
  agree <- list(
    theta = digits_agree(getME(refits$bobyqa, "theta"), getME(refits$nelder_mead, "theta")),
    fixef = digits_agree(fixef(refits$bobyqa), fixef(refits$nelder_mead)),
    loglik = digits_agree(logLik(refits$bobyqa), logLik(refits$nelder_mead)),
    default_loglik = digits_agree(logLik(m0), logLik(ref)))
  out <- c(list(name = name, dataset = spec$data, commands = spec$call,
                refit = "the call with control = glmerControl(optimizer = 'bobyqa', tolPwrss = 1e-12, optCtrl = list(rhoend = 1e-8, maxfun = 1e5)) (glmer.nb: update(m, control = ...))",
                formula = spec$formula, family = spec$family, link = spec$link, n_quad = spec$n_quad,
                versions = versions, agreement_digits = agree,
                default_fit = list(theta = I(unname(getME(m0, "theta"))), loglik = as.numeric(logLik(m0)))),
           s)
  if (spec$family == "negative_binomial") out$nb_theta <- getME(ref, "glmer.nb.theta")
  if (spec$n_quad > 1) {
    out$saturated_loglik <- sum(dbinom(cbpp_df$incidence, cbpp_df$size,
                                       cbpp_df$incidence / cbpp_df$size, log = TRUE))
  }
  if (!is.null(spec$tmb)) out$glmmTMB <- tmb(spec$tmb)
  writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE, null = "null"),
             file.path(out_dir, paste0(name, ".json")))
  cat(sprintf("%-30s loglik %.10f  digits: theta %.1f fixef %.1f loglik %.1f (default loglik %.1f)\n",
              name, s$loglik, agree$theta, agree$fixef, agree$loglik, agree$default_loglik))
}
