# R reference fixtures for jaxmle.glm and the censored families.
#
# Run from the repository root:
#     Rscript tests/reference/glm/make_r_glm_fixtures.R
#
# Writes tests/reference/data/<name>.csv (the data as fitted, NA for missing) and
# tests/reference/glm/r_*.json. Every model block is a string that is evaluated verbatim and stored in
# the fixture's "commands" field. Fits are polished (glm.control(epsilon = 1e-14) and a refit from the
# converged estimate, so vcov() refers to the final estimate exactly; see ../README.md).
#
# Needs: R >= 4.x with MASS and survival.

suppressPackageStartupMessages({
  library(MASS)
  library(survival)
})

out_dir <- "tests/reference/glm"
data_dir <- "tests/reference/data"
if (!dir.exists(out_dir)) stop("run from the repository root")
R_VER <- paste(R.version$major, R.version$minor, sep = ".")
ver <- function(p) as.character(packageVersion(p))

# ---- output helpers: every double as %.17g (jsonlite rounds to 15 digits)
num17 <- function(x) ifelse(is.na(x), "NaN", sprintf("%.17g", x))
json_str <- function(s) {
  s <- gsub("\\\\", "\\\\\\\\", s); s <- gsub("\"", "\\\\\"", s)
  s <- gsub("\n", "\\\\n", s); s <- gsub("\t", "\\\\t", s)
  paste0("\"", s, "\"")
}
to_json <- function(x, ind = "") {
  ind2 <- paste0(ind, "  ")
  if (is.null(x)) return("null")
  if (is.matrix(x)) {
    rows <- vapply(seq_len(nrow(x)), function(i)
      paste0("[", paste(num17(x[i, ]), collapse = ", "), "]"), "")
    return(paste0("[\n", paste0(ind2, rows, collapse = ",\n"), "\n", ind, "]"))
  }
  if (is.list(x)) {
    body <- vapply(names(x), function(nm) paste0(ind2, json_str(nm), ": ", to_json(x[[nm]], ind2)), "")
    return(paste0("{\n", paste(body, collapse = ",\n"), "\n", ind, "}"))
  }
  as_array <- inherits(x, "AsIs") || length(x) != 1
  vals <- if (is.character(x)) vapply(x, json_str, "", USE.NAMES = FALSE)
          else if (is.logical(x)) tolower(as.character(x)) else num17(as.numeric(x))
  if (as_array) paste0("[", paste(vals, collapse = ", "), "]") else vals
}
fmt_col <- function(v) {
  if (is.character(v) || is.factor(v)) return(as.character(v))
  out <- ifelse(is.na(v), "NA", sprintf("%.17g", v))
  ok <- !is.na(v)
  for (d in c(15, 16)) {
    s <- sprintf(paste0("%.", d, "g"), v[ok])
    short <- as.numeric(s) == v[ok] & nchar(s) < nchar(out[ok])
    out[ok][short] <- s[short]
  }
  out
}
write_data <- function(df, name) {
  path <- file.path(data_dir, name)
  lines <- c(paste(names(df), collapse = ","), do.call(paste, c(lapply(df, fmt_col), sep = ",")))
  writeLines(lines, path)
  back <- read.csv(path, stringsAsFactors = FALSE)
  for (nm in names(df)) {
    a <- df[[nm]]; b <- back[[nm]]
    same <- if (is.numeric(a)) identical(is.na(a), is.na(b)) && all(a[!is.na(a)] == b[!is.na(b)])
            else identical(as.character(a), as.character(b))
    if (!same) stop("CSV round trip failed for ", name, ":", nm)
  }
  file.path("data", name)
}
write_fixture <- function(file, fx) {
  writeLines(to_json(fx), file.path(out_dir, file))
  cat("wrote", file.path(out_dir, file), "\n")
}
run_block <- function(code) {
  env <- new.env(parent = globalenv())
  eval(parse(text = code), envir = env)
  env
}
# factor levels in byte (C-locale) order, the order formulaic and pandas use
cfactor <- function(x) factor(as.character(x), levels = sort(unique(as.character(x)), method = "radix"))

# ---- the numbers every GLM fixture stores
glm_numbers <- function(m, data, rows, extra = list()) {
  newdata <- data[rows, ]
  s <- summary(m)
  w <- m$prior.weights
  n_ok <- sum(w != 0)
  pr_link <- predict(m, newdata = newdata, type = "link", se.fit = TRUE)
  pr_resp <- predict(m, newdata = newdata, type = "response", se.fit = TRUE)
  c(list(
    coef_names = I(names(coef(m))), coef = I(unname(coef(m))),
    cov_summary = unname(s$cov.scaled), dispersion = s$dispersion,
    deviance = deviance(m), null_deviance = m$null.deviance,
    df_residual = m$df.residual, df_null = m$df.null,
    pearson_chi2 = sum(residuals(m, type = "pearson")^2),
    loglik_r = as.numeric(logLik(m)), aic_r = AIC(m), nobs = n_ok,
    n_dropped = length(m$na.action),
    predict_rows = I(as.integer(rows - 1L)),  # 0-based positions in the CSV
    predict_link = I(unname(pr_link$fit)), predict_se_link = I(unname(pr_link$se.fit)),
    predict_response = I(unname(pr_resp$fit)), predict_se_response = I(unname(pr_resp$se.fit)),
    converged = m$converged), extra)
}
# refit from the estimate until it stops moving: Fisher scoring converges only linearly for
# non-canonical links, and the last refit makes vcov() refer to the final estimate
polish <- function(m) {
  for (i in 1:50) {
    cl <- m$call
    cl$start <- unname(coef(m))
    cl$control <- glm.control(epsilon = 1e-14, maxit = 100)
    m2 <- eval(cl, parent.frame())
    stopifnot(m2$converged)
    moved <- max(abs(coef(m2) - coef(m)) / pmax(abs(coef(m)), 1e-8))
    m <- m2
    if (moved < 1e-13) break
  }
  m
}
ctl <- glm.control(epsilon = 1e-14, maxit = 100)

# the pure-MLE numbers: gaussian sigma^2 = deviance / n (precision weights); Gamma shape from
# MASS::gamma.shape (prior weights as precisions, expected-information SE)
mle_gaussian <- function(m) {
  n <- sum(m$prior.weights != 0); s2 <- deviance(m) / n
  list(scale_mle = sqrt(s2), scale_se_mle = sqrt(s2 / (2 * n)),
       cov_mle = unname(summary(m, dispersion = s2)$cov.scaled))
}
mle_gamma <- function(m) {
  gs <- MASS::gamma.shape(m, it.lim = 100, eps.max = 1e-10)
  mu <- fitted(m); y <- m$y; A <- m$prior.weights
  list(shape_mle = gs$alpha, shape_se_mle = gs$SE,
       cov_mle = unname(summary(m, dispersion = 1 / gs$alpha)$cov.scaled),
       loglik_mle = sum(dgamma(y, shape = A * gs$alpha, rate = A * gs$alpha / mu, log = TRUE)))
}

fixtures <- list()
add <- function(name, dataset, code, fx) {
  fx$source <- sprintf("R %s stats::glm, MASS %s, survival %s", R_VER, ver("MASS"), ver("survival"))
  fx$dataset <- dataset
  fx$commands <- code
  write_fixture(paste0(name, ".json"), fx)
}

# ============================================================================
# binomial logit, categorical predictor: MASS::birthwt
# ============================================================================
code <- '
bw <- MASS::birthwt
bw$race <- cfactor(c("white", "black", "other")[bw$race])
bw <- bw[, c("low", "age", "lwt", "race", "smoke", "ptl", "ht", "ui")]
m <- polish(glm(low ~ age + lwt + race + smoke + ptl + ht + ui, family = binomial, data = bw,
                control = ctl))
m_cll <- polish(glm(low ~ age + lwt + race + smoke + ptl + ht + ui,
                    family = binomial(link = "cloglog"), data = bw, control = ctl))
'
e <- run_block(code)
ds <- write_data(e$bw, "birthwt_race.csv")
add("r_glm_binomial_logit_birthwt", ds, code, c(list(
  family = "binomial", link = "logit", formula = "low ~ age + lwt + race + smoke + ptl + ht + ui"),
  glm_numbers(e$m, e$bw, c(1, 50, 100, 189))))
add("r_glm_binomial_cloglog_birthwt", ds, code, c(list(
  family = "binomial", link = "cloglog", formula = "low ~ age + lwt + race + smoke + ptl + ht + ui"),
  glm_numbers(e$m_cll, e$bw, c(1, 50, 100, 189))))

# ============================================================================
# binomial probit, proportions with trials as prior weights: MASS::menarche
# ============================================================================
code <- '
mn <- MASS::menarche
mn$prop <- mn$Menarche / mn$Total
m <- polish(glm(prop ~ Age, family = binomial(link = "probit"), weights = Total, data = mn,
                control = ctl))
# the same model in the two-column form gives the same fit
m2 <- glm(cbind(Menarche, Total - Menarche) ~ Age, family = binomial(link = "probit"),
          data = mn, control = ctl, start = coef(m))
stopifnot(max(abs(coef(m2) / coef(m) - 1)) < 1e-8, abs(logLik(m2) - logLik(m)) < 1e-10)
'
e <- run_block(code)
ds <- write_data(e$mn, "menarche.csv")
add("r_glm_binomial_probit_menarche", ds, code, c(list(
  family = "binomial", link = "probit", formula = "prop ~ Age", weights = "Total"),
  glm_numbers(e$m, e$mn, c(1, 10, 25))))

# ============================================================================
# poisson log, offset, categorical predictors: MASS::Insurance
# ============================================================================
code <- '
ins <- MASS::Insurance
ins <- data.frame(District = as.integer(ins$District),
                  Group = cfactor(paste0("G", as.integer(ins$Group))),
                  Age = cfactor(paste0("A", as.integer(ins$Age))),
                  Holders = ins$Holders, Claims = ins$Claims)
m <- polish(glm(Claims ~ factor(District) + Group + Age + offset(log(Holders)), family = poisson,
                data = ins, control = ctl))
'
e <- run_block(code)
ds <- write_data(e$ins, "insurance.csv")
add("r_glm_poisson_insurance", ds, code, c(list(
  family = "poisson", link = "log", formula = "Claims ~ C(District) + Group + Age",
  offset = "log(Holders)"),
  glm_numbers(e$m, e$ins, c(1, 17, 40, 64))))

# ============================================================================
# gaussian identity with weights, gaussian log link, Gamma inverse: mtcars
# ============================================================================
code <- '
mt <- mtcars[, c("mpg", "wt", "hp", "cyl", "carb")]
rownames(mt) <- NULL
m_gw <- polish(glm(mpg ~ wt + hp + factor(cyl), family = gaussian, weights = carb, data = mt,
                   control = ctl))
m_glog <- polish(glm(mpg ~ wt + hp, family = gaussian(link = "log"), data = mt, control = ctl))
m_gam <- polish(glm(mpg ~ wt + hp, family = Gamma, data = mt, control = ctl))
'
e <- run_block(code)
ds <- write_data(e$mt, "mtcars_glm.csv")
rows <- c(1, 16, 32)
add("r_glm_gaussian_weights_mtcars", ds, code, c(list(
  family = "gaussian", link = "identity", formula = "mpg ~ wt + hp + C(cyl)", weights = "carb"),
  glm_numbers(e$m_gw, e$mt, rows, mle_gaussian(e$m_gw))))
add("r_glm_gaussian_log_mtcars", ds, code, c(list(
  family = "gaussian", link = "log", formula = "mpg ~ wt + hp"),
  glm_numbers(e$m_glog, e$mt, rows, mle_gaussian(e$m_glog))))
add("r_glm_gamma_inverse_mtcars", ds, code, c(list(
  family = "gamma", link = "inverse", formula = "mpg ~ wt + hp"),
  glm_numbers(e$m_gam, e$mt, rows, mle_gamma(e$m_gam))))

# ============================================================================
# Gamma log link, missing values and a transform; the same with weights: airquality
# ============================================================================
code <- '
aq <- airquality[, c("Ozone", "Solar.R", "Wind", "Temp", "Month")]
m <- polish(glm(Ozone ~ Temp + log(Wind) + Solar.R, family = Gamma(link = "log"), data = aq,
                control = ctl))
m_w <- polish(glm(Ozone ~ Temp + log(Wind) + Solar.R, family = Gamma(link = "log"), data = aq,
                  weights = Month, control = ctl))
'
e <- run_block(code)
ds <- write_data(e$aq, "airquality.csv")
rows <- c(1, 5, 10, 30, 153)  # 5: Solar.R missing (NA prediction); 10: Ozone missing
add("r_glm_gamma_log_airquality", ds, code, c(list(
  family = "gamma", link = "log", formula = "Ozone ~ Temp + np.log(Wind) + `Solar.R`"),
  glm_numbers(e$m, e$aq, rows, mle_gamma(e$m))))
add("r_glm_gamma_log_weights_airquality", ds, code, c(list(
  family = "gamma", link = "log", formula = "Ozone ~ Temp + np.log(Wind) + `Solar.R`",
  weights = "Month"),
  glm_numbers(e$m_w, e$aq, rows, mle_gamma(e$m_w))))

# ============================================================================
# negative binomial: MASS::quine with factors (glm.nb)
# ============================================================================
code <- '
qn <- MASS::quine[, c("Days", "Eth", "Sex", "Age", "Lrn")]
qn[] <- lapply(qn, function(v) if (is.factor(v)) cfactor(v) else v)
m0 <- glm.nb(Days ~ Eth + Sex + Age + Lrn, data = qn, control = ctl)
m <- glm.nb(Days ~ Eth + Sex + Age + Lrn, data = qn, control = ctl, init.theta = m0$theta,
            start = coef(m0))
# joint score of (beta, theta) at the stored estimate, from the closed forms
X <- model.matrix(m); y <- qn$Days; mu <- fitted(m); th <- m$theta
g_beta <- colSums(X * (y - mu) * th / (mu + th))
g_theta <- sum(digamma(th + y) - digamma(th) + log(th) + 1 - log(th + mu) - (y + th) / (mu + th))
stopifnot(max(abs(g_beta)) < 1e-8, abs(g_theta) < 1e-8)
'
e <- run_block(code)
ds <- write_data(e$qn, "quine_factors.csv")
add("r_glm_negbin_quine", ds, code, c(list(
  family = "negative_binomial", link = "log", formula = "Days ~ Eth + Sex + Age + Lrn"),
  glm_numbers(e$m, e$qn, c(1, 73, 146), list(
    theta = e$m$theta, theta_se = e$m$SE.theta, loglik_mle = e$m$twologlik / 2,
    score_max = max(abs(c(e$g_beta, e$g_theta)))))))

# ============================================================================
# survreg: Tobit (survival::tobin), exponential and lognormal survival (lung)
# ============================================================================
code <- '
tb <- survival::tobin
m <- survreg(Surv(durable, durable > 0, type = "left") ~ age + quant, data = tb, dist = "gaussian",
             control = survreg.control(rel.tolerance = 1e-13, maxiter = 100))
'
e <- run_block(code)
ds <- write_data(e$tb, "tobin.csv")
add("r_survreg_tobit_tobin", ds, code, list(
  model = "Censored(Normal(x'b, exp(log_scale)), lower=0)", formula = "durable ~ age + quant",
  param_names = I(c(names(coef(e$m)), "Log(scale)")), params = I(unname(c(coef(e$m), log(e$m$scale)))),
  cov = unname(vcov(e$m)), loglik = e$m$loglik[2]))

code <- '
lung <- read.csv("tests/reference/data/lung.csv")
m_exp <- survreg(Surv(time, event) ~ age + sex + ph.ecog, data = lung, dist = "exponential",
                 control = survreg.control(rel.tolerance = 1e-13, maxiter = 100))
m_ln <- survreg(Surv(time, event) ~ age + sex + ph.ecog, data = lung, dist = "lognormal",
                control = survreg.control(rel.tolerance = 1e-13, maxiter = 100))
'
e <- run_block(code)
add("r_survreg_exponential_lung", "data/lung.csv", code, list(
  model = "RightCensored(Exponential(rate=exp(-x'b)), event)", formula = "time ~ age + sex + ph.ecog",
  param_names = I(names(coef(e$m_exp))), params = I(unname(coef(e$m_exp))),
  cov = unname(vcov(e$m_exp)), loglik = e$m_exp$loglik[2]))
add("r_survreg_lognormal_lung", "data/lung.csv", code, list(
  model = "RightCensored(LogNormal(x'b, exp(log_scale)), event)", formula = "time ~ age + sex + ph.ecog",
  param_names = I(c(names(coef(e$m_ln)), "Log(scale)")),
  params = I(unname(c(coef(e$m_ln), log(e$m_ln$scale)))),
  cov = unname(vcov(e$m_ln)), loglik = e$m_ln$loglik[2]))

cat("done\n")
