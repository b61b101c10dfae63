"""Several hosts, proven on one: two processes joined by `jax.distributed` (CPU collectives over
localhost), each holding half of the rows as its shard of one global array, give the one-process fit.

This is the README's multi-host recipe run for real: one coordinator bound to 127.0.0.1, gloo
collectives, `jax.make_array_from_process_local_data` to build the global arrays, and an unchanged
`jm.fit` call in every process.
"""

import os
import socket
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

import jaxmle as jm

# Two processes split the sums over rows differently from one process (two partial sums and an
# all-reduce instead of one chunk loop): the results differ by reassociation only.
SUM_RTOL = 1e-12

N, P, G = 4_000, 3, 50

WORKER = r"""
import sys
import numpy as np
import jax

port, pid, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(
    coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid,
    coordinator_bind_address=f"127.0.0.1:{port}",
)
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import jaxmle as jm
sys.path.insert(0, sys.argv[4])
from test_distributed import N, G, simulate, logit, init

assert jax.process_count() == 2 and len(jax.local_devices()) == 1
x, y, g = simulate()
mine = slice(pid * N // 2, (pid + 1) * N // 2)          # this host's rows only
with jax.enable_x64(True):
    rows = NamedSharding(Mesh(np.array(jax.devices()), ("obs",)), P("obs"))
    glob = lambda v: jax.make_array_from_process_local_data(rows, v[mine], (N,) + v.shape[1:])
    data = {"x": glob(x), "y": glob(y)}
    groups = glob(g)
res = jm.fit(logit, init(), data, cov="sandwich", groups=groups, n_groups=G)
cl = res.with_cov("cluster")
np.savez(out, coef=np.asarray(res.coef), cov=np.asarray(res.cov), cluster=np.asarray(cl.cov),
         loglik=np.asarray(res.loglik), status=np.asarray(res.status))
"""


def simulate():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(N, P))
    y = (rng.random(N) < 1 / (1 + np.exp(-(0.2 + x @ np.array([0.5, -0.5, 0.1]))))).astype(float)
    g = rng.integers(0, G, size=N).astype(np.int32)
    return x, y, g


def logit(t, o):
    eta = t["b0"] + o["x"] @ t["b"]
    return o["y"] * eta - jnp.logaddexp(0.0, eta)


def init():
    return {"b0": 0.0, "b": np.zeros(P)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_joined_by_jax_distributed_give_the_one_process_fit(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH")]))
    port = _free_port()
    here = os.path.dirname(__file__)

    def worker(pid):
        args = [
            sys.executable,
            str(script),
            str(port),
            str(pid),
            str(tmp_path / f"{pid}.npz"),
            here,
        ]
        return subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    procs = [worker(pid) for pid in (0, 1)]
    try:
        logs = [p.communicate(timeout=600)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]

    x, y, g = simulate()
    ref = jm.fit(logit, init(), {"x": x, "y": y}, cov="sandwich", groups=g)
    for pid in (0, 1):  # every process holds the whole (replicated) result
        out = np.load(tmp_path / f"{pid}.npz")
        assert int(out["status"]) == 0
        np.testing.assert_allclose(out["coef"], ref.coef, rtol=SUM_RTOL)
        np.testing.assert_allclose(out["loglik"], ref.loglik, rtol=SUM_RTOL)
        np.testing.assert_allclose(out["cov"], ref.cov, rtol=SUM_RTOL)
        np.testing.assert_allclose(out["cluster"], ref.with_cov("cluster").cov, rtol=SUM_RTOL)
