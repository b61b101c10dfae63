"""Peak memory added by one logit fit (N=1e6, p=20 float64), each library in a fresh subprocess.

    python benchmarks/memory.py [--n 1000000] [--libs jaxmle,jaxmle_jax_arrays,glum,sklearn,statsmodels]

The parent simulates the data once (benchmarks/_models.py, same seed as the pytest suite) and saves
it to .npy files. Each child imports its library, loads the data (np.load) and builds that library's
input (statsmodels: the design with a constant column; "jaxmle_jax_arrays": jax arrays, the numpy
copies dropped; "jaxmle": the numpy arrays), then records its current RSS as the baseline, resets
the kernel's peak-RSS mark (`echo 5 > /proc/self/clear_refs`, Linux) and runs the fit:
added peak = VmHWM after the fit - RSS baseline.

It does this twice: the first call (for jaxmle this includes tracing and XLA compilation, so its
time is also the fresh-process first-call time) and a second, warm call. glibc's malloc_trim(0)
runs before each baseline, so memory freed by the first call but kept by the allocator is not
counted in the baseline. Where clear_refs is not writable it falls back to ru_maxrss, which cannot
be reset: the second call's peak is then not measurable (reported as nan).
Ratios are to the size of the data arrays (X and y, float64).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

LIBS = ("jaxmle", "jaxmle_jax_arrays", "glum", "sklearn", "statsmodels")
MiB = 2**20


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _malloc_trim():
    """Give freed heap back to the OS (glibc), so RSS before a call holds only live memory."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_kib(can_reset):
    return _status_kib("VmHWM") if can_reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(lib, xpath, ypath):
    import _models as M

    if lib in ("jaxmle", "jaxmle_jax_arrays"):
        import jax

        import jaxmle  # noqa: F401

        jax.config.update("jax_enable_x64", True)

        def fit(x, y):
            res = M.jaxmle_logit(x, y)
            assert bool(res.converged), res.message
            return M.jaxmle_logit_vector(res)[0]
    elif lib == "glum":
        import glum  # noqa: F401

        def fit(x, y):
            return M.glum_logit(x, y)[0]
    elif lib == "sklearn":
        import sklearn.linear_model  # noqa: F401

        def fit(x, y):
            return M.sklearn_logit(x, y)[0]
    elif lib == "statsmodels":
        import statsmodels.api  # noqa: F401

        def fit(x, y):
            return M.statsmodels_logit(x, y)[0]
    else:
        raise ValueError(lib)

    x = np.load(xpath)
    y = np.load(ypath)
    if lib == "statsmodels":
        x = M.add_constant(x)
    if lib == "jaxmle_jax_arrays":  # data loaded straight into jax arrays; no numpy copy kept
        import jax.numpy as jnp

        x, y = jnp.asarray(x), jnp.asarray(y)
    out = {"lib": lib}
    for call in ("first", "second"):
        _malloc_trim()
        base = _status_kib("VmRSS")
        can_reset = _reset_peak()
        if not can_reset and call == "second":
            out.update(second_peak_mib=float("nan"), second_s=float("nan"))
            break
        t0 = time.perf_counter()
        est = fit(x, y)
        dt = time.perf_counter() - t0
        peak = _peak_kib(can_reset)
        out[f"{call}_base_mib"] = base / 1024
        out[f"{call}_peak_mib"] = (peak - base) / 1024
        out[f"{call}_s"] = dt
    out["method"] = "VmHWM after clear_refs" if can_reset else "ru_maxrss"
    out["b0"] = float(est[0])
    print("RESULT " + json.dumps(out), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--libs", default=",".join(LIBS))
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--x", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--y", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.x, args.y)
        return

    import _models as M

    x, y = M.simulate_logit(n=args.n)
    data_mib = (x.nbytes + y.nbytes) / MiB
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        xpath, ypath = os.path.join(tmp, "x.npy"), os.path.join(tmp, "y.npy")
        np.save(xpath, x)
        np.save(ypath, y)
        del x, y
        for lib in args.libs.split(","):
            cmd = [sys.executable, __file__, "--child", lib, "--x", xpath, "--y", ypath]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not lines:
                print(
                    f"{lib}: failed (rc {proc.returncode})\n{proc.stderr[-3000:]}", file=sys.stderr
                )
                continue
            rows.append(json.loads(lines[-1][len("RESULT ") :]))

    print(f"\nlogit N={args.n:,} p=20: data (X + y, float64) = {data_mib:.1f} MiB\n")
    print(
        "| library | RSS before fit (MiB) | added peak, 1st call (MiB) | / data | 1st call (s) "
        "| added peak, 2nd call (MiB) | / data | 2nd call (s) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['lib']} | {r['first_base_mib']:.0f} | {r['first_peak_mib']:.0f} "
            f"| {r['first_peak_mib'] / data_mib:.2f} | {r['first_s']:.2f} "
            f"| {r['second_peak_mib']:.0f} | {r['second_peak_mib'] / data_mib:.2f} "
            f"| {r['second_s']:.2f} |"
        )
    print(f"\npeak measured by: {sorted({r['method'] for r in rows})}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"n": args.n, "data_mib": data_mib, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
