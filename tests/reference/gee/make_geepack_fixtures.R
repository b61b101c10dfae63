# geepack reference fixtures for jaxmle.gee (tests/test_gee.py).
#
# Run from the repository root:   Rscript tests/reference/gee/make_geepack_fixtures.R
# Writes tests/reference/gee/geepack_*.json and the data CSVs it fits, tests/reference/data/gee_*.csv.
#
# Every fit is geepack::geeglm at a tight tolerance, geese.control(epsilon = 1e-12, maxit = 500), so the
# numbers are geepack's fixed point (its default epsilon = 1e-4 stops ~1e-5 away from it). geepack needs
# the rows of a cluster to be contiguous and, for ar1/unstructured, in wave order: each data set is
# sorted by (id, time) here before geeglm sees it; the CSVs keep their original row order (jaxmle must
# not depend on it). Stored per fit:
#   beta, vbeta (std.err = "san.se"), vbeta_naiv, alpha, gamma (the scale), QIC(fit) (geepack's QIC:
#   refits with corstr = "independence"), error (geepack's convergence flag, 0 = converged), and
#   bias_reduced: the Mancl-DeRouen covariance computed below by direct matrix algebra from geepack's
#   estimates (an independent implementation), with checks that the same algebra reproduces geepack's
#   vbeta and vbeta.naiv (robust_check, naive_check: max relative differences).
suppressMessages({library(geepack); library(MASS); library(jsonlite)})

out_dir <- "tests/reference/gee"
data_dir <- "tests/reference/data"
ctrl <- geese.control(epsilon = 1e-12, maxit = 500)

write_csv <- function(df, name) write.csv(df, file.path(data_dir, name), row.names = FALSE)

## ------------------------------------------------------------------ data sets
data(ohio); ohio <- ohio
write_csv(ohio, "gee_ohio.csv")
# ohio with rows removed: unequal clusters, missing waves (gaps), some clusters of size one
keep <- with(ohio, ((id * 7 + (age + 2) * 3) %% 5) != 0)   # sizes 3 and 4, any wave missing
ohio_gaps <- ohio[keep, ]
write_csv(ohio_gaps, "gee_ohio_gaps.csv")

data(dietox)
dietox <- dietox[, c("Weight", "Feed", "Time", "Pig", "Evit", "Cu", "Litter")]
dietox$Pig <- as.integer(as.character(dietox$Pig))
dietox$Cu <- as.character(dietox$Cu)
dietox$w <- 1 + (dietox$Time %% 3) / 2      # weights for the weighted fit
write_csv(dietox, "gee_dietox.csv")

data(respiratory)
respiratory$sid <- respiratory$center * 1000 + respiratory$id
respiratory$treat <- as.character(respiratory$treat)
respiratory$sex <- as.character(respiratory$sex)
write_csv(respiratory, "gee_respiratory.csv")

epil <- MASS::epil
epil$trt <- as.character(epil$trt)
write_csv(epil, "gee_epil.csv")

data(seizure)
seiz <- reshape(seizure, varying = list(c("base", "y1", "y2", "y3", "y4")),
                v.names = "y", times = 0:4, direction = "long")
seiz$t <- ifelse(seiz$time == 0, 8, 2)
seiz$x <- ifelse(seiz$time == 0, 0, 1)
seiz <- seiz[, c("id", "time", "y", "trt", "age", "t", "x")]
# a row order that is not by cluster: geepack would silently treat these rows as other clusters
write_csv(seiz, "gee_seizure.csv")

## ------------------------------------------------------------------ direct algebra (the check)
corr_matrix <- function(corstr, alpha, waves, K) {
  n <- length(waves)
  if (n == 1 || corstr == "independence") return(diag(n))
  if (corstr == "exchangeable") { R <- matrix(alpha[1], n, n); diag(R) <- 1; return(R) }
  if (corstr == "ar1") return(alpha[1] ^ abs(outer(waves, waves, "-")))
  full <- diag(K)
  pairs <- which(upper.tri(full), arr.ind = TRUE)
  pairs <- pairs[order(pairs[, 1], pairs[, 2]), , drop = FALSE]  # geepack's order: 1:2, 1:3, .., 2:3, ..
  full[pairs] <- alpha
  full[pairs[, 2:1, drop = FALSE]] <- alpha
  full[waves, waves, drop = FALSE]
}

direct_algebra <- function(X, y, off, w, beta, alpha, phi, id, waves, fam, corstr) {
  eta <- as.vector(X %*% beta) + off
  mu <- fam$linkinv(eta); dmu <- fam$mu.eta(eta); vv <- fam$variance(mu)
  K <- max(waves)
  D <- dmu / sqrt(vv) * X; PR <- (y - mu) / sqrt(vv)
  p <- ncol(X); A <- matrix(0, p, p); Us <- list(); Ks <- list(); Ds <- list(); PRs <- list()
  for (g in unique(id)) {
    i <- which(id == g)
    R <- corr_matrix(corstr, alpha, waves[i], K)
    Kg <- diag(sqrt(w[i]), length(i)) %*% solve(phi * R) %*% diag(sqrt(w[i]), length(i))
    Dg <- D[i, , drop = FALSE]
    A <- A + t(Dg) %*% Kg %*% Dg
    Us[[length(Us) + 1]] <- t(Dg) %*% Kg %*% PR[i]
    Ks[[length(Ks) + 1]] <- Kg; Ds[[length(Ds) + 1]] <- Dg; PRs[[length(PRs) + 1]] <- PR[i]
  }
  Ainv <- solve(A)
  B <- Reduce(`+`, lapply(Us, function(u) u %*% t(u)))
  Bmd <- matrix(0, p, p)
  for (j in seq_along(Ks)) {
    Dg <- Ds[[j]]; Kg <- Ks[[j]]
    H <- Dg %*% Ainv %*% t(Dg) %*% Kg
    u <- t(Dg) %*% Kg %*% solve(diag(nrow(H)) - H, PRs[[j]])
    Bmd <- Bmd + u %*% t(u)
  }
  list(naive = Ainv, robust = Ainv %*% B %*% Ainv, bias_reduced = Ainv %*% Bmd %*% Ainv, mu = mu)
}

maxrel <- function(a, b) max(abs(a - b)) / max(abs(b))

# geepack's own iteration (gee2.cc, gee_est), written out in R: one Fisher-scoring step for beta, then
# the scale gamma = sum w PR^2 / sum w, then alpha (a pair average for exchangeable/unstructured, one
# Gauss-Newton step for ar1), until the largest change is below epsilon. Used where geepack 1.3.9
# itself segfaults (unstructured with a missing interior wave); checked against geepack on the fits
# where geepack runs (direct_check).
gee_direct <- function(formula, df, fam, id, waves, corstr, w = rep(1, nrow(df)), eps = 1e-13) {
  X <- model.matrix(formula, df); y <- model.response(model.frame(formula, df))
  off <- model.offset(model.frame(formula, df)); if (is.null(off)) off <- 0
  beta <- glm.fit(X, y, weights = w, offset = if (length(off) == 1) NULL else off,
                  family = fam)$coefficients
  K <- max(waves); ids <- unique(id)
  alpha <- if (corstr == "unstructured") rep(0, K * (K - 1) / 2) else 0
  pairs <- which(upper.tri(diag(K)), arr.ind = TRUE); pairs <- pairs[order(pairs[, 1], pairs[, 2]), ]
  state <- function(beta) {
    eta <- as.vector(X %*% beta) + off; mu <- fam$linkinv(eta); vv <- fam$variance(mu)
    list(D = fam$mu.eta(eta) / sqrt(vv) * X, PR = (y - mu) / sqrt(vv))
  }
  phi <- { s <- state(beta); sum(w * s$PR^2) / sum(w) }
  for (it in 1:1000) {
    s <- state(beta); p <- ncol(X); A <- matrix(0, p, p); U <- rep(0, p)
    for (g in ids) {
      i <- which(id == g); R <- corr_matrix(corstr, alpha, waves[i], K)
      Kg <- diag(sqrt(w[i]), length(i)) %*% solve(R) %*% diag(sqrt(w[i]), length(i))
      A <- A + t(s$D[i, , drop = FALSE]) %*% Kg %*% s$D[i, , drop = FALSE]
      U <- U + t(s$D[i, , drop = FALSE]) %*% Kg %*% s$PR[i]
    }
    step <- solve(A, U); beta <- beta + as.vector(step)
    s <- state(beta); phi_new <- sum(w * s$PR^2) / sum(w)
    e <- s$PR / sqrt(phi_new)
    num <- matrix(0, K, K); den <- matrix(0, K, K)
    for (g in ids) {
      i <- which(id == g); wv <- waves[i]
      num[wv, wv] <- num[wv, wv] + outer(w[i] * e[i], w[i] * e[i])
      den[wv, wv] <- den[wv, wv] + outer(w[i], w[i])
    }
    if (corstr == "unstructured") alpha_new <- num[pairs] / den[pairs]
    else if (corstr == "exchangeable") alpha_new <- sum(num[upper.tri(num)]) / sum(den[upper.tri(den)])
    else stop("gee_direct: corstr")
    change <- max(abs(c(step, phi_new - phi, alpha_new - alpha)))
    phi <- phi_new; alpha <- alpha_new
    if (change < eps) break
  }
  list(beta = beta, alpha = alpha, gamma = phi, iterations = it)
}

## ------------------------------------------------------------------ fits
fits <- list()
add <- function(name, data_csv, df, formula, family, id, time, corstr, weights = NULL,
                description = "", engine = "geepack") {
  df <- df[order(df[[id]], if (is.null(time)) seq_len(nrow(df)) else df[[time]]), ]
  df$.id <- df[[id]]
  df$.w <- if (is.null(weights)) 1 else df[[weights]]
  waves <- if (is.null(time)) ave(seq_len(nrow(df)), df$.id, FUN = seq_along)
           else as.integer(as.factor(df[[time]]))
  call_for <- function(cs) sprintf(
    "geeglm(%s, family = %s, data = df, id = .id%s, corstr = \"%s\"%s, control = ctrl)",
    deparse1(formula), family, if (is.null(time)) "" else sprintf(", waves = %s", time), cs,
    if (is.null(weights)) "" else ", weights = .w")
  mf <- model.frame(formula, df)
  X <- model.matrix(formula, df); y <- model.response(mf)
  off <- model.offset(mf); if (is.null(off)) off <- rep(0, nrow(df))
  fam <- eval(parse(text = if (grepl("\\(", family)) family else paste0(family, "()")))
  if (engine == "geepack") {
    fit <- eval(parse(text = call_for(corstr)))
    est <- list(beta = unname(coef(fit)), alpha = unname(fit$geese$alpha),
                gamma = unname(fit$geese$gamma), error = fit$geese$error)
    q <- as.list(QIC(fit))
    direct <- if (corstr %in% c("exchangeable", "unstructured"))
      gee_direct(formula, df, fam, df$.id, waves, corstr, df$.w) else NULL
  } else {  # geepack cannot fit this one: its iteration written out in R (gee_direct)
    direct <- gee_direct(formula, df, fam, df$.id, waves, corstr, df$.w)
    est <- list(beta = unname(direct$beta), alpha = direct$alpha, gamma = direct$gamma, error = 0)
  }
  chk <- direct_algebra(X, y, off, df$.w, est$beta, est$alpha, est$gamma, df$.id, waves, fam, corstr)
  if (engine == "geepack") {
    vbeta <- unname(fit$geese$vbeta); vbeta_naiv <- unname(fit$geese$vbeta.naiv)
  } else {
    vbeta <- unname(chk$robust); vbeta_naiv <- unname(chk$naive)
    # geepack's QIC, by hand: the independence refit runs fine in geepack
    indep <- eval(parse(text = call_for("independence")))
    quasi <- switch(fam$family, binomial = sum(y * log(chk$mu / (1 - chk$mu)) + log(1 - chk$mu)),
                    poisson = sum(y * log(chk$mu) - chk$mu), gaussian = sum(-(y - chk$mu)^2 / 2))
    trace <- sum(diag(solve(indep$geese$vbeta.naiv) %*% vbeta)); p <- ncol(X)
    kpm <- p + length(est$alpha)
    qic <- -2 * (quasi - trace)
    q <- list(QIC = qic, QICu = -2 * (quasi - p), `Quasi Lik` = quasi, CIC = trace, params = p,
              QICC = qic + 2 * kpm * (kpm + 1) / (length(unique(df$.id)) - kpm - 1))
  }
  y_used <- y; mu <- chk$mu
  fits[[name]] <<- list(
    name = name, engine = engine, dataset = file.path("..", "data", data_csv),
    formula = deparse1(formula), family = fam$family, link = fam$link, id = id, time = time,
    corstr = corstr, weights = weights, description = description, n_obs = nrow(df),
    n_clusters = length(unique(df$.id)), coef_names = colnames(X),
    beta = est$beta, vbeta = vbeta, vbeta_naiv = vbeta_naiv, se = sqrt(diag(vbeta)),
    alpha = est$alpha, gamma = est$gamma, error = est$error, qic = q,
    quasi_gamma_correct = if (fam$family == "Gamma") sum(-y_used / mu - log(mu)) else NULL,
    bias_reduced = unname(chk$bias_reduced),
    robust_check = maxrel(chk$robust, vbeta), naive_check = maxrel(chk$naive, vbeta_naiv),
    direct_check = if (engine == "geepack" && !is.null(direct))
      maxrel(c(direct$beta, direct$alpha, direct$gamma), c(est$beta, est$alpha, est$gamma)) else NULL,
    call = if (engine == "geepack") call_for(corstr) else
      sprintf("gee_direct(%s, corstr = \"%s\") (geepack 1.3.9 segfaults on this one)",
              deparse1(formula), corstr))
}

for (cs in c("independence", "exchangeable", "ar1", "unstructured")) {
  add(paste0("ohio_", cs), "gee_ohio.csv", ohio, resp ~ age + smoke, "binomial", "id", "age", cs,
      description = "Ohio wheeze (geepack::ohio), logit")
  # dietox unstructured has no fixed point: the 66 pair correlations estimated from the residuals
  # make a working correlation that is not positive definite, and geepack stops at maxit (error 1)
  if (cs != "unstructured") add(paste0("dietox_", cs), "gee_dietox.csv", dietox, Weight ~ Time + Cu, "gaussian", "Pig",
      "Time", cs, description = "pig weights (geepack::dietox), 3 missing weeks")
  add(paste0("respiratory_", cs), "gee_respiratory.csv", respiratory,
      outcome ~ treat + sex + age + baseline, "binomial", "sid", "visit", cs,
      description = "respiratory trial (geepack::respiratory), id = center * 1000 + id")
  add(paste0("epil_", cs), "gee_epil.csv", epil, y ~ lbase * trt + lage + V4, "poisson",
      "subject", "period", cs, description = "epileptic seizures (MASS::epil)")
}
add("ohio_gaps_unstructured", "gee_ohio_gaps.csv", ohio_gaps, resp ~ age + smoke, "binomial", "id",
    "age", "unstructured", engine = "direct",
    description = "ohio with rows removed (missing interior waves), geepack's iteration in R")
for (cs in c("exchangeable", "ar1"))
  add(paste0("ohio_gaps_", cs), "gee_ohio_gaps.csv", ohio_gaps, resp ~ age + smoke, "binomial",
      "id", "age", cs, description = "ohio with rows removed: unequal clusters and gaps")
for (cs in c("exchangeable", "ar1"))
  add(paste0("seizure_offset_", cs), "gee_seizure.csv", seiz,
      y ~ offset(log(t)) + x + trt + x:trt, "poisson", "id", "time", cs,
      description = "seizure counts (geepack::seizure, long), offset log(weeks)")
add("ohio_notime_ar1", "gee_ohio.csv", ohio, resp ~ age + smoke, "binomial", "id", NULL, "ar1",
    description = "no waves: the order of rows within a cluster is the time order")
add("dietox_gamma_exchangeable", "gee_dietox.csv", dietox, Weight ~ Time + Cu,
    "Gamma(link = \"log\")", "Pig", "Time", "exchangeable", description = "Gamma, log link")
add("dietox_weights_exchangeable", "gee_dietox.csv", dietox, Weight ~ Time + Cu, "gaussian", "Pig",
    "Time", "exchangeable", weights = "w", description = "prior weights w = 1 + (Time %% 3) / 2")
add("respiratory_probit_ar1", "gee_respiratory.csv", respiratory,
    outcome ~ treat + sex + age + baseline, "binomial(link = \"probit\")", "sid", "visit", "ar1",
    description = "probit link")

versions <- sapply(c("geepack", "MASS", "jsonlite"), function(p) as.character(packageVersion(p)))
for (f in fits) {
  f$versions <- c(R = paste(R.version$major, R.version$minor, sep = "."), as.list(versions))
  f$control <- "geese.control(epsilon = 1e-12, maxit = 500)"
  writeLines(toJSON(f, auto_unbox = TRUE, digits = I(17), pretty = TRUE, null = "null"),
             file.path(out_dir, paste0("geepack_", f$name, ".json")))
  cat(sprintf("%-32s error %d  robust_check %.1e  naive_check %.1e  direct_check %s  alpha %s\n",
              f$name, f$error, f$robust_check, f$naive_check,
              if (is.null(f$direct_check)) "-" else sprintf("%.1e", f$direct_check),
              paste(signif(head(f$alpha, 3), 4), collapse = " ")))
}
