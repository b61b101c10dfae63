# R reference fixtures for jaxmle.lmer (lme4::lmer, with glmmTMB beside it).
#
# Run from the repository root:
#     Rscript tests/reference/mixed/make_lmer_fixtures.R
#
# Writes tests/reference/data/lmer_{sleepstudy,penicillin,pastes,dyestuff2,simulated_cor1}.csv (the datasets lme4 ships; sleepstudy
# with two derived columns for the weights/offset fit) and tests/reference/mixed/lmer_*.json.
#
# lmer's default optimiser stops when its own tolerance is met, which leaves theta a few units in the
# 5th-6th digit short on some of these models. Every model is therefore refitted with two optimisers
# at tight tolerances (minqa's bobyqa, lme4's Nelder_Mead); the fixture holds the bobyqa refit, and
# records the default fit and how many digits the two tight refits agree on ("agreement").
# Each model's R call is stored verbatim in the fixture's "commands".

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

sleep <- sleepstudy
sleep$w <- 1 + (sleep$Days %% 3) / 2          # precision weights for the weighted fit
sleep$off <- 0.5 * sleep$Days                 # an offset
write.csv(sleep, file.path(data_dir, "lmer_sleepstudy.csv"), row.names = FALSE)
write.csv(Penicillin, file.path(data_dir, "lmer_penicillin.csv"), row.names = FALSE)
write.csv(Pastes, file.path(data_dir, "lmer_pastes.csv"), row.names = FALSE)
write.csv(Dyestuff2, file.path(data_dir, "lmer_dyestuff2.csv"), row.names = FALSE)
# a simulated boundary fit with a correlation of +1 (slopes proportional to intercepts)
set.seed(1)
sim <- data.frame(g = factor(rep(seq_len(30), each = 6)), x = rep(seq(0, 1, length = 6), 30))
b0 <- rnorm(30, 0, 1)
sim$y <- 1 + 0.5 * sim$x + b0[sim$g] * (1 + 0.8 * sim$x) + rnorm(180, 0, 1)
write.csv(sim, file.path(data_dir, "lmer_simulated_cor1.csv"), row.names = FALSE)

tight <- list(
  bobyqa = lmerControl(optimizer = "bobyqa",
                       optCtrl = list(rhoend = 1e-12, maxfun = 1e5)),
  nelder_mead = lmerControl(optimizer = "Nelder_Mead",
                            optCtrl = list(FtolAbs = 1e-15, FtolRel = 1e-15, XtolRel = 1e-13,
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
    condsd <- if (is.list(pv)) do.call(cbind, lapply(pv, function(a) sqrt(a[1, 1, ])))
              else t(sapply(seq_len(nrow(r)), function(i) sqrt(diag(pv[, , i, drop = TRUE]))))
    if (ncol(r) == 1) condsd <- matrix(sqrt(pv[1, 1, ]), ncol = 1)
    list(levels = I(rownames(r)), columns = I(colnames(r)), values = unname(as.matrix(r)),
         condsd = unname(as.matrix(condsd)))
  })
  names(ranefs) <- names(re)
  list(
    fixef_names = I(names(fixef(m))), fixef = I(unname(fixef(m))),
    se = I(unname(sqrt(diag(as.matrix(vcov(m)))))), vcov = unname(as.matrix(vcov(m))),
    theta = I(unname(getME(m, "theta"))), sigma = sigma(m),
    loglik = as.numeric(logLik(m)), df = attr(logLik(m), "df"),
    aic = AIC(m), bic = BIC(m), nobs = nobs(m),
    varcorr = list(grp = vc$grp, var1 = ifelse(is.na(vc$var1), "", vc$var1),
                   var2 = ifelse(is.na(vc$var2), "", vc$var2), vcov = vc$vcov, sdcor = vc$sdcor),
    ngrps = as.list(ngrps(m)), ranef = ranefs, singular = isSingular(m)
  )
}

tmb_fit <- function(formula, data, reml) {
  if (!has_tmb) return(NULL)
  m <- glmmTMB::glmmTMB(formula, data = data, REML = reml)
  V <- vcov(m, full = TRUE)
  list(call = sprintf("glmmTMB::glmmTMB(%s, data, REML = %s)", deparse(formula), reml),
       loglik = as.numeric(logLik(m)), fixef = unname(glmmTMB::fixef(m)$cond),
       se_fixef = unname(sqrt(diag(vcov(m)$cond))),
       par_names = colnames(V),
       # with REML = TRUE the fixed effects are integrated out and not in fit$par
       par = unname(if (reml) c(glmmTMB::fixef(m)$cond, m$fit$par) else m$fit$par),
       se_par = unname(sqrt(diag(V))))
}

models <- list(
  lmer_sleepstudy_corr_reml = list(
    call = "lmer(Reaction ~ Days + (Days | Subject), sleep, REML = TRUE)",
    formula = "Reaction ~ Days + (Days | Subject)", reml = TRUE, data = "lmer_sleepstudy"),
  lmer_sleepstudy_corr_ml = list(
    call = "lmer(Reaction ~ Days + (Days | Subject), sleep, REML = FALSE)",
    formula = "Reaction ~ Days + (Days | Subject)", reml = FALSE, data = "lmer_sleepstudy"),
  lmer_sleepstudy_uncorr_reml = list(
    call = "lmer(Reaction ~ Days + (Days || Subject), sleep, REML = TRUE)",
    formula = "Reaction ~ Days + (Days || Subject)", reml = TRUE, data = "lmer_sleepstudy"),
  lmer_sleepstudy_uncorr_ml = list(
    call = "lmer(Reaction ~ Days + (Days || Subject), sleep, REML = FALSE)",
    formula = "Reaction ~ Days + (Days || Subject)", reml = FALSE, data = "lmer_sleepstudy"),
  lmer_sleepstudy_quadratic_ml = list(
    call = "lmer(Reaction ~ Days + (Days + I(Days^2) | Subject), sleep, REML = FALSE)",
    formula = "Reaction ~ Days + (Days + I(Days**2) | Subject)", reml = FALSE,
    data = "lmer_sleepstudy"),
  lmer_sleepstudy_weights_offset_reml = list(
    call = "lmer(Reaction ~ Days + (Days | Subject), sleep, weights = w, offset = off, REML = TRUE)",
    formula = "Reaction ~ Days + (Days | Subject)", reml = TRUE, data = "lmer_sleepstudy",
    weights = "w", offset = "off"),
  lmer_penicillin_crossed_reml = list(
    call = "lmer(diameter ~ 1 + (1 | plate) + (1 | sample), Penicillin, REML = TRUE)",
    formula = "diameter ~ 1 + (1 | plate) + (1 | sample)", reml = TRUE, data = "lmer_penicillin"),
  lmer_penicillin_crossed_ml = list(
    call = "lmer(diameter ~ 1 + (1 | plate) + (1 | sample), Penicillin, REML = FALSE)",
    formula = "diameter ~ 1 + (1 | plate) + (1 | sample)", reml = FALSE, data = "lmer_penicillin"),
  lmer_pastes_nested_reml = list(
    call = "lmer(strength ~ 1 + (1 | batch/cask), Pastes, REML = TRUE)",
    formula = "strength ~ 1 + (1 | batch/cask)", reml = TRUE, data = "lmer_pastes"),
  lmer_pastes_sample_batch_ml = list(
    call = "lmer(strength ~ 1 + (1 | sample) + (1 | batch), Pastes, REML = FALSE)",
    formula = "strength ~ 1 + (1 | sample) + (1 | batch)", reml = FALSE, data = "lmer_pastes"),
  lmer_pastes_sample_cask_singular_reml = list(
    call = "lmer(strength ~ 1 + (1 | sample) + (1 | cask), Pastes, REML = TRUE)",
    formula = "strength ~ 1 + (1 | sample) + (1 | cask)", reml = TRUE, data = "lmer_pastes"),
  lmer_pastes_cask_singular_reml = list(
    call = "lmer(strength ~ 1 + (1 | cask), Pastes, REML = TRUE)",
    formula = "strength ~ 1 + (1 | cask)", reml = TRUE, data = "lmer_pastes"),
  lmer_dyestuff2_singular_reml = list(
    call = "lmer(Yield ~ 1 + (1 | Batch), Dyestuff2, REML = TRUE)",
    formula = "Yield ~ 1 + (1 | Batch)", reml = TRUE, data = "lmer_dyestuff2"),
  lmer_simulated_cor1_singular_reml = list(
    call = "lmer(y ~ x + (x | g), sim, REML = TRUE)",
    formula = "y ~ x + (x | g)", reml = TRUE, data = "lmer_simulated_cor1")
)

for (name in names(models)) {
  spec <- models[[name]]
  m0 <- suppressWarnings(suppressMessages(eval(parse(text = spec$call))))
  refits <- lapply(tight, function(ctrl) suppressWarnings(suppressMessages(update(m0, control = ctrl))))
  ref <- refits$bobyqa
  s <- summarise_fit(ref)
  agree <- list(
    theta = digits_agree(getME(refits$bobyqa, "theta"), getME(refits$nelder_mead, "theta")),
    fixef = digits_agree(fixef(refits$bobyqa), fixef(refits$nelder_mead)),
    loglik = digits_agree(logLik(refits$bobyqa), logLik(refits$nelder_mead)),
    default_theta = digits_agree(getME(m0, "theta"), getME(ref, "theta")),
    default_loglik = digits_agree(logLik(m0), logLik(ref)))
  out <- c(list(name = name, dataset = paste0("data/", spec$data, ".csv"), commands = spec$call,
                refit = "update(m, control = lmerControl(optimizer = 'bobyqa', optCtrl = list(rhoend = 1e-12, maxfun = 1e5)))",
                formula = spec$formula, reml = spec$reml,
                weights = if (is.null(spec$weights)) "" else spec$weights,
                offset = if (is.null(spec$offset)) "" else spec$offset,
                versions = versions, agreement_digits = agree,
                default_fit = list(theta = I(unname(getME(m0, "theta"))), loglik = as.numeric(logLik(m0)))),
           s)
  if (grepl("sleepstudy_corr", name)) {
    out$glmmTMB <- tmb_fit(Reaction ~ Days + (Days | Subject), sleep, spec$reml)
  }
  writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE, null = "null"),
             file.path(out_dir, paste0(name, ".json")))
  cat(sprintf("%-38s loglik %.10f  digits: theta %.1f loglik %.1f (default theta %.1f)\n", name,
              s$loglik, agree$theta, agree$loglik, agree$default_theta))
}
