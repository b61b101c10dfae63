# R gmm reference fixtures for jaxmle.gmm (tests/test_gmm.py).
#
# Run from the repository root (after make_linearmodels_fixtures.py wrote data/mroz.csv):
#   Rscript tests/reference/gmm/make_r_gmm_fixtures.R
#
# 1. The linear wage equation (Mroz, 428 working women): lwage ~ exper + expersq + educ, instruments
#    exper, expersq, motheduc, fatheduc, huseduc (m = 6, k = 4). gmm's formula interface solves each
#    step in closed form; its two-step and iterative start from 2SLS. vcov = "MDS" (heteroskedastic
#    S = sum g g' / n), centeredVcov = FALSE unless the name says centered. Stored: coefficients,
#    vcov (the efficient (G'S^-1G)^-1/n at the estimate for twoStep / iterative, the sandwich for
#    wmatrix = "ident"), specTest J.
# 2. A nonlinear exponential-mean IV model on all 753 women: hours/1000 = exp(x'b) + e, x = (1, educ,
#    exper, expersq, kidslt6, nwifeinc), educ instrumented by motheduc, fatheduc, huseduc (m = 8,
#    k = 6): moments z_i (y_i - exp(x_i'b)). twoStep starts with W = I (gmm's first step for a
#    function g), each step minimised by nlminb with the analytic gradient 2 G'W gbar (passed through
#    gmm's ... to nlminb) at rel.tol = x.tol = 1e-15; the largest gradient entry of the last step's
#    objective at the answer is stored (grad_norm) to show it is a minimum.
suppressMessages({library(gmm); library(jsonlite)})
out_dir <- "tests/reference/gmm"
mroz <- read.csv("tests/reference/data/mroz.csv")
work <- mroz[!is.na(mroz$lwage), ]
save <- function(name, fit, call, extra = list()) {
  j <- specTest(fit)$test
  out <- c(list(name = name, dataset = "../data/mroz.csv", call = call,
                param_names = names(coef(fit)), params = unname(coef(fit)),
                cov = unname(vcov(fit)), j_stat = as.numeric(unclass(j)[1, 1]), j_df = fit$df,
                versions = list(R = paste(R.version$major, R.version$minor, sep = "."),
                                gmm = as.character(packageVersion("gmm")))), extra)
  writeLines(toJSON(out, auto_unbox = TRUE, digits = I(17), pretty = TRUE),
             file.path(out_dir, paste0("r_", name, ".json")))
  cat(name, signif(coef(fit), 8), "J", as.numeric(unclass(j)[1, 1]), "\n")
}
H <- ~ exper + expersq + motheduc + fatheduc + huseduc
f <- lwage ~ exper + expersq + educ
calls <- list(
  two_step = 'gmm(f, H, data = work, type = "twoStep", vcov = "MDS", centeredVcov = FALSE)',
  two_step_centered = 'gmm(f, H, data = work, type = "twoStep", vcov = "MDS", centeredVcov = TRUE)',
  iterated = 'gmm(f, H, data = work, type = "iterative", vcov = "MDS", centeredVcov = FALSE, crit = 1e-13, itermax = 10000)',
  identity = 'gmm(f, H, data = work, wmatrix = "ident", vcov = "MDS", centeredVcov = FALSE)')
for (name in names(calls)) save(paste0("linear_", name), eval(parse(text = calls[[name]])), calls[[name]])

## nonlinear exponential mean with instruments
X <- cbind(1, mroz$educ, mroz$exper, mroz$expersq, mroz$kidslt6, mroz$nwifeinc)
Z <- cbind(1, mroz$exper, mroz$expersq, mroz$kidslt6, mroz$nwifeinc, mroz$motheduc, mroz$fatheduc,
           mroz$huseduc)
Y <- mroz$hours / 1000
dat <- cbind(Y, X, Z)
g <- function(b, d) { e <- d[, 1] - exp(d[, 2:7] %*% b); d[, 8:15] * as.vector(e) }
dg <- function(b, d) { mu <- as.vector(exp(d[, 2:7] %*% b)); -crossprod(d[, 8:15], mu * d[, 2:7]) / nrow(d) }
t0 <- coef(glm(Y ~ X - 1, family = quasipoisson))
objective_gradient <- function(b, x, w) {   # gmm's .obj1 is gbar' W gbar (W = w, or solve(w))
  gb <- colMeans(g(b, dat)); G <- dg(b, dat)
  as.vector(2 * t(G) %*% (if (isTRUE(attr(w, "inv"))) solve(w, gb) else w %*% gb))
}
call <- 'gmm(g, dat, t0 = t0, gradv = dg, type = "twoStep", vcov = "MDS", centeredVcov = FALSE, optfct = "nlminb", gradient = objective_gradient, control = list(rel.tol = 1e-15, x.tol = 1e-15, eval.max = 10000, iter.max = 10000))'
fit <- eval(parse(text = call))
grad <- objective_gradient(coef(fit), NULL, fit$w0)
save("exponential_two_step", fit, call,
     list(t0 = unname(t0), grad_norm = max(abs(grad)),
          model = "hours/1000 = exp(x'b), x = (1, educ, exper, expersq, kidslt6, nwifeinc); z = (1, exper, expersq, kidslt6, nwifeinc, motheduc, fatheduc, huseduc); all 753 rows"))
