# Minimal JSON writer for the fixtures: every double as %.17g (jsonlite stops at 15 digits).
num17 <- function(x) ifelse(is.na(x), "null", sprintf("%.17g", x))
json_str <- function(s) paste0("\"", gsub("\n", "\\\\n", gsub("\"", "\\\\\"", gsub("\\\\", "\\\\\\\\", s))), "\"")
to_json <- function(x, ind = "") {
  ind2 <- paste0(ind, "  ")
  if (is.null(x)) return("null")
  if (is.matrix(x)) {
    rows <- vapply(seq_len(nrow(x)), function(i) paste0("[", paste(num17(x[i, ]), collapse = ", "), "]"), "")
    return(paste0("[\n", paste0(ind2, rows, collapse = ",\n"), "\n", ind, "]"))
  }
  if (is.list(x)) {
    if (is.null(names(x))) {
      body <- vapply(x, function(v) paste0(ind2, to_json(v, ind2)), "")
      return(paste0("[\n", paste(body, collapse = ",\n"), "\n", ind, "]"))
    }
    body <- vapply(names(x), function(nm) paste0(ind2, json_str(nm), ": ", to_json(x[[nm]], ind2)), "")
    return(paste0("{\n", paste(body, collapse = ",\n"), "\n", ind, "}"))
  }
  as_array <- inherits(x, "AsIs") || length(x) != 1
  vals <- if (is.character(x)) vapply(x, json_str, "", USE.NAMES = FALSE)
          else if (is.logical(x)) tolower(as.character(x))
          else num17(as.numeric(x))
  if (as_array) paste0("[", paste(vals, collapse = ", "), "]") else vals
}
write_json17 <- function(x, path) writeLines(to_json(x), path)
