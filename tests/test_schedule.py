"""Item 4: LayerwiseSchedule math, validation, config, retargeting without retracing."""

import math

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from tfprune import LayerwiseSchedule
from tfprune.masks.schedule import polynomial_sparsity


def _call(s, step):
    should, value = s(tf.constant(step, tf.int64))
    return bool(should.numpy()), float(value.numpy())


@settings(max_examples=60, deadline=None)
@given(
    target=st.floats(0.0, 0.99),
    initial=st.floats(0.0, 0.5),
    begin=st.integers(0, 50),
    length=st.integers(0, 200),
    power=st.floats(0.5, 4.0),
    step=st.integers(0, 300),
)
def test_ramp_matches_reference_formula(target, initial, begin, length, power, step):
    end = begin + length
    s = LayerwiseSchedule(target, begin, end, 1, initial, power)
    _, got = _call(s, step)
    want = polynomial_sparsity(step, initial, target, begin, end, power)
    assert got == pytest.approx(want, abs=2e-6)
    if step >= end:
        assert got == pytest.approx(target, abs=1e-7)  # exactly the target at and after end_step


def test_ramp_endpoints_and_shape():
    s = LayerwiseSchedule(0.8, begin_step=10, end_step=110, frequency=10, initial_sparsity=0.2, power=3)
    assert _call(s, 10)[1] == pytest.approx(0.2)
    assert _call(s, 110)[1] == pytest.approx(0.8)
    mid = _call(s, 60)[1]
    assert mid == pytest.approx(0.8 + (0.2 - 0.8) * 0.5**3)
    lin = LayerwiseSchedule(0.8, 10, 110, 10, 0.2, power=1)
    assert _call(lin, 60)[1] == pytest.approx(0.5)


def test_should_prune_on_frequency_and_always_at_end_step():
    s = LayerwiseSchedule(0.5, begin_step=5, end_step=27, frequency=10)
    pruned = [step for step in range(0, 40) if _call(s, step)[0]]
    assert pruned == [5, 15, 25, 27]


def test_jump_when_begin_equals_end():
    s = LayerwiseSchedule(0.7, begin_step=3, end_step=3, frequency=100)
    assert _call(s, 2) == (False, pytest.approx(0.0))
    assert _call(s, 3) == (True, pytest.approx(0.7))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"target_sparsity": 1.0}, "target_sparsity must be in \\[0, 1\\)"),
        ({"target_sparsity": -0.1}, "target_sparsity"),
        ({"target_sparsity": float("nan")}, "target_sparsity"),
        ({"target_sparsity": "a lot"}, "target_sparsity"),
        ({"initial_sparsity": 1.5}, "initial_sparsity"),
        ({"begin_step": -1}, "begin_step"),
        ({"begin_step": 10, "end_step": 5}, "end_step"),
        ({"frequency": 0}, "frequency"),
        ({"frequency": 2.5}, "frequency"),
        ({"power": 0}, "power"),
        ({"power": float("inf")}, "power"),
    ],
)
def test_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LayerwiseSchedule(**kwargs)


def test_config_round_trip_and_set():
    s = LayerwiseSchedule(0.9, 3, 300, 7, 0.1, 2.0)
    cfg = s.get_config()
    assert cfg["class_name"] == "LayerwiseSchedule"
    assert cfg["config"] == {"target_sparsity": 0.9, "begin_step": 3, "end_step": 300, "frequency": 7, "initial_sparsity": 0.1, "power": 2.0}
    t = LayerwiseSchedule.from_config(cfg["config"])
    assert t.get_config() == cfg
    t.set(target_sparsity=0.5, end_step=100)
    assert (t.target_sparsity, t.end_step, t.begin_step) == (0.5, 100, 3)
    with pytest.raises(ValueError):
        t.set(target_sparsity=math.nan)
    assert t.target_sparsity == 0.5  # a rejected set changes nothing
    with pytest.raises(TypeError, match="unknown schedule field"):
        t.set(sparsity=0.3)


def test_retarget_is_seen_by_an_already_traced_function():
    s = LayerwiseSchedule(0.3, 0, 10, 1)
    traces = []

    @tf.function
    def f(step):
        traces.append(1)
        return s(step)[1]

    assert float(f(tf.constant(20, tf.int64))) == pytest.approx(0.3)
    s.set(target_sparsity=0.75, end_step=5)
    assert float(f(tf.constant(20, tf.int64))) == pytest.approx(0.75)
    assert len(traces) == 1
    assert np.isclose(float(f(tf.constant(0, tf.int64))), 0.0)
