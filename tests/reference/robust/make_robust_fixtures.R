# Reference numbers for jaxmle's robust covariance kinds and model tests (issue 12).
#
# Run from the repository root:
#     Rscript tests/reference/robust/make_robust_fixtures.R
#
# Writes tests/reference/data/{petersen_firm_year,usmacrog,seatbelts}.csv (real data that R
# packages ship, exactly as fitted) and tests/reference/robust/*.json. Every block of R code is a
# string, evaluated verbatim and stored in the fixture's "commands", so each number's call is on
# record. Covariances are stored in coefficient order (R's coef() names).
#
#   cluster_petersen.json  sandwich::vcovCL two-way / three-way (PetersenCL), its options
#   hac.json               sandwich::NeweyWest / kernHAC / bwNeweyWest / bwAndrews (AER::USMacroG,
#                          datasets::Seatbelts)
#   hc_glm.json            sandwich::vcovHC(type = "HC0".."HC3") of glm fits (warpbreaks, birthwt,
#                          mtcars)
#   imtest.json            White's IM test, OPG form, computed directly (closed-form u_i and H_i)
#   vuong.json             Vuong's test as nonnest2::vuongtest computes it (nonnest2 itself is not
#                          installable here: its formula is coded below from its source, 0.5-8)
#
# Needs R >= 4 with sandwich, AER (USMacroG), MASS (birthwt).

suppressPackageStartupMessages({
  library(sandwich)
  library(MASS)
})

out_dir <- "tests/reference/robust"
data_dir <- "tests/reference/data"
if (!dir.exists(out_dir)) stop("run from the repository root")
VERSIONS <- sprintf("R %s.%s, sandwich %s, AER %s, MASS %s", R.version$major, R.version$minor,
                    packageVersion("sandwich"), packageVersion("AER"), packageVersion("MASS"))

# ---------------------------------------------------------------- output (every double as %.17g)
num17 <- function(x) {
  if (any(!is.finite(x))) stop("non-finite number in fixture")
  sprintf("%.17g", x)
}
json <- function(x, ind = "") {
  ind2 <- paste0(ind, "  ")
  if (is.matrix(x)) {
    rows <- vapply(seq_len(nrow(x)), function(i)
      paste0("[", paste(num17(x[i, ]), collapse = ", "), "]"), "")
    return(paste0("[\n", paste0(ind2, rows, collapse = ",\n"), "\n", ind, "]"))
  }
  if (is.list(x)) {
    body <- vapply(names(x), function(nm)
      paste0(ind2, "\"", nm, "\": ", json(x[[nm]], ind2)), "")
    return(paste0("{\n", paste(body, collapse = ",\n"), "\n", ind, "}"))
  }
  if (is.character(x)) {
    s <- gsub("\\\\", "\\\\\\\\", x)
    s <- gsub("\"", "\\\\\"", s)
    s <- gsub("\n", "\\\\n", s)
    s <- paste0("\"", s, "\"")
    return(if (length(x) == 1 && !inherits(x, "AsIs")) s else paste0("[", paste(s, collapse = ", "), "]"))
  }
  v <- num17(as.numeric(x))
  if (length(x) == 1 && !inherits(x, "AsIs")) v else paste0("[", paste(v, collapse = ", "), "]")
}
write_json <- function(x, file) {
  writeLines(json(x), file.path(out_dir, file))
  cat("wrote", file.path(out_dir, file), "\n")
}
write_csv <- function(df, file) {            # integers as such, other doubles at %.17g
  path <- file.path(data_dir, file)
  cols <- lapply(df, function(v) if (all(v == round(v))) sprintf("%.0f", v) else sprintf("%.17g", v))
  writeLines(c(paste(names(df), collapse = ","), do.call(paste, c(cols, sep = ","))), path)
  back <- read.csv(path)
  for (nm in names(df)) if (!identical(as.numeric(back[[nm]]), as.numeric(df[[nm]])))
    stop("CSV round trip changed ", file, ":", nm)
  cat("wrote", path, "\n")
}
run <- function(code) {
  env <- new.env(parent = globalenv())
  eval(parse(text = code), envir = env)
  env
}
# a glm refitted from its own converged estimate: vcov, estfun and hatvalues then refer to the
# final estimate exactly (glm keeps the IRLS weights of its last iteration's start)
polish <- function(m) glm(formula(m), family = family(m), data = m$data, start = coef(m),
                          control = glm.control(epsilon = 1e-15, maxit = 100))

# ================================================================ 1. multi-way clustering
cat("== PetersenCL clustering\n")
code_cluster <- '
data("PetersenCL", package = "sandwich")
pc <- PetersenCL
pc$z <- (pc$firm + 3 * pc$year) %% 8          # a third factor crossing firm and year
m <- lm(y ~ x, data = pc)
cl <- list(
  two_way     = vcovCL(m, cluster = ~ firm + year, type = "HC0"),
  multi0      = vcovCL(m, cluster = ~ firm + year, type = "HC0", multi0 = TRUE),
  no_cadjust  = vcovCL(m, cluster = ~ firm + year, type = "HC0", cadjust = FALSE),
  hc1         = vcovCL(m, cluster = ~ firm + year, type = "HC1"),
  three_way   = vcovCL(m, cluster = ~ firm + year + z, type = "HC0"),
  one_way_year = vcovCL(m, cluster = ~ year, type = "HC0"))
mb <- glm(I(y > 0) ~ x, family = binomial, data = pc, control = glm.control(epsilon = 1e-15))
logit_two_way <- vcovCL(mb, cluster = ~ firm + year, type = "HC0")
md <- lm(y ~ x + factor(year), data = pc)     # year dummies: the two-way meat is not PSD
dummies <- vcovCL(md, cluster = ~ firm + year, type = "HC0")
dummies_fix <- vcovCL(md, cluster = ~ firm + year, type = "HC0", fix = TRUE)
'
e <- run(code_cluster)
write_csv(e$pc[, c("firm", "year", "z", "x", "y")], "petersen_firm_year.csv")
stopifnot(min(eigen(e$dummies, only.values = TRUE)$values) < 0)
write_json(list(
  source = VERSIONS, data = "data/petersen_firm_year.csv", commands = code_cluster,
  lm = list(coef = coef(e$m), cov = e$cl),
  logit = list(coef = coef(e$mb), two_way = e$logit_two_way),
  dummies = list(coef = coef(e$md), names = I(names(coef(e$md))), two_way = e$dummies,
                 two_way_fix = e$dummies_fix)
), "cluster_petersen.json")

# ================================================================ 2. HAC
cat("== HAC\n")
code_hac <- '
data("USMacroG", package = "AER")
um <- data.frame(time = as.numeric(time(USMacroG)), as.data.frame(USMacroG))[-1, ]
um <- um[, c("time", "inflation", "unemp", "tbill")]   # inflation is NA in the first quarter
m <- lm(inflation ~ unemp + tbill, data = um)
nw <- function(...) NeweyWest(m, prewhite = FALSE, ...)
kh <- function(...) kernHAC(m, prewhite = FALSE, adjust = FALSE, ...)
lm_hac <- list(
  lag4         = nw(lag = 4, adjust = FALSE),
  lag0         = nw(lag = 0, adjust = FALSE),
  lag4_adjust  = nw(lag = 4, adjust = TRUE),
  auto         = nw(adjust = FALSE),
  qs_andrews   = kh(kernel = "Quadratic Spectral"),
  bartlett_andrews = kh(kernel = "Bartlett"),
  qs_newey_west = kh(kernel = "Quadratic Spectral",
                     bw = bwNeweyWest(m, kernel = "Quadratic Spectral", prewhite = FALSE)),
  qs_fixed     = kh(kernel = "Quadratic Spectral", bw = 3.5))
lm_bw <- list(
  newey_west_bartlett = bwNeweyWest(m, kernel = "Bartlett", prewhite = FALSE),
  newey_west_qs = bwNeweyWest(m, kernel = "Quadratic Spectral", prewhite = FALSE),
  andrews_qs = bwAndrews(m, kernel = "Quadratic Spectral", prewhite = FALSE),
  andrews_bartlett = bwAndrews(m, kernel = "Bartlett", prewhite = FALSE))
sb <- data.frame(time = seq_len(nrow(Seatbelts)), as.data.frame(Seatbelts))
sb <- sb[, c("time", "DriversKilled", "kms", "PetrolPrice", "law")]
g <- glm(DriversKilled ~ law + log(kms) + PetrolPrice, family = poisson, data = sb,
         control = glm.control(epsilon = 1e-15, maxit = 100))
g <- polish(g)
glm_hac <- list(
  lag3 = NeweyWest(g, lag = 3, prewhite = FALSE, adjust = FALSE),
  auto = NeweyWest(g, prewhite = FALSE, adjust = FALSE),
  qs_andrews = kernHAC(g, kernel = "Quadratic Spectral", prewhite = FALSE, adjust = FALSE))
glm_bw <- list(
  newey_west_bartlett = bwNeweyWest(g, kernel = "Bartlett", prewhite = FALSE),
  andrews_qs = bwAndrews(g, kernel = "Quadratic Spectral", prewhite = FALSE))
'
e <- run(code_hac)
write_csv(e$um, "usmacrog.csv")
write_csv(e$sb, "seatbelts.csv")
write_json(list(
  source = VERSIONS, data = I(c("data/usmacrog.csv", "data/seatbelts.csv")), commands = code_hac,
  lm = list(coef = coef(e$m), cov = e$lm_hac, bandwidth = e$lm_bw),
  glm = list(coef = coef(e$g), cov = e$glm_hac, bandwidth = e$glm_bw)
), "hac.json")

# ================================================================ 3. HC0..HC3 of glm fits
cat("== vcovHC\n")
code_hc <- '
wb <- read.csv("tests/reference/data/warpbreaks.csv")
bw <- read.csv("tests/reference/data/birthwt.csv")
mt <- read.csv("tests/reference/data/mtcars.csv")
types <- c("HC0", "HC1", "HC2", "HC3")
models <- list(
  poisson_warpbreaks = polish(glm(breaks ~ woolB + tensionM + tensionH, family = poisson, data = wb)),
  probit_birthwt = polish(glm(low ~ age + lwt + smoke + ptl + ht + ui,
                              family = binomial(link = "probit"), data = bw)),
  logit_birthwt = polish(glm(low ~ age + lwt + smoke + ht, family = binomial, data = bw)),
  gaussian_mtcars = polish(glm(mpg ~ wt + hp, family = gaussian, data = mt)))
hc <- lapply(models, function(m) c(list(coef = coef(m), hat = hatvalues(m)),
                                   setNames(lapply(types, function(t) vcovHC(m, type = t)), types)))
lm_check <- vcovHC(lm(mpg ~ wt + hp, data = mt), type = "HC3")
'
e <- run(code_hc)
stopifnot(max(abs(e$lm_check - e$hc$gaussian_mtcars$HC3)) < 1e-12 * max(abs(e$lm_check)))
write_json(c(list(source = VERSIONS, commands = code_hc), e$hc), "hc_glm.json")

# ================================================================ 4. information-matrix test
cat("== IM test\n")
code_im <- '
# White (1982) OPG form: n R^2 of 1 on Z = [u_i, vech(u_i u_i\x27 + H_i)], df = rank(Z) - rank(U)
im_opg <- function(U, H) {                       # H: n x k x k per-observation Hessians
  k <- ncol(U); n <- nrow(U)
  idx <- which(upper.tri(diag(k), diag = TRUE), arr.ind = TRUE)
  D <- sapply(seq_len(nrow(idx)), function(j) {
    a <- idx[j, 1]; b <- idx[j, 2]; U[, a] * U[, b] + H[, a, b] })
  Z <- cbind(U, D)
  fit <- lm(rep(1, n) ~ 0 + Z)
  list(statistic = n - sum(residuals(fit)^2), df = qr(Z)$rank - qr(U)$rank)
}
outer_rows <- function(X, w) array(t(apply(X, 1, function(x) x %o% x)) * w,
                                   c(nrow(X), ncol(X), ncol(X)))
wb <- read.csv("tests/reference/data/warpbreaks.csv")
mp <- polish(glm(breaks ~ woolB + tensionM + tensionH, family = poisson, data = wb))
X <- model.matrix(mp); mu <- fitted(mp)
poisson <- c(im_opg((wb$breaks - mu) * X, outer_rows(X, -mu)), list(coef = coef(mp)))
bw <- read.csv("tests/reference/data/birthwt.csv")
ml <- polish(glm(low ~ age + lwt + smoke + ht, family = binomial, data = bw))
X <- model.matrix(ml); p <- fitted(ml)
logit <- c(im_opg((bw$low - p) * X, outer_rows(X, -p * (1 - p))), list(coef = coef(ml)))
mt <- read.csv("tests/reference/data/mtcars.csv")
mn <- lm(mpg ~ wt + hp, data = mt)                 # normal ML: (b, log sigma), sigma^2 = RSS / n
X <- model.matrix(mn); e <- residuals(mn); s2 <- mean(e^2); n <- nrow(X); k <- ncol(X)
U <- cbind(e * X / s2, -1 + e^2 / s2)
H <- array(0, c(n, k + 1, k + 1))
H[, 1:k, 1:k] <- outer_rows(X, -1 / s2)
H[, 1:k, k + 1] <- -2 * e * X / s2
H[, k + 1, 1:k] <- -2 * e * X / s2
H[, k + 1, k + 1] <- -2 * e^2 / s2
normal <- c(im_opg(U, H), list(coef = c(coef(mn), log_sigma = log(sqrt(s2)))))
'
e <- run(code_im)
write_json(list(source = VERSIONS, commands = code_im, poisson_warpbreaks = e$poisson,
                logit_birthwt = e$logit, normal_mtcars = e$normal), "imtest.json")

# ================================================================ 5. Vuong
cat("== Vuong\n")
code_vuong <- '
# nonnest2::vuongtest (0.5-8, R/vuongtest.R): omega^2 = (n-1)/n var(l1 - l2), lr = sum(l1 - l2)
# minus (k1 - k2) [adj = "aic"] or (k1 - k2) log(n) / 2 [adj = "bic"], k = length(coef(m)),
# z = lr / (sqrt(n) omega); p_LRT$A = P(Z > z), $B = P(Z < z)
vuong <- function(l1, l2, k1, k2, adj) {
  n <- length(l1)
  omega2 <- (n - 1) / n * var(l1 - l2)
  lr <- sum(l1 - l2) - switch(adj, none = 0, aic = k1 - k2, bic = (k1 - k2) * log(n) / 2)
  z <- lr / (sqrt(n) * sqrt(omega2))
  list(statistic = z, p_first = pnorm(z, lower.tail = FALSE), p_second = pnorm(z), omega = sqrt(omega2))
}
bw <- read.csv("tests/reference/data/birthwt.csv")
m1 <- polish(glm(low ~ age + lwt + smoke + ht, family = binomial(link = "logit"), data = bw))
m2 <- polish(glm(low ~ age + lwt + smoke + ptl + ht + ui, family = binomial(link = "probit"),
                 data = bw))
l1 <- dbinom(bw$low, 1, fitted(m1), log = TRUE); l2 <- dbinom(bw$low, 1, fitted(m2), log = TRUE)
stopifnot(abs(sum(l1) - logLik(m1)) < 1e-10, abs(sum(l2) - logLik(m2)) < 1e-10)
birthwt <- lapply(c(none = "none", aic = "aic", bic = "bic"),
                  function(a) vuong(l1, l2, length(coef(m1)), length(coef(m2)), a))
mt <- read.csv("tests/reference/data/mtcars.csv")
n1 <- lm(mpg ~ wt, data = mt); n2 <- lm(mpg ~ hp + I(hp^2), data = mt)
ll_lm <- function(m) dnorm(mt$mpg, fitted(m), sqrt(mean(residuals(m)^2)), log = TRUE)
stopifnot(abs(sum(ll_lm(n1)) - logLik(n1)) < 1e-10)
mtcars_lm <- lapply(c(none = "none", aic = "aic", bic = "bic"),
                    function(a) vuong(ll_lm(n1), ll_lm(n2), length(coef(n1)), length(coef(n2)), a))
n3 <- lm(mpg ~ wt + hp, data = mt)  # as many coefficients as n2: the corrections vanish
mtcars_same_k <- list(none = vuong(ll_lm(n3), ll_lm(n2), 3, 3, "none"))
'
e <- run(code_vuong)
write_json(list(source = VERSIONS, commands = code_vuong, birthwt = e$birthwt,
                mtcars = e$mtcars_lm, mtcars_same_k = e$mtcars_same_k), "vuong.json")
