# Reference sandwiches for jaxmle.estimate (tests/test_estimate.py), computed without geex (not
# installable here): R's sandwich package on a glm, and direct matrix algebra in R.
#
# Run from the repository root:   Rscript tests/reference/estimate/make_r_estimate_fixtures.R
#
# 1. logit_birthwt: glm(low ~ age + lwt + smoke + ht + ui, binomial, birthwt). psi_i = the score
#    x_i (y_i - p_i). sandwich::sandwich(m) = A^-1 B A^-1 (HC0), vcovCL(m, cluster = ~age,
#    type = "HC0", cadjust = FALSE) (B over clusters: jaxmle's "sandwich" with groups) and
#    cadjust = TRUE (x G/(G-1): jaxmle's "cluster"). Fay's bias correction (geex
#    fay_bias_correction, b = 0.75) by direct algebra, units = observations and = age clusters:
#    B_bc = sum_u H_u psi_u psi_u' H_u, H_u = diag((1 - pmin(b, diag(A_u A^-1)))^-1/2).
# 2. ratio_mtcars: psi = (mpg - t1, hp - t2, t1 - t3 t2) (geex's ratio example): A is not symmetric.
#    theta in closed form, A, B and A^-1 B A^-T by direct algebra; Fay with A_i = A / n per row.
suppressMessages({library(sandwich); library(jsonlite)})
out_dir <- "tests/reference/estimate"
mat <- function(m) unname(as.matrix(m))
fay <- function(A_units, psi_units, A, b = 0.75) {
  Ainv <- solve(A)
  Bbc <- matrix(0, ncol(A), ncol(A))
  for (u in seq_along(A_units)) {
    H <- diag((1 - pmin(b, diag(A_units[[u]] %*% Ainv)))^(-0.5), ncol(A))
    Bbc <- Bbc + H %*% psi_units[[u]] %*% t(psi_units[[u]]) %*% H
  }
  Ainv %*% Bbc %*% t(Ainv)
}

bw <- read.csv("tests/reference/data/birthwt.csv")
m <- glm(low ~ age + lwt + smoke + ht + ui, family = binomial, data = bw)
X <- model.matrix(m); p <- fitted(m); psi <- X * (bw$low - p)
A_i <- lapply(seq_len(nrow(X)), function(i) p[i] * (1 - p[i]) * outer(X[i, ], X[i, ]))
A <- Reduce(`+`, A_i)
clusters <- split(seq_len(nrow(X)), bw$age)
A_g <- lapply(clusters, function(i) Reduce(`+`, A_i[i]))
psi_g <- lapply(clusters, function(i) colSums(psi[i, , drop = FALSE]))
out <- list(
  name = "logit_birthwt", dataset = "../data/birthwt.csv",
  call = "glm(low ~ age + lwt + smoke + ht + ui, family = binomial, data = bw)",
  param_names = names(coef(m)), params = unname(coef(m)),
  sandwich = mat(sandwich(m)),
  cluster_hc0 = mat(vcovCL(m, cluster = ~age, type = "HC0", cadjust = FALSE)),
  cluster_adjusted = mat(vcovCL(m, cluster = ~age, type = "HC0", cadjust = TRUE)),
  fay = fay(A_i, lapply(seq_len(nrow(X)), function(i) psi[i, ]), A),
  fay_cluster = fay(A_g, psi_g, A),
  n_clusters = length(clusters),
  versions = list(R = paste(R.version$major, R.version$minor, sep = "."),
                  sandwich = as.character(packageVersion("sandwich"))))
writeLines(toJSON(out, auto_unbox = TRUE, digits = I(17), pretty = TRUE),
           file.path(out_dir, "r_logit_birthwt.json"))

mt <- read.csv("tests/reference/data/mtcars.csv")
n <- nrow(mt)
t1 <- mean(mt$mpg); t2 <- mean(mt$hp); t3 <- t1 / t2
psi <- cbind(mt$mpg - t1, mt$hp - t2, t1 - t3 * t2)
A <- -rbind(c(-n, 0, 0), c(0, -n, 0), c(n, -n * t3, -n * t2))   # -sum dpsi/dtheta'
B <- crossprod(psi)
cov <- solve(A) %*% B %*% t(solve(A))
out <- list(
  name = "ratio_mtcars", dataset = "../data/mtcars.csv",
  psi = "(mpg - t1, hp - t2, t1 - t3 * t2)", params = c(t1, t2, t3), A = A, sandwich = cov,
  fay = fay(rep(list(A / n), n), lapply(seq_len(n), function(i) psi[i, ]), A),
  delta_check = sqrt(t3^2 * (var(mt$mpg) / t1^2 + var(mt$hp) / t2^2 -
                     2 * cov(mt$mpg, mt$hp) / (t1 * t2)) * (n - 1) / n / n),
  versions = list(R = paste(R.version$major, R.version$minor, sep = ".")))
writeLines(toJSON(out, auto_unbox = TRUE, digits = I(17), pretty = TRUE),
           file.path(out_dir, "r_ratio_mtcars.json"))
cat("se(ratio):", sqrt(cov[3, 3]), "delta method:", out$delta_check, "\n")
