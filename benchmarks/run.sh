#!/usr/bin/env bash
# Run every benchmark and print the comparison as ratios to jaxmle.
#
#   benchmarks/run.sh                    # default suite (~10-15 min on 2 cores) + memory table
#   JAXMLE_BENCH_SLOW=1 benchmarks/run.sh   # also statsmodels GLM and GenericLikelihoodModel logit
#   BENCH_ROUNDS=5 benchmarks/run.sh        # more timed rounds (default 3, after 1 warm-up)
#   SKIP_MEMORY=1 benchmarks/run.sh         # pytest suite only
#   extra arguments go to pytest, e.g.  benchmarks/run.sh -k weibull
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
OUT="${BENCH_OUT:-benchmarks/results/latest}"
mkdir -p "$OUT"

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  lscpu | grep -E '^(Model name|CPU\(s\)|Thread|Core|Socket)' || true
  echo "RAM: $(free -g | awk '/^Mem:/ {print $2}') GiB"
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "git HEAD: $(git rev-parse --short HEAD 2>/dev/null || echo n/a)," \
       "uncommitted changes under jaxmle/: $(git status --porcelain jaxmle 2>/dev/null | wc -l) file(s)"
  "$PY" - <<'PY'
import importlib.metadata as md, platform
print("python", platform.python_version())
for p in ["jax", "jaxlib", "numpy", "scipy", "scikit-learn", "glum", "tabmat", "statsmodels",
          "lifelines", "pandas", "autograd", "pytest-benchmark", "jaxmle"]:
    try:
        print(p, md.version(p))
    except md.PackageNotFoundError:
        print(p, "not installed")
PY
} | tee "$OUT/machine.txt"

"$PY" -m pytest benchmarks "$@" \
  --benchmark-group-by=group --benchmark-columns=min,mean,rounds --benchmark-sort=min \
  --benchmark-json="$OUT/suite.json" 2>&1 | tee "$OUT/pytest.txt"

echo "load average after suite: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt"
echo
echo "== ratios to jaxmle (peer time / jaxmle time) =="
"$PY" benchmarks/compare.py "$OUT/suite.json" | tee "$OUT/ratios.md"

if [[ -z "${SKIP_MEMORY:-}" ]]; then
  echo "== peak memory added by one fit (fresh subprocess per library) =="
  "$PY" benchmarks/memory.py --json "$OUT/memory.json" | tee "$OUT/memory.md"
fi
