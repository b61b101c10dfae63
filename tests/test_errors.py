"""What a new user meets: every wrong input refused by name before any work, every fit that stops
early says why, and nothing a returned result holds changes afterwards (issue 9's findings)."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from models import logit, simulate_logit

import jaxmle as jm

INIT = {"b0": 0.0, "b": jnp.zeros(2)}


@pytest.fixture(scope="module")
def data():
    return simulate_logit(np.random.default_rng(9), 400, 2)


@pytest.fixture(scope="module")
def res(data):
    return jm.fit(logit, INIT, data)


# ---------------------------------------------------------------- stopped early is not separation


def test_max_iter_is_not_separation(data):
    """An ordinary logit stopped after one step: max_iter, not 'the MLE does not exist'."""
    res = jm.fit(logit, INIT, data, max_iter=1)
    assert int(res.status) == int(jm.Status.MAX_ITER), res.message
    assert "max_iter" in res.message and "separation" not in res.message


# ---------------------------------------------------------------- options validated before work


@pytest.mark.parametrize("tol", [float("nan"), float("inf"), -1.0, 0.0])
def test_tolerance_must_be_positive_and_finite(data, tol):
    with pytest.raises(ValueError, match="tol must be a positive finite number"):
        jm.fit(logit, INIT, data, tol=tol)


@pytest.mark.parametrize("devices", [0, -1, 5, 1.5])
def test_devices_out_of_range(data, devices):
    with pytest.raises((ValueError, TypeError), match="devices="):
        jm.fit(logit, INIT, data, devices=devices)


def test_level_outside_zero_one(res):
    with pytest.raises(ValueError, match="level must lie strictly between 0 and 1"):
        res.conf_int(level=2)


# ---------------------------------------------------------------- data, weights, labels


def test_zero_rows():
    with pytest.raises(ValueError, match=r"0 rows"):
        jm.fit(logit, INIT, {"x": np.zeros((0, 2)), "y": np.zeros(0)})


def test_all_zero_weights(data):
    with pytest.raises(ValueError, match="weights are all zero"):
        jm.fit(logit, INIT, data, weights=np.zeros(400))


def test_missing_cluster_labels_are_named(data):
    labels = np.array(["a", "b", None, "c"] * 100, dtype=object)
    with pytest.raises(ValueError, match=r"100 missing label\(s\).*first at row 2"):
        jm.fit(logit, INIT, data, groups=labels, cov="cluster")


def test_cluster_codes_outside_the_range_are_flagged_under_jit(data):
    """Codes 1..G with n_groups=G under jit: the last cluster would fall out of the segment sum."""
    codes = np.random.default_rng(3).integers(1, 11, size=400)
    fit = jax.jit(lambda d, g: jm.fit(logit, INIT, d, groups=g, n_groups=10, cov="cluster"))
    res = fit(data, codes)
    assert int(res.status) == int(jm.Status.BAD_GROUPS)
    assert np.isnan(np.asarray(res.se["b"])).all()
    assert "outside 0..n_groups-1" in res.summary()
    ok = fit(data, codes - 1)
    assert int(ok.status) == 0 and np.isfinite(np.asarray(ok.se["b"])).all()


def test_results_do_not_alias_the_callers_arrays(data):
    """A result keeps its own copy for refits: editing the caller's arrays changes nothing."""
    x, y = np.ascontiguousarray(data["x"].copy()), data["y"].copy()
    res = jm.fit(logit, INIT, {"x": x, "y": y})
    before = jm.profile_ci(res, "b0")
    x[:] = 0.0
    y[:] = 1.0
    after = jm.profile_ci(res, "b0")
    assert (before.lower, before.upper) == (after.lower, after.upper)


# ---------------------------------------------------------------- parameters and start values


def test_nan_start_value_is_named(data):
    with pytest.raises(ValueError, match=r"init\['b0'\] has a NaN or infinite start value"):
        jm.fit(logit, {"b0": float("nan"), "b": jnp.zeros(2)}, data)


def test_fixed_as_a_list_of_keys_holds_the_start_values(data):
    res = jm.fit(logit, {"b0": 0.25, "b": jnp.zeros(2)}, data, fixed=["b0"])
    assert bool(res.converged) and float(res.params["b0"]) == 0.25
    assert float(res.se["b0"]) == 0.0  # held, not estimated


def test_fixed_of_the_wrong_shape(data):
    with pytest.raises(ValueError, match=r"fixed\['b'\] has shape \(3,\), but init\['b'\] has"):
        jm.fit(logit, INIT, data, fixed={"b": np.zeros(3)})


def test_two_parameters_with_one_name_are_refused(data):
    def nested(t, obs):
        return logit({"b0": t["a"]["b"] + t["a.b"], "b": jnp.zeros(2)}, obs)

    with pytest.raises(ValueError, match=r"two parameters would both be called 'a\.b'"):
        jm.fit(nested, {"a": {"b": 0.0}, "a.b": 0.0}, data)


def test_names_label_the_entries_of_an_array_parameter(data):
    res = jm.fit(logit, INIT, data, names={"b": ["age", "income"]})
    assert set(res.names) == {"b0", "age", "income"}
    assert "income" in res.summary() and "income" in res.to_frame().index
    test = jm.wald_test(res, "age = income")
    assert np.isfinite(float(test.statistic))


# ---------------------------------------------------------------- the log-density itself


def test_integer_or_boolean_log_density(data):
    for bad in (lambda t, o: jnp.int32(1), lambda t, o: t["b0"] > 0):
        with pytest.raises(TypeError, match="must return a real \\(floating\\) log-density"):
            jm.fit(bad, INIT, data)


def test_tracing_errors_keep_their_type(data):
    """A Python `if` on a traced value or np.exp of a tracer: JAX's own error class and message,
    not an AttributeError from rebuilding it."""

    def python_if(t, o):
        return logit(t, o) if t["b0"] > 0 else -logit(t, o)

    def numpy_exp(t, o):
        return o["y"] * np.exp(t["b0"])

    with pytest.raises(jax.errors.TracerBoolConversionError):
        jm.fit(python_if, INIT, data)
    with pytest.raises(jax.errors.TracerArrayConversionError):
        jm.fit(numpy_exp, INIT, data)


# ---------------------------------------------------------------- restrictions and tests


def test_deeply_nested_restriction(res):
    with pytest.raises(ValueError, match="nests parentheses more than"):
        jm.wald_test(res, "(" * 3000 + "b0" + ")" * 3000 + " = 0")


def test_lr_test_refuses_fits_on_other_data(data):
    def same_model(t, o):
        return logit(t, o)

    other = simulate_logit(np.random.default_rng(4), 400, 2)
    full = jm.fit(logit, INIT, data)
    restricted = jm.fit(same_model, INIT, other, fixed={"b0": 0.0})
    with pytest.raises(ValueError, match="different data"):
        jm.lr_test(restricted, full)


def test_lr_test_flags_a_fit_that_did_not_converge(data):
    full = jm.fit(logit, INIT, data, max_iter=1)
    restricted = jm.fit(logit, INIT, data, fixed={"b0": 0.0})
    test = jm.lr_test(restricted, full)
    assert int(test.status) != 0


# ---------------------------------------------------------------- formulas


@pytest.fixture(scope="module")
def frame(data):
    n = len(data["y"])
    return pd.DataFrame(
        {
            "y": data["y"],
            "x1": data["x"][:, 0],
            "t": pd.date_range("2020-01-01", periods=n),
            "m": np.nan,
        }
    )


def test_date_column_in_a_formula(frame):
    with pytest.raises(TypeError, match="column 't' holds dates or times"):
        jm.glm("y ~ x1 + t", frame, family="binomial")


def test_all_missing_column_in_a_formula(frame):
    with pytest.raises(ValueError, match="column 'm' is missing in every row"):
        jm.glm("y ~ x1 + m", frame, family="binomial")


def test_formulas_see_no_more_namespace_than_they_need(frame):
    """Formulas are Python code: a name the caller did not give (a module, say) is not there."""
    with pytest.raises(KeyError, match=r"the formula names \['os'\]"):
        jm.glm("y ~ I(os.getcwd() and x1)", frame, family="binomial")


# ---------------------------------------------------------------- a fit out of a batch


@pytest.mark.usefixtures("x64")
def test_a_fit_out_of_a_batch_profiles_once_attached(data):
    """batched[i] holds no data; jm.attach gives them back (checked against its lnL), and its
    profile interval is then the host fit's. Data that are not the fit's are refused."""
    other = simulate_logit(np.random.default_rng(5), 400, 2)
    stacked = jax.tree.map(lambda a, b: np.stack([a, b]), data, other)
    batched = jax.vmap(lambda d: jm.fit(logit, INIT, d))(stacked)
    one = batched[0]
    with pytest.raises(ValueError, match="data"):
        jm.profile_ci(one, "b0")
    with pytest.raises(ValueError, match="not the data"):
        jm.attach(one, logit, other)
    host = jm.profile_ci(jm.fit(logit, INIT, data), "b0")
    mine = jm.profile_ci(jm.attach(one, logit, data), "b0")
    np.testing.assert_allclose([mine.lower, mine.upper], [host.lower, host.upper], rtol=1e-8)
