"""Non-finite or meaningless values are refused with an error naming the argument, never accepted silently."""

import os

import numpy as np
import pytest

import tfprune
from tfprune._keras import keras


def _dense_model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((6,))
    return keras.Model(inp, keras.layers.Dense(3, name="out")(keras.layers.Dense(8, activation="relu", name="h")(inp)))


@pytest.mark.parametrize("bad", [-1.0, 0.0, float("nan"), float("inf"), "high"])
def test_plan_refuses_importance_scores_that_are_not_finite_and_positive(bad):
    model = _dense_model()
    with pytest.raises(ValueError, match=r"importance\['h'\].*finite and > 0"):
        tfprune.plan(model, 0.5, importance={"h": bad, "out": 1.0}, include_outputs=True)
    p = tfprune.plan(model, 0.5, importance={"h": 2.0, "out": 1.0})
    assert p.importance.scores == {"h": 2.0, "out": 1.0}


def test_export_refuses_non_finite_inputs_and_outputs_and_writes_nothing(tmp_path):
    model = _dense_model()
    x = np.random.default_rng(0).random((16, 6), dtype=np.float32)
    path = tmp_path / "m.tflite"
    bad_x = x.copy()
    bad_x[3, 2] = np.nan
    with pytest.raises(ValueError, match="sample_inputs holds 1 non-finite"):
        tfprune.export_tflite(model, str(path), mode="float", sample_inputs=bad_x)
    with pytest.raises(ValueError, match="representative_data holds 1 non-finite"):
        tfprune.export_tflite(model, str(path), mode="int8", sample_inputs=x, representative_data=bad_x)
    kernel, bias = model.get_layer("out").get_weights()
    kernel[0, 0] = np.nan
    model.get_layer("out").set_weights([kernel, bias])
    with pytest.raises(ValueError, match="output 'out' is not finite.*nothing was written"):
        tfprune.export_tflite(model, str(path), mode="float", sample_inputs=x)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("tau", [float("nan"), -0.1, float("inf"), True])
def test_shallow_refuses_a_meaningless_tau(tau):
    model = tfprune.models.compile_classifier(tfprune.models.plain_cnn())
    x = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)
    with pytest.raises(ValueError, match="tau=.*finite fraction of accuracy"):
        tfprune.shallow.shallow(model, (x, np.zeros(8, np.int64)), tau=tau)
