"""Large-N paths: many devices (8 simulated CPU devices, in a fresh process) equal one device."""

import os
import subprocess
import sys

import pytest

SHARDED = r"""
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import jaxmle as jm
assert len(jax.devices()) == 8
rng = np.random.default_rng(3)
n, p = 10_003, 3                       # not a multiple of 8: padded with zero-weight rows
x = rng.normal(size=(n, p)); g = rng.integers(0, 40, size=n)
y = (rng.random(n) < 1 / (1 + np.exp(-(0.2 + x @ np.array([0.5, -0.5, 0.1]))))).astype(float)
def logit(t, o):
    eta = t["b0"] + o["x"] @ t["b"]
    return o["y"] * eta - jnp.logaddexp(0.0, eta)
init = {"b0": 0.0, "b": jnp.zeros(p)}
one = jm.fit(logit, init, {"x": x, "y": y}, cov="cluster", groups=g, chunk_size=1024)
many = jm.fit(logit, init, {"x": x, "y": y}, cov="cluster", groups=g, chunk_size=512, devices=8)
for f in ("coef", "loglik", "cov", "information", "opg"):
    np.testing.assert_allclose(getattr(many, f), getattr(one, f), rtol=1e-12, err_msg=f)
assert float(many.n_obs) == n and int(many.status) == 0
# data placed by the user on a mesh are fitted where they lie
with jax.enable_x64(True):
    mesh = Mesh(np.array(jax.devices()), ("obs",))
    m = n - n % 8
    placed = jax.device_put({"x": jnp.asarray(x[:m]), "y": jnp.asarray(y[:m])},
                            NamedSharding(mesh, P("obs")))
res = jm.fit(logit, init, placed)
ref = jm.fit(logit, init, {"x": x[:m], "y": y[:m]})
np.testing.assert_allclose(res.coef, ref.coef, rtol=1e-12)
np.testing.assert_allclose(res.cov, ref.cov, rtol=1e-11)
print("ok")
"""


@pytest.mark.slow  # a subprocess with 8 simulated devices (~15 s)
def test_sharded_over_eight_devices_equals_one_device():
    # simulated CPU devices (JAX_PLATFORMS=cpu: on a GPU machine the default backend is the GPU)
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
    }
    out = subprocess.run([sys.executable, "-c", SHARDED], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")


def test_streaming_from_host_equals_the_in_memory_fit(rng):
    import jax.numpy as jnp
    import numpy as np
    from models import logit, simulate_logit

    import jaxmle as jm

    data = simulate_logit(rng, 5_003, 3)
    groups = rng.integers(0, 30, size=5_003)
    init = {"b0": 0.0, "b": jnp.zeros(3)}
    ref = jm.fit(logit, init, data, cov="cluster", groups=groups, chunk_size=1024)
    res = jm.fit(logit, init, data, cov="cluster", groups=groups, chunk_size=1024, stream=True)
    for f in ("coef", "loglik", "cov", "information", "opg"):
        np.testing.assert_allclose(getattr(res, f), getattr(ref, f), rtol=1e-13, err_msg=f)
    assert int(res.n_iter) == int(ref.n_iter)
