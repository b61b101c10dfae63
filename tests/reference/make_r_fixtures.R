# Generate R reference fixtures for jaxmle.
#
# Run from the repository root:
#     Rscript tests/reference/make_r_fixtures.R
#
# Writes tests/reference/data/*.csv (the data exactly as fitted) and
# tests/reference/r_*.json (estimates, log-likelihood, covariances).
# Every model block below is kept as a string; it is evaluated verbatim and
# the same string is stored in the fixture's "commands" field.
#
# Needs: R >= 4.x with MASS, survival, sandwich, maxLik, geepack, numDeriv
# (numDeriv only for the internal cross-checks, not for stored numbers).

suppressPackageStartupMessages({
  library(MASS)
  library(survival)
  library(sandwich)
  library(maxLik)
  library(numDeriv)
})

out_dir <- "tests/reference"
data_dir <- file.path(out_dir, "data")
if (!dir.exists(out_dir)) stop("run from the repository root")
dir.create(data_dir, showWarnings = FALSE, recursive = TRUE)

ver <- function(p) as.character(packageVersion(p))
R_VER <- paste(R.version$major, R.version$minor, sep = ".")

# ----------------------------------------------------------------------------
# output helpers (no jsonlite: hand-written, every double as %.17g)
# ----------------------------------------------------------------------------
num17 <- function(x) {
  if (any(!is.finite(x))) stop("non-finite number in fixture")
  sprintf("%.17g", x)
}
json_str <- function(s) {
  s <- gsub("\\\\", "\\\\\\\\", s)
  s <- gsub("\"", "\\\\\"", s)
  s <- gsub("\n", "\\\\n", s)
  s <- gsub("\t", "\\\\t", s)
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
    body <- vapply(names(x), function(nm)
      paste0(ind2, json_str(nm), ": ", to_json(x[[nm]], ind2)), "")
    return(paste0("{\n", paste(body, collapse = ",\n"), "\n", ind, "}"))
  }
  as_array <- inherits(x, "AsIs") || length(x) != 1
  vals <- if (is.character(x)) vapply(x, json_str, "", USE.NAMES = FALSE)
          else if (is.logical(x)) tolower(as.character(x))
          else num17(as.numeric(x))
  if (as_array) paste0("[", paste(vals, collapse = ", "), "]") else vals
}

# CSV: integers as integers; doubles in the shortest of %.15g/%.16g/%.17g that
# reads back to the identical double (checked again after writing).
fmt_col <- function(v) {
  if (is.integer(v) || is.logical(v)) return(as.character(as.integer(v)))
  if (all(v == round(v)) && all(abs(v) < 2^52)) return(sprintf("%.0f", v))
  s <- sprintf("%.15g", v)
  bad <- as.numeric(s) != v
  s[bad] <- sprintf("%.16g", v[bad])
  bad <- as.numeric(s) != v
  s[bad] <- sprintf("%.17g", v[bad])
  s
}
write_data <- function(df, name) {
  stopifnot(!anyNA(df))
  cols <- lapply(df, fmt_col)
  lines <- c(paste(names(df), collapse = ","), do.call(paste, c(cols, sep = ",")))
  path <- file.path(data_dir, name)
  writeLines(lines, path)
  back <- read.csv(path)
  for (nm in names(df)) if (!identical(as.numeric(back[[nm]]), as.numeric(df[[nm]])))
    stop("CSV round trip failed for ", name, ":", nm)
  file.path("data", name)
}

sym <- function(m) (m + t(m)) / 2          # remove last-bit asymmetry
relmax <- function(a, b) max(abs(a - b)) / max(abs(b))
check <- function(label, a, b, tol) {
  r <- relmax(a, b)
  msg <- sprintf("%s: max rel diff %.3g", label, r)
  cat("   check ", msg, "\n")
  if (!(r < tol)) stop("FAILED ", msg)
  msg
}

write_fixture <- function(file, fx) {
  k <- length(fx$param_names)
  stopifnot(length(fx$params) == k)
  for (nm in names(fx$cov)) {
    m <- fx$cov[[nm]]
    stopifnot(is.matrix(m), nrow(m) == k, ncol(m) == k, isSymmetric(unname(m), tol = 0))
    stopifnot(all(eigen(m, symmetric = TRUE, only.values = TRUE)$values > 0))
  }
  fx$params <- I(unname(fx$params))
  fx$param_names <- I(fx$param_names)
  fx$cov <- lapply(fx$cov, unname)
  writeLines(to_json(fx), file.path(out_dir, file))
  cat("wrote", file.path(out_dir, file), "\n")
}

# relative size of one Newton step from the stored estimate: |A^-1 g| / |p|
newton_rel <- function(U, cov, p) {
  r <- max(abs(drop(cov %*% colSums(U))) / pmax(abs(p), 1e-3))
  cat(sprintf("   gradient max %.3g; Newton step rel %.3g\n", max(abs(colSums(U))), r))
  stopifnot(r < 1e-11)
  sprintf("relative Newton step at stored estimate %.3g", r)
}

run_block <- function(code) {
  env <- new.env(parent = globalenv())
  eval(parse(text = code), envir = env)
  env
}

# ============================================================================
# 1. Logit: geepack::ohio, resp ~ age + smoke, clustered by id
# ============================================================================
cat("== ohio logit\n")
code_ohio <- '
data("ohio", package = "geepack")
ohio <- ohio[, c("resp", "id", "age", "smoke")]
ctl <- glm.control(epsilon = 1e-14, maxit = 100)
m1 <- glm(resp ~ age + smoke, family = binomial(link = "logit"), data = ohio, control = ctl)
# refit from the converged estimate: glm stores the IRLS weights of its last
# iteration\x27s START point, so this makes vcov/estfun exactly at the final estimate
m <- glm(resp ~ age + smoke, family = binomial(link = "logit"), data = ohio, control = ctl,
         start = coef(m1))
stopifnot(m$converged)
cov_hessian  <- vcov(m)                      # canonical link: observed = expected information
cov_sandwich <- sandwich::sandwich(m)        # HC0
cov_opg      <- solve(crossprod(sandwich::estfun(m)))
cov_cluster  <- sandwich::vcovCL(m, cluster = ~id, type = "HC0", cadjust = TRUE)  # G/(G-1) only
loglik <- as.numeric(logLik(m))
'
e <- run_block(code_ohio)
with(e, {
  ds <- write_data(ohio, "ohio.csv")
  checks <- c(newton_rel(sandwich::estfun(m), cov_hessian, coef(m)),
    check("sqrt(diag(hessian)) vs summary SE", sqrt(diag(cov_hessian)),
          coef(summary(m))[, 2], 1e-12),
    check("sandwich vs vcovHC HC0", cov_sandwich, sandwich::vcovHC(m, type = "HC0"), 1e-12))
  # manual cluster check
  U <- sandwich::estfun(m); Uc <- rowsum(U, ohio$id); G <- nrow(Uc)
  checks <- c(checks, check("cluster vs manual", cov_cluster,
                            G / (G - 1) * cov_hessian %*% crossprod(Uc) %*% cov_hessian, 1e-10))
  write_fixture("r_logit_ohio.json", list(
    source = sprintf("R %s glm (stats) + sandwich %s; data geepack %s", R_VER, ver("sandwich"), ver("geepack")),
    dataset = ds, response = "resp", n_obs = nobs(m), model = "logit",
    description = "Bernoulli logit: P(resp=1) = 1/(1+exp(-eta)), eta = b0 + b_age*age + b_smoke*smoke; loglik = sum(resp*eta - log(1+exp(eta))).",
    param_names = names(coef(m)), params = coef(m), loglik = loglik,
    cov = list(hessian = sym(cov_hessian), sandwich = sym(cov_sandwich),
               opg = sym(cov_opg), cluster = sym(cov_cluster)),
    cluster_var = "id", n_clusters = G,
    commands = paste0(code_ohio, "\n# checks:\n# ", paste(checks, collapse = "\n# "))))
})

# ============================================================================
# 2. Probit: MASS::birthwt, low ~ age + lwt + smoke + ptl + ht + ui
# ============================================================================
cat("== birthwt probit\n")
code_probit <- '
data("birthwt", package = "MASS")
bw <- birthwt[, c("low", "age", "lwt", "smoke", "ptl", "ht", "ui")]
ctl <- glm.control(epsilon = 1e-14, maxit = 100)
f <- low ~ age + lwt + smoke + ptl + ht + ui
m1 <- glm(f, family = binomial(link = "probit"), data = bw, control = ctl)
# glm uses Fisher scoring (linear convergence for probit): polish with Newton on the
# observed information, then refit from there so the glm object sits at the MLE
X <- model.matrix(m1); y <- m1$y; q <- 2 * y - 1
b <- coef(m1)
for (it in 1:20) {
  eta <- drop(X %*% b)
  lam <- q * exp(dnorm(q * eta, log = TRUE) - pnorm(q * eta, log.p = TRUE))
  b <- b + solve(crossprod(X * (lam * (lam + eta)), X), colSums(X * lam))
}
m <- glm(f, family = binomial(link = "probit"), data = bw, control = ctl, start = b)
stopifnot(m$converged)
cov_expected <- vcov(m)            # glm (Fisher scoring): inverse EXPECTED information
# observed information of the probit log-likelihood, closed form:
#   l_i = log Phi(q_i eta_i), q_i = 2 y_i - 1, lambda_i = q_i phi(q_i eta_i) / Phi(q_i eta_i)
#   dl_i/deta = lambda_i,  d2l_i/deta2 = -lambda_i (lambda_i + eta_i)
eta <- m$linear.predictors
lam <- q * exp(dnorm(q * eta, log = TRUE) - pnorm(q * eta, log.p = TRUE))
A <- crossprod(X * (lam * (lam + eta)), X)       # = -Hessian (observed)
cov_hessian <- solve(A)
U <- sandwich::estfun(m)                         # per-obs score w.r.t. beta (= X * lambda)
cov_opg <- solve(crossprod(U))
cov_sandwich <- cov_hessian %*% crossprod(U) %*% cov_hessian   # HC0, observed-information bread
cov_sandwich_expected <- sandwich::sandwich(m)                 # HC0 with expected-information bread
loglik <- as.numeric(logLik(m))
'
e <- run_block(code_probit)
with(e, {
  ds <- write_data(bw, "birthwt.csv")
  llfun <- function(b) sum(pnorm(q * drop(X %*% b), log.p = TRUE))
  b <- coef(m)
  checks <- c(newton_rel(U, cov_hessian, b),
    check("polished vs glm Fisher-scoring estimate", coef(m), coef(m1), 1e-5),
    check("sqrt(diag(expected)) vs summary SE", sqrt(diag(cov_expected)), coef(summary(m))[, 2], 1e-12),
    check("loglik vs hand", llfun(b), loglik, 1e-13),
    check("score = X*lambda", U, X * lam, 1e-10),
    check("observed Hessian vs numDeriv", -A, numDeriv::hessian(llfun, b), 1e-6))
  cat("   max |gradient| at MLE:", max(abs(colSums(U))), "\n")
  write_fixture("r_probit_birthwt.json", list(
    source = sprintf("R %s glm (stats) + sandwich %s; data MASS %s; observed Hessian by closed form",
                     R_VER, ver("sandwich"), ver("MASS")),
    dataset = ds, response = "low", n_obs = nobs(m), model = "probit",
    description = "Bernoulli probit: P(low=1) = Phi(eta), eta = b0 + b_age*age + b_lwt*lwt + b_smoke*smoke + b_ptl*ptl + b_ht*ht + b_ui*ui; loglik = sum(low*log Phi(eta) + (1-low)*log(1-Phi(eta))). hessian = inverse OBSERVED information (closed form); expected = R glm vcov (inverse Fisher information); sandwich uses the observed-information bread; sandwich_expected = sandwich::sandwich(m) (expected-information bread).",
    param_names = names(b), params = b, loglik = loglik,
    cov = list(hessian = sym(cov_hessian), sandwich = sym(cov_sandwich), opg = sym(cov_opg),
               expected = sym(cov_expected), sandwich_expected = sym(cov_sandwich_expected)),
    cluster_var = NULL,
    commands = paste0(code_probit, "\n# checks:\n# ", paste(checks, collapse = "\n# "))))
})

# ============================================================================
# 3. Poisson: warpbreaks, breaks ~ wool + tension
# ============================================================================
cat("== warpbreaks poisson\n")
code_pois <- '
wb <- data.frame(breaks = as.integer(warpbreaks$breaks),
                 woolB = as.integer(warpbreaks$wool == "B"),
                 tensionM = as.integer(warpbreaks$tension == "M"),
                 tensionH = as.integer(warpbreaks$tension == "H"))
ctl <- glm.control(epsilon = 1e-14, maxit = 100)
m1 <- glm(breaks ~ woolB + tensionM + tensionH, family = poisson(link = "log"), data = wb, control = ctl)
m <- glm(breaks ~ woolB + tensionM + tensionH, family = poisson(link = "log"), data = wb, control = ctl,
         start = coef(m1))   # refit from the estimate so stored IRLS weights are at the final estimate
stopifnot(m$converged)
# identical to glm(breaks ~ wool + tension, family = poisson, data = warpbreaks)
cov_hessian  <- vcov(m)                    # canonical link: observed = expected
cov_sandwich <- sandwich::sandwich(m)      # HC0
cov_opg      <- solve(crossprod(sandwich::estfun(m)))
loglik <- as.numeric(logLik(m))
'
e <- run_block(code_pois)
with(e, {
  ds <- write_data(wb, "warpbreaks.csv")
  m0 <- glm(breaks ~ wool + tension, family = poisson, data = warpbreaks)
  checks <- c(newton_rel(sandwich::estfun(m), cov_hessian, coef(m)),
    check("same fit as factor formula", unname(coef(m)), unname(coef(m0)), 1e-8),
    check("sqrt(diag(hessian)) vs summary SE", sqrt(diag(cov_hessian)), coef(summary(m))[, 2], 1e-12),
    check("sandwich vs vcovHC HC0", cov_sandwich, sandwich::vcovHC(m, type = "HC0"), 1e-12))
  write_fixture("r_poisson_warpbreaks.json", list(
    source = sprintf("R %s glm (stats) + sandwich %s; data datasets::warpbreaks", R_VER, ver("sandwich")),
    dataset = ds, response = "breaks", n_obs = nobs(m), model = "poisson",
    description = "Poisson log link: breaks ~ Poisson(mu), log mu = b0 + b_woolB*woolB + b_tensionM*tensionM + b_tensionH*tensionH (treatment dummies, base wool A / tension L); loglik = sum(breaks*log mu - mu - lgamma(breaks+1)).",
    param_names = names(coef(m)), params = coef(m), loglik = loglik,
    cov = list(hessian = sym(cov_hessian), sandwich = sym(cov_sandwich), opg = sym(cov_opg)),
    cluster_var = NULL,
    commands = paste0(code_pois, "\n# checks:\n# ", paste(checks, collapse = "\n# "))))
})

# ============================================================================
# 4. Negative binomial NB2: MASS::quine, Days ~ Eth + Sex + Age + Lrn
# ============================================================================
cat("== quine NB2\n")
code_nb <- '
data("quine", package = "MASS")
qd <- data.frame(Days = quine$Days,
                 EthN = as.integer(quine$Eth == "N"), SexM = as.integer(quine$Sex == "M"),
                 AgeF1 = as.integer(quine$Age == "F1"), AgeF2 = as.integer(quine$Age == "F2"),
                 AgeF3 = as.integer(quine$Age == "F3"), LrnSL = as.integer(quine$Lrn == "SL"))
m0 <- MASS::glm.nb(Days ~ EthN + SexM + AgeF1 + AgeF2 + AgeF3 + LrnSL, data = qd,
                   control = glm.control(epsilon = 1e-14, maxit = 100))
# joint MLE in (beta, log_alpha), alpha = 1/theta, Var = mu + alpha*mu^2
X <- model.matrix(m0); y <- qd$Days; k <- ncol(X)
parts <- function(p) {
  eta <- drop(X %*% p[1:k]); th <- exp(-p[k + 1]); mu <- exp(eta)
  list(eta = eta, th = th, mu = mu)
}
ll_obs <- function(p) with(parts(p),
  lgamma(y + th) - lgamma(th) - lgamma(y + 1) + th * (log(th) - log(th + mu)) + y * (eta - log(th + mu)))
gr_obs <- function(p) with(parts(p), {
  l_th <- digamma(y + th) - digamma(th) + log(th) - log(th + mu) + (mu - y) / (th + mu)
  cbind(X * (th * (y - mu) / (th + mu)), -th * l_th)      # d/d beta, d/d log_alpha
})
hs <- function(p) with(parts(p), {
  l_th  <- digamma(y + th) - digamma(th) + log(th) - log(th + mu) + (mu - y) / (th + mu)
  l_thth <- trigamma(y + th) - trigamma(th) + 1 / th - 1 / (th + mu) - (mu - y) / (th + mu)^2
  l_theta_eta <- mu * (y - mu) / (th + mu)^2
  Hbb <- -crossprod(X * (th * mu * (th + y) / (th + mu)^2), X)
  Hba <- -th * colSums(X * l_theta_eta)
  Haa <- sum(th^2 * l_thth + th * l_th)
  rbind(cbind(Hbb, Hba), c(Hba, Haa))
})
fit <- maxLik::maxLik(logLik = ll_obs, grad = gr_obs, hess = hs,
                      start = c(coef(m0), log_alpha = -log(m0$theta)), method = "NR",
                      control = list(tol = -1, reltol = -1, gradtol = 1e-12, iterlim = 200))
p <- coef(fit)
cov_hessian  <- vcov(fit)                        # solve(-hs(p)), observed information
U <- gr_obs(p)
cov_opg      <- solve(crossprod(U))
cov_sandwich <- cov_hessian %*% crossprod(U) %*% cov_hessian   # HC0
loglik <- as.numeric(logLik(fit))
'
e <- run_block(code_nb)
with(e, {
  ds <- write_data(qd, "quine.csv")
  cat("   maxLik:", maxLik::returnMessage(fit), " iterations", fit$iterations, "\n")
  cat("   max |gradient| at MLE:", max(abs(colSums(U))), "\n")
  llsum <- function(p) sum(ll_obs(p))
  checks <- c(newton_rel(U, cov_hessian, p),
    check("beta vs glm.nb", p[1:k], coef(m0), 1e-7),
    check("theta vs glm.nb", exp(-p[k + 1]), m0$theta, 1e-6),
    check("loglik vs glm.nb twologlik/2", loglik, m0$twologlik / 2, 1e-10),
    check("loglik vs dnbinom", loglik,
          sum(dnbinom(y, size = exp(-p[k + 1]), mu = exp(drop(X %*% p[1:k])), log = TRUE)), 1e-12),
    check("analytic gradient vs numDeriv (at p + 0.05)", colSums(gr_obs(p + 0.05)), numDeriv::grad(llsum, p + 0.05), 1e-7),
    check("analytic Hessian vs numDeriv", hs(p), numDeriv::hessian(llsum, p), 1e-6),
    check("sandwich vs sandwich::sandwich(maxLik)", cov_sandwich, sandwich::sandwich(fit), 1e-10))
  stopifnot(max(abs(colSums(U))) < 1e-8)
  pn <- c(colnames(X), "log_alpha")
  write_fixture("r_negbin2_quine.json", list(
    source = sprintf("R %s MASS %s glm.nb (start) + maxLik %s NR with analytic gradient/Hessian; sandwich %s",
                     R_VER, ver("MASS"), ver("maxLik"), ver("sandwich")),
    dataset = ds, response = "Days", n_obs = length(y), model = "negbin2",
    description = "NB2: Days ~ NegBin(mean mu, Var = mu + alpha*mu^2), log mu = x'b with x = (1, EthN, SexM, AgeF1, AgeF2, AgeF3, LrnSL), alpha = exp(log_alpha) = 1/theta (MASS theta); loglik = sum(lgamma(y+theta) - lgamma(theta) - lgamma(y+1) + theta*log(theta/(theta+mu)) + y*log(mu/(theta+mu))). Joint MLE covariances over (b, log_alpha).",
    param_names = pn, params = p, loglik = loglik,
    cov = list(hessian = sym(cov_hessian), sandwich = sym(cov_sandwich), opg = sym(cov_opg)),
    cluster_var = NULL, glm_nb_theta = m0$theta,
    commands = paste0(code_nb, "\n# checks:\n# ", paste(checks, collapse = "\n# "))))
})

# ============================================================================
# 5. Censored Weibull AFT: survival::lung
# ============================================================================
cat("== lung weibull survreg\n")
code_weib <- '
lung2 <- survival::lung[, c("time", "status", "age", "sex", "ph.ecog")]
lung2 <- lung2[complete.cases(lung2), ]
lung2 <- data.frame(time = lung2$time, event = as.integer(lung2$status == 2),
                    age = lung2$age, sex = lung2$sex, ph.ecog = lung2$ph.ecog)
m <- survival::survreg(survival::Surv(time, event) ~ age + sex + ph.ecog, data = lung2,
                       dist = "weibull",
                       control = survival::survreg.control(rel.tolerance = 1e-13, maxiter = 100))
p <- c(coef(m), "Log(scale)" = log(m$scale))
cov_hessian  <- vcov(m)                                # includes Log(scale)
cov_sandwich <- sandwich::sandwich(m)                  # estfun.survreg / bread.survreg (HC0)
cov_opg      <- solve(crossprod(sandwich::estfun(m)))
loglik <- m$loglik[2]
'
e <- run_block(code_weib)
with(e, {
  ds <- write_data(lung2, "lung.csv")
  X <- model.matrix(m); k <- ncol(X); t <- lung2$time; d <- lung2$event
  ll_obs <- function(q) {
    s <- exp(q[k + 1]); w <- (log(t) - drop(X %*% q[1:k])) / s
    ifelse(d == 1, -log(s) - log(t) + w - exp(w), -exp(w))
  }
  llsum <- function(q) sum(ll_obs(q))
  Unum <- numDeriv::jacobian(ll_obs, p)
  Hnum <- numDeriv::hessian(llsum, p)
  U <- sandwich::estfun(m)
  # closed-form observed Hessian of the extreme-value log-likelihood in (beta, log sigma)
  hs_weib <- function(q) {
    s <- exp(q[k + 1]); w <- (log(t) - drop(X %*% q[1:k])) / s; ew <- exp(w)
    lw <- d - ew                                  # dl/dw ; d2l/dw2 = -exp(w)
    Hbb <- -crossprod(X * (ew / s^2), X)
    Hbs <- colSums(X * ((lw - w * ew) / s))
    Hss <- sum(w * lw - w^2 * ew)
    rbind(cbind(Hbb, Hbs), c(Hbs, Hss))
  }
  stopifnot(identical(colnames(cov_hessian), names(p)), identical(colnames(U), names(p)))
  checks <- c(newton_rel(U, cov_hessian, p),
    check("loglik vs hand (time scale, with Jacobian)", llsum(p), loglik, 1e-12),
    check("estfun vs numDeriv per-obs score", U, Unum, 1e-6),
    check("vcov vs inverse numDeriv observed Hessian", cov_hessian, solve(-Hnum), 1e-6),
    check("vcov vs inverse closed-form observed Hessian", cov_hessian, solve(-hs_weib(p)), 1e-10),
    check("sandwich vs manual A^-1 B A^-1", cov_sandwich, cov_hessian %*% crossprod(U) %*% cov_hessian, 1e-10),
    check("sqrt(diag) vs summary SE", sqrt(diag(cov_hessian)), summary(m)$table[, 2], 1e-12))
  cat("   max |gradient| at MLE:", max(abs(colSums(U))), "\n")
  write_fixture("r_weibull_lung.json", list(
    source = sprintf("R %s survival %s survreg + sandwich %s", R_VER, ver("survival"), ver("sandwich")),
    dataset = ds, response = "time", n_obs = nrow(lung2), model = "weibull_aft",
    description = "Right-censored Weibull AFT (survreg parametrisation): log(time) = eta + sigma*W, W ~ standard minimum extreme value, eta = b0 + b_age*age + b_sex*sex + b_ecog*ph.ecog (sex coded 1/2 as in lung), sigma = exp(Log(scale)); event = 1 death, 0 censored. With w = (log(time) - eta)/sigma: loglik_i = event*(w - log(sigma) - log(time)) - exp(w), i.e. density/survivor of time itself (includes the -log(time) Jacobian, as survreg's loglik[2]). Weibull shape = 1/sigma, scale = exp(eta).",
    param_names = names(p), params = p, loglik = loglik,
    cov = list(hessian = sym(cov_hessian), sandwich = sym(cov_sandwich), opg = sym(cov_opg)),
    cluster_var = NULL, event_col = "event",
    commands = paste0(code_weib, "\n# checks:\n# ", paste(checks, collapse = "\n# "))))
})

# ============================================================================
# 6. maxLik normal linear regression: mtcars, mpg ~ wt + hp
# ============================================================================
cat("== mtcars maxLik normal\n")
code_ml <- '
mt <- mtcars[, c("mpg", "wt", "hp")]
X <- cbind(1, mt$wt, mt$hp); y <- mt$mpg
ll_obs <- function(p) dnorm(y, mean = drop(X %*% p[1:3]), sd = exp(p[4]), log = TRUE)
gr_obs <- function(p) {
  e <- y - drop(X %*% p[1:3]); s2 <- exp(2 * p[4])
  cbind(X * (e / s2), e^2 / s2 - 1)
}
hs <- function(p) {
  e <- y - drop(X %*% p[1:3]); s2 <- exp(2 * p[4])
  Hbb <- -crossprod(X) / s2; Hbs <- -2 * colSums(X * e) / s2; Hss <- -2 * sum(e^2) / s2
  rbind(cbind(Hbb, Hbs), c(Hbs, Hss))
}
start <- c(b0 = mean(y), b_wt = 0, b_hp = 0, log_sigma = log(sd(y)))
fit_nr <- maxLik::maxLik(ll_obs, grad = gr_obs, hess = hs, start = start, method = "NR",
                         control = list(tol = -1, reltol = -1, gradtol = 1e-12, iterlim = 200))
p <- coef(fit_nr)
cov_hessian <- vcov(fit_nr)
fit_bhhh <- maxLik::maxLik(ll_obs, grad = gr_obs, start = p, method = "BHHH",
                           control = list(tol = -1, reltol = -1, gradtol = 1e-12, iterlim = 200))
cov_bhhh <- vcov(fit_bhhh)                              # solve(crossprod(gradientObs)) at BHHH optimum
cov_opg  <- solve(crossprod(gr_obs(p)))                 # stored: OPG at the NR optimum
cov_sandwich <- sandwich::sandwich(fit_nr)              # estfun.maxLik / bread.maxLik (HC0)
loglik <- as.numeric(logLik(fit_nr))
'
e <- run_block(code_ml)
with(e, {
  ds <- write_data(mt, "mtcars.csv")
  cat("   NR:", maxLik::returnMessage(fit_nr), fit_nr$iterations, "it; BHHH:",
      maxLik::returnMessage(fit_bhhh), fit_bhhh$iterations, "it\n")
  ols <- lm(mpg ~ wt + hp, data = mt); N <- nrow(mt)
  s2 <- sum(resid(ols)^2) / N
  U <- gr_obs(p)
  checks <- c(newton_rel(U, cov_hessian, p),
    check("beta vs lm", unname(p[1:3]), unname(coef(ols)), 1e-10),
    check("sigma vs sqrt(RSS/N)", exp(p[4]), sqrt(s2), 1e-10),
    check("loglik vs logLik(lm)", loglik, as.numeric(logLik(ols)), 1e-12),
    check("BHHH optimum vs NR optimum", coef(fit_bhhh), p, 1e-10),
    check("BHHH vcov vs solve(crossprod(gradient by obs)) at NR optimum", cov_bhhh, cov_opg, 1e-8),
    check("sandwich vs manual A^-1 B A^-1", cov_sandwich, cov_hessian %*% crossprod(U) %*% cov_hessian, 1e-10),
    check("hessian beta block vs sigma2 (XtX)^-1", cov_hessian[1:3, 1:3], s2 * solve(crossprod(X)), 1e-8),
    check("hessian log_sigma var vs 1/(2N)", cov_hessian[4, 4], 1 / (2 * N), 1e-8),
    check("sandwich beta block vs vcovHC(lm, HC0)", unname(cov_sandwich[1:3, 1:3]),
          unname(sandwich::vcovHC(ols, type = "HC0")), 1e-8))
  write_fixture("r_maxlik_normal_mtcars.json", list(
    source = sprintf("R %s maxLik %s (NR and BHHH, analytic gradient/Hessian) + sandwich %s",
                     R_VER, ver("maxLik"), ver("sandwich")),
    dataset = ds, response = "mpg", n_obs = N, model = "normal_linear",
    description = "Normal linear regression by ML: mpg ~ N(mu, sigma^2), mu = b0 + b_wt*wt + b_hp*hp, sigma = exp(log_sigma); loglik = sum(dnorm(mpg, mu, sigma, log=TRUE)). sigma^2 MLE = RSS/N.",
    param_names = names(p), params = p, loglik = loglik,
    cov = list(hessian = sym(cov_hessian), sandwich = sym(cov_sandwich), opg = sym(cov_opg),
               bhhh = sym(cov_bhhh)),
    cluster_var = NULL,
    commands = paste0(code_ml, "\n# checks:\n# ", paste(checks, collapse = "\n# "))))
})

# ============================================================================
# 7. Cluster-robust normal linear model: sandwich::PetersenCL, y ~ x, cluster firm
# ============================================================================
cat("== PetersenCL cluster\n")
code_pet <- '
data("PetersenCL", package = "sandwich")
pc <- PetersenCL[, c("firm", "x", "y")]
ols <- lm(y ~ x, data = pc)
X <- model.matrix(ols); e <- resid(ols); N <- nrow(X)
s2 <- sum(e^2) / N                                      # MLE of sigma^2
p <- c(coef(ols), log_sigma = log(sqrt(s2)))
# per-observation scores of l_i = -log(2 pi)/2 - log_sigma - e_i^2/(2 sigma^2)
U <- cbind(X * (e / s2), e^2 / s2 - 1)
# inverse observed information at the MLE: block diagonal (X\x27e = 0 at OLS)
cov_hessian <- matrix(0, 3, 3)
cov_hessian[1:2, 1:2] <- s2 * solve(crossprod(X)); cov_hessian[3, 3] <- 1 / (2 * N)
cov_sandwich <- cov_hessian %*% crossprod(U) %*% cov_hessian               # HC0
Uc <- rowsum(U, pc$firm); G <- nrow(Uc)
cov_cluster <- G / (G - 1) * cov_hessian %*% crossprod(Uc) %*% cov_hessian  # G/(G-1), no (N-1)/(N-k)
cov_opg <- solve(crossprod(U))
loglik <- -N / 2 * (log(2 * pi * s2) + 1)
'
e <- run_block(code_pet)
with(e, {
  ds <- write_data(pc, "petersen.csv")
  A_full <- -rbind(cbind(-crossprod(X) / s2, -2 * colSums(X * e) / s2),
                   c(-2 * colSums(X * e) / s2, -2 * N))
  checks <- c(
    check("loglik vs logLik(lm)", loglik, as.numeric(logLik(ols)), 1e-13),
    check("hessian vs solve(full analytic -Hessian incl. cross terms)", cov_hessian, solve(A_full), 1e-10),
    check("cluster beta block vs vcovCL(lm, ~firm, HC0, cadjust=TRUE)", unname(cov_cluster[1:2, 1:2]),
          unname(sandwich::vcovCL(ols, cluster = ~firm, type = "HC0", cadjust = TRUE)), 1e-10),
    check("sandwich beta block vs vcovHC(lm, HC0)", unname(cov_sandwich[1:2, 1:2]),
          unname(sandwich::vcovHC(ols, type = "HC0")), 1e-10))
  dimnames(cov_hessian) <- list(names(p), names(p))
  write_fixture("r_normal_cluster_petersen.json", list(
    source = sprintf("R %s lm (stats) + sandwich %s (PetersenCL data, vcovCL/vcovHC checks)", R_VER, ver("sandwich")),
    dataset = ds, response = "y", n_obs = N, model = "normal_linear",
    description = "Normal linear regression by ML: y ~ N(mu, sigma^2), mu = b0 + b_x*x, sigma = exp(log_sigma), sigma^2 = RSS/N. Covariances for the full vector (b0, b_x, log_sigma) from per-observation scores (x*e/sigma^2, e^2/sigma^2 - 1); cluster = A^-1 (sum_g U_g U_g') A^-1 * G/(G-1), G = 500 firms. Off-diagonal (beta, log_sigma) entries of hessian are exactly 0; in sandwich/cluster/opg they are small but nonzero.",
    param_names = c("(Intercept)", "x", "log_sigma"), params = p, loglik = loglik,
    cov = list(hessian = sym(cov_hessian), sandwich = sym(cov_sandwich), opg = sym(cov_opg),
               cluster = sym(cov_cluster)),
    cluster_var = "firm", n_clusters = G,
    commands = paste0(code_pet, "\n# checks:\n# ", paste(checks, collapse = "\n# "))))
})

cat("done\n")
