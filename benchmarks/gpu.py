"""The accelerator numbers: the benchmarks' jaxmle models on the default JAX device (a GPU), float64
and float32, beside the same fits on the host's CPU peers, in one run.

Sections (each prints a markdown table as soon as it is done, so a run cut short still reports):
  0. roofline: logit N=1e7 p=20 fit + HC0 (with and without the subsample start) against its
     memory floor, passes over the data x bytes of the data / memory bandwidth (the device's
     datasheet figure where known, and a measured read and copy kernel); what one pass of each
     kind costs, and a fused Newton + scores pass against the two apart. fixedcost: a small
     fit's fixed cost (N = 1e3..1e5), beside a trivial jitted call and a 5-iteration while loop.
  1. logit N=1e6 p=20, fit + HC0 sandwich: numpy in / device arrays in / float32; first call;
     float32 accuracy against float64; scikit-learn and statsmodels Logit on the host CPU.
  2. right-censored Weibull AFT N=2e5, k=12; binomial GLM by Fisher scoring N=1e6.
  3. Monte Carlo: 2,000 (and 20,000) logit data sets N=1,000 p=5, simulate + fit + SEs, fits/s,
     beside a statsmodels Logit loop on the host.
  4. scaling: fit + sandwich against N (1e4..1e7) and p (5..200), float64 and float32.

Run: python benchmarks/gpu.py [--quick] [section ...]   (--quick: small sizes, to check the script
on a CPU; sections: roofline fixedcost logit weibull_glm montecarlo scaling, default all in that order)
"""

from __future__ import annotations

import os
import sys
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
jax.config.update("jax_enable_x64", True)
import _models as M  # noqa: E402
import passes  # noqa: E402
from scaling import best as fastest  # noqa: E402

import jaxmle as jm  # noqa: E402
import jaxmle.families as jf  # noqa: E402

QUICK = "--quick" in sys.argv
SCALE = 100 if QUICK else 1


def best(fn, repeats=5):
    """Fastest wall time of `repeats` warm calls (the first, untimed, call compiles)."""
    jax.block_until_ready(fn())
    return fastest(fn, repeats)


def once(fn):
    t = time.perf_counter()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - t, out


def rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.abs(b)))


def table(title, header, rows):
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    sys.stdout.flush()


# Datasheet memory bandwidths (GB/s) of common accelerators, by `device_kind`.
PEAK_GB_S = {
    "NVIDIA H100 80GB HBM3": 3350,
    "NVIDIA H100 PCIe": 2000,
    "NVIDIA H100 NVL": 3900,
    "NVIDIA H200": 4800,
    "NVIDIA GH200 480GB": 4000,
    "NVIDIA A100-SXM4-80GB": 2039,
    "NVIDIA A100-SXM4-40GB": 1555,
    "NVIDIA A100-PCIE-40GB": 1555,
    "NVIDIA A100 80GB PCIe": 1935,
    "NVIDIA L4": 300,
    "NVIDIA A10G": 600,
    "Tesla V100-SXM2-16GB": 900,
    "Tesla T4": 320,
}


def measured_bandwidth(gib=1.0 if not QUICK else 0.25):
    """(read GB/s, copy GB/s) of this device: a sum over a float32 array (reads it once) and a + 1
    (reads and writes it once), best of 5."""
    a = jax.block_until_ready(jnp.ones(int(gib * 2**30) // 4, jnp.float32))
    nbytes = a.size * 4
    read = best(lambda: jax.jit(jnp.sum)(a))
    copy = best(lambda: jax.jit(lambda v: v + 1.0)(a))
    return nbytes / read / 1e9, 2 * nbytes / copy / 1e9


def section_roofline():
    n, p = (10**7 // (SCALE * 10), 20) if QUICK else (10**7, 20)
    dev = jax.devices()[0]
    read_gb_s, copy_gb_s = measured_bandwidth()
    sheet = PEAK_GB_S.get(dev.device_kind)
    bandwidth = max(read_gb_s, copy_gb_s, sheet or 0.0)
    x, y = M.simulate_logit(n=n, p=p)
    rows = []
    for dtype, sub in ((None, None), (None, 0), ("float32", None)):
        np_dtype = np.float64 if dtype is None else np.float32
        xd, yd = jax.device_put(x.astype(np_dtype)), jax.device_put(y.astype(np_dtype))
        data_bytes = xd.nbytes + yd.nbytes

        def fit(xd=xd, yd=yd, dtype=dtype, sub=sub):
            return logit_fit(xd, yd, dtype=dtype, subsample_start=sub)

        t = best(fit)
        counts = passes.count_passes(fit)
        n_passes = sum(counts.values())
        floor = n_passes * data_bytes / (bandwidth * 1e9)
        label = (dtype or "float64") + (", subsample_start=0" if sub == 0 else "")
        rows.append([label, f"{t:.4f}", f"{n_passes:.2f}",
                     ", ".join(f"{k} {v:g}" for k, v in counts.items()),
                     f"{data_bytes / 2**20:,.0f}", f"{floor:.4f}", f"{t / floor:.1f}",
                     f"{n_passes * data_bytes / t / 1e9:,.1f}"])  # fmt: skip
        xd = yd = None
    table(f"roofline: logit N={n:,} p={p}, fit + HC0, device arrays in; bandwidth {bandwidth:,.0f} "
          f"GB/s (datasheet {sheet or 'unknown'}, measured read {read_gb_s:,.0f}, copy "
          f"{copy_gb_s:,.0f})",
          ["dtype", "fit (s)", "passes", "passes by kind", "data (MiB)", "floor (s)",
           "fit / floor", "GB/s of data"], rows)  # fmt: skip
    xd, yd = jax.device_put(x), jax.device_put(y)
    costs = passes.pass_costs(xd, yd)
    costs["fused newton + scores (one pass)"] = best(passes.fused_pass(xd, yd))
    table(f"one pass of each kind, logit N={n:,} p={p}, float64",
          ["pass", "seconds", "GB/s of data"],
          [[k, f"{v:.4f}", f"{(xd.nbytes + yd.nbytes) / v / 1e9:,.1f}"]
           for k, v in costs.items()])  # fmt: skip


def section_fixedcost():
    rows = []
    init = M.logit_init(5)
    program = jax.jit(lambda d: jm.fit(M.logit_logpdf, init, d).coef)
    for n in (1_000, 10_000, 100_000):
        x, y = M.simulate_logit(n=n, p=5)
        data = jax.device_put({"x": x, "y": y})
        host = best(lambda data=data: jm.fit(M.logit_logpdf, init, data), 20)
        in_jit = best(lambda data=data: program(data), 20)
        it = int(jm.fit(M.logit_logpdf, init, data).n_iter)
        rows.append([f"{n:,}", f"{host * 1e3:.2f}", f"{in_jit * 1e3:.2f}", str(it)])
    z = jax.device_put(jnp.zeros(8))
    plus_one = jax.jit(lambda v: v + 1)
    loop = jax.jit(lambda v: jax.lax.fori_loop(0, 5, lambda i, a: a * 1.0001 + 1, v))
    rows.append(["trivial jitted call", "", f"{best(lambda: plus_one(z), 50) * 1e3:.3f}", ""])
    rows.append(["jitted 5-iteration loop", "", f"{best(lambda: loop(z), 50) * 1e3:.3f}", ""])
    table("fixed cost of a small fit: logit p=5, fit + Hessian SE, device arrays "
          "(jm.fit: host checks + program; inside jax.jit: the program alone)",
          ["N", "jm.fit (ms)", "inside jax.jit (ms)", "iterations"], rows)  # fmt: skip


def logit_fit(x, y, dtype=None, tol=None, subsample_start=None):
    return jm.fit(M.logit_logpdf, M.logit_init(x.shape[1]), {"x": x, "y": y}, cov="sandwich",
                  tol=tol or (1e-10 if dtype is None else 1e-6), dtype=dtype,
                  subsample_start=subsample_start)  # fmt: skip


def section_logit():
    x, y = M.simulate_logit(n=M.LOGIT_N // SCALE)
    xd, yd = jax.device_put(x), jax.device_put(y)
    x32, y32 = jax.device_put(x.astype(np.float32)), jax.device_put(y.astype(np.float32))
    jax.clear_caches()
    cold, ref = once(lambda: logit_fit(xd, yd))
    rows = []
    warm = best(lambda: logit_fit(xd, yd))
    rows.append(["jaxmle float64, device arrays in", f"{warm:.4f}", str(int(ref.n_iter)), ""])
    rows.append(["jaxmle float64, first call (compile)", f"{cold:.4f}", "", ""])
    t = best(lambda: logit_fit(x, y))
    rows.append(["jaxmle float64, numpy in (host-to-device copy)", f"{t:.4f}", "", ""])
    r32 = logit_fit(x32, y32, dtype="float32")
    t = best(lambda: logit_fit(x32, y32, dtype="float32"))
    err = f"est {rel(r32.coef, ref.coef):.1e}, se {rel(_flat(r32.se), _flat(ref.se)):.1e}"
    rows.append(
        ["jaxmle float32 data/derivatives (float64 sums)", f"{t:.4f}", str(int(r32.n_iter)), err]
    )
    try:
        t, (est, _) = once(lambda: M.sklearn_logit(x, y))
        est0, se0 = M.jaxmle_logit_vector(ref)
        rows.append(["scikit-learn newton-cholesky (host CPU, no SE)", f"{t:.4f}", "",
                     f"est {rel(est, est0):.1e}"])  # fmt: skip
        xc = M.add_constant(x)
        t, (est, se, _) = once(lambda: M.statsmodels_logit(xc, y))
        rows.append(["statsmodels Logit newton + HC0 (host CPU)", f"{t:.4f}", "",
                     f"est {rel(est, est0):.1e}, se {rel(se, se0):.1e}"])  # fmt: skip
    except ImportError as e:
        rows.append([f"peers skipped: {e}", "", "", ""])
    table(f"logit N={x.shape[0]:,} p={x.shape[1]}, fit + HC0 sandwich",
          ["what", "seconds", "iterations", "max rel. diff from jaxmle float64"], rows)  # fmt: skip


def _flat(tree):
    return jax.flatten_util.ravel_pytree(tree)[0]


def section_weibull_glm():
    x, t_, d = M.simulate_weibull(n=M.WEIBULL_N // SCALE)
    rows = []
    ref = M.jaxmle_weibull(x, t_, d)
    rows.append([f"Weibull AFT N={x.shape[0]:,} k=12, float64",
                 f"{best(lambda: M.jaxmle_weibull(x, t_, d)):.4f}", str(int(ref.n_iter))])  # fmt: skip
    xd, td, dd = (jax.device_put(a) for a in (x, t_, d))
    rows.append(
        ["Weibull, device arrays in", f"{best(lambda: M.jaxmle_weibull(xd, td, dd)):.4f}", ""]
    )
    try:
        xc = M.add_constant(x)
        tt, _ = once(lambda: M.statsmodels_weibull(xc, t_, d))
        rows.append(
            ["Weibull: statsmodels GenericLikelihoodModel bfgs (host CPU)", f"{tt:.4f}", ""]
        )
    except ImportError:
        pass
    xl, yl = M.simulate_logit(n=M.LOGIT_N // SCALE)
    xld, yld = jax.device_put(xl), jax.device_put(yl)
    model = jf.Model(lambda th, o: jf.Bernoulli(logits=th["b0"] + o["x"] @ th["b"]), response="y")

    def glm():
        return jm.fit(model, M.logit_init(xl.shape[1]), {"x": xld, "y": yld}, method="fisher",
                      cov="expected", tol=1e-10)  # fmt: skip

    rows.append([f"binomial GLM N={xl.shape[0]:,} p=20, Fisher scoring, device arrays",
                 f"{best(glm):.4f}", str(int(glm().n_iter))])  # fmt: skip
    try:
        import statsmodels.api as sm

        xc = M.add_constant(xl)
        tt, _ = once(lambda: sm.GLM(yl, xc, family=sm.families.Binomial()).fit())
        rows.append(["binomial GLM: statsmodels GLM IRLS (host CPU)", f"{tt:.4f}", ""])
    except ImportError:
        pass
    table("Weibull and GLM", ["what", "seconds", "iterations"], rows)


N_MC, P_MC = 1000, 5
THETA_MC = {"b0": 0.3, "b": np.linspace(-0.5, 0.5, P_MC)}


def _simulate_mc(key, theta):
    kx, ky = jax.random.split(key)
    x = jax.random.normal(kx, (N_MC, P_MC))
    y = jax.random.bernoulli(ky, jax.nn.sigmoid(theta["b0"] + x @ theta["b"]))
    return {"x": x, "y": y.astype(x.dtype)}


def section_montecarlo():
    rows = []
    for reps in (2000 // SCALE * 10 if QUICK else 2000, 200 if QUICK else 20000):
        for covs, dtype in ((("hessian",), None), (("hessian", "opg", "sandwich"), None),
                            (("hessian",), "float32")):  # fmt: skip

            def study(covs=covs, dtype=dtype, reps=reps):
                return jm.monte_carlo(_simulate_mc, M.logit_logpdf, THETA_MC, reps, 0,
                                      covs=covs, dtype=dtype, progress=False).estimates  # fmt: skip

            t = best(study, 3)
            rows.append([f"{reps:,}", "/".join(covs), dtype or "float64", f"{t:.3f}",
                         f"{reps / t:,.0f}"])  # fmt: skip
    try:
        import statsmodels.api as sm

        keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.key(0), jnp.arange(300))
        data = jax.vmap(_simulate_mc, in_axes=(0, None))(keys, THETA_MC)
        xs = [sm.add_constant(np.asarray(v)) for v in data["x"]]
        ys = [np.asarray(v) for v in data["y"]]
        t, _ = once(
            lambda: [sm.Logit(yy, xx).fit(disp=0).bse for xx, yy in zip(xs, ys, strict=True)]
        )
        rows.append(["300", "statsmodels Logit loop (host CPU)", "float64", f"{t:.3f}",
                     f"{300 / t:,.0f}"])  # fmt: skip
    except ImportError:
        pass
    table(f"Monte Carlo: logit N={N_MC:,} p={P_MC}, simulate + fit + SEs",
          ["replications", "covariances", "dtype", "seconds", "fits/s"], rows)  # fmt: skip


def _scaling_row(n, p):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, p))
    beta = 0.5 * rng.standard_normal(p) / np.sqrt(p)
    y = (rng.random(n) < 1 / (1 + np.exp(-(x @ beta)))).astype(float)
    d64 = jax.device_put((x, y))
    t64 = best(lambda: logit_fit(*d64, tol=1e-12), 3)
    it = int(logit_fit(*d64, tol=1e-12).n_iter)
    d64 = None  # free the device memory before the float32 copy
    x32, y32 = jax.device_put(x.astype(np.float32)), jax.device_put(y.astype(np.float32))
    t32 = best(lambda: logit_fit(x32, y32, dtype="float32"), 3)
    return [f"{n:,}", str(p), f"{t64:.4f}", str(it), f"{t32:.4f}", f"{n * p * 8 / 2**20:,.0f}"]


def section_scaling():
    grid = [(10**4, 20), (10**5, 20), (10**6, 20), (10**7, 20), (10**5, 5), (10**5, 50),
            (10**5, 200), (10**6, 200)]  # fmt: skip
    if QUICK:
        grid = [(10**4, 20), (10**4, 50)]
    rows = [_scaling_row(n, p) for n, p in grid]
    table(
        "scaling: logit fit + sandwich, device arrays in",
        ["N", "p", "float64 (s)", "iterations", "float32 (s)", "X (MiB, float64)"],
        rows,
    )


if __name__ == "__main__":
    dev = jax.devices()[0]
    print(f"jax {jax.__version__}, device {dev.device_kind} ({dev.platform}), "
          f"{len(jax.devices())} device(s), host CPUs {os.cpu_count()}")  # fmt: skip
    names = [a for a in sys.argv[1:] if not a.startswith("--")]
    for name in names or ["roofline", "fixedcost", "logit", "weibull_glm", "montecarlo", "scaling"]:
        t0 = time.perf_counter()
        try:
            globals()[f"section_{name}"]()
        except Exception:  # report and go on: one failing section must not cost the others
            traceback.print_exc()
        print(f"({name}: {time.perf_counter() - t0:.0f} s)", flush=True)
