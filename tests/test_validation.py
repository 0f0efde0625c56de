"""Non-finite or meaningless values are refused with an error naming the argument, never accepted silently."""

import os

import numpy as np
import pytest

import tfprune
from tfprune._keras import keras
from tfprune.evaluate import OneShotEvaluator


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
    with pytest.raises(ValueError, match="tau must be the probe-gain threshold, a finite fraction of accuracy.*got"):
        tfprune.shallow.shallow(model, (x, np.zeros(8, np.int64)), tau=tau)


@pytest.mark.parametrize("targets, match", [
    ({"h": float("nan")}, r"targets\['h'\] must be in \[0, 1\).*got nan"),
    ({"h": -0.5}, r"targets\['h'\] must be in \[0, 1\).*got -0.5"),
    ({}, r"targets=\{\} names no layer"),
])
def test_obs_refuses_targets_that_would_leave_layers_dense_silently(targets, match):
    model = _dense_model()
    x = np.random.default_rng(0).random((32, 6), dtype=np.float32)
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=match):
        tfprune.obs.prune(model, x, targets=targets)
    with pytest.raises(ValueError, match=r"tolerance must be a delta E.*got nan"):
        tfprune.obs.prune(model, x, tolerance=float("nan"))
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def _conv_model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, name="c1", activation="relu")(inp)
    out = keras.layers.Dense(3, name="out")(keras.layers.Flatten()(h))
    return keras.Model(inp, out)


@pytest.mark.parametrize("chans, match", [([0.5], "not fractions"), ([4], "out of range"), ([1, 1], "repeat"),
                                          (np.array([True, False, False, False]), "booleans")])
def test_shrink_refuses_channel_lists_that_are_not_channel_numbers(chans, match):
    with pytest.raises(ValueError, match=r"remove\['c1'\].*" + match):
        tfprune.shrink(_conv_model(), remove={"c1": chans})
    small, _ = tfprune.shrink(_conv_model(), remove={"c1": [2]})
    assert small.get_layer("c1").filters == 3


@pytest.mark.parametrize("kw, match", [({"temperature": float("inf")}, "temperature must be.*got inf"), ({"temperature": 0.0}, "temperature must be.*got 0.0"),
                                       ({"alpha": float("nan")}, "alpha must be.*got nan"), ({"alpha": 1.5}, "alpha must be.*got 1.5")])
def test_distiller_refuses_meaningless_temperature_and_alpha(kw, match):
    with pytest.raises(ValueError, match=match):
        tfprune.Distiller(_dense_model(), _dense_model(), **kw)


@pytest.mark.parametrize("labels, loss, match", [
    (np.eye(3)[[0, 1, 2, 0]], "sparse_categorical_crossentropy", r"one-hot rows.*np.argmax"),
    (np.array([0, 1, 2, 0]), "categorical_crossentropy", r"class ids.*to_categorical"),
    (np.array(["a", "b", "c", "a"]), None, r"strings.*np.unique"),
    (np.array([0.0, 0.5, 1.0, 2.0]), None, r"fractional class ids \[0.5\]"),
    (np.array([0, 1, 2, 7]), None, r"class ids in \[0, 7\].*3 outputs"),
])
def test_labels_that_would_train_or_score_wrongly_are_refused_with_the_fix(labels, loss, match):
    model = _dense_model()
    if loss is not None:
        model.compile(loss=keras.losses.get(loss))
    x = np.random.default_rng(0).random((4, 6), dtype=np.float32)
    with pytest.raises(ValueError, match=match):
        tfprune.training.finetune.retrain(model, (x, labels), steps=1)
    with pytest.raises(ValueError, match=match):
        OneShotEvaluator(model, x, labels)


def test_correct_labels_in_either_form_pass():
    model = _dense_model()
    x = np.random.default_rng(0).random((4, 6), dtype=np.float32)
    ev = OneShotEvaluator(model, x, np.array([0, 1, 2, 0]))
    ev1 = OneShotEvaluator(model, x, np.eye(3)[[0, 1, 2, 0]])
    assert ev.dense.accuracy == ev1.dense.accuracy


def test_plans_and_scores_refuse_nan_weights_and_nan_data():
    model = _dense_model()
    kernel, bias = model.get_layer("h").get_weights()
    kernel[1, 1] = np.nan
    model.get_layer("h").set_weights([kernel, bias])
    with pytest.raises(ValueError, match=r"plan: the weights of layer\(s\) \{'h': 1\}.*NaN or inf"):
        tfprune.plan(model, 0.5)
    with pytest.raises(ValueError, match=r"importance 'capacity': the weights of layer\(s\) \{'h': 1\}"):
        tfprune.score_layers(model, "capacity")
    conv = _conv_model()
    k, b = conv.get_layer("c1").get_weights()
    k[0, 0, 0, 0] = np.inf
    conv.get_layer("c1").set_weights([k, b])
    with pytest.raises(ValueError, match="channel importance 'l2': the weights of layer"):
        tfprune.plan(conv, macs=0.3, granularity="channel")
    clean = _dense_model()
    x = np.random.default_rng(0).random((16, 6), dtype=np.float32)
    x[2, 3] = np.nan
    with pytest.raises(ValueError, match="data.*1 non-finite"):
        tfprune.score_layers(clean, "capacity_activation", data=(x, np.zeros(16, np.int64)))


def test_export_refuses_samples_shaped_unlike_the_model_input(tmp_path):
    model = _dense_model()
    x = np.random.default_rng(0).random((16, 6), dtype=np.float32)
    path = tmp_path / "m.tflite"
    with pytest.raises(ValueError, match=r"sample_inputs has shape \(16, 5\).*\(n, 6\).*Fix"):
        tfprune.export_tflite(model, str(path), mode="float", sample_inputs=x[:, :5])
    with pytest.raises(ValueError, match=r"representative_data has shape \(16, 6, 1\)"):
        tfprune.export_tflite(model, str(path), mode="micro", sample_inputs=x, representative_data=x[..., None])
    assert os.listdir(tmp_path) == []


def test_plan_says_what_it_leaves_out():
    class Block(keras.layers.Layer):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.inner = keras.layers.Dense(16)

        def call(self, x):
            return self.inner(x)

    inp = keras.Input((6,))
    h = Block(name="blk")(keras.layers.Dense(8, name="h")(inp))
    seq = keras.layers.Reshape((4, 4))(h)
    out = keras.layers.Dense(3, name="out")(keras.layers.LSTM(5, name="rnn")(seq))
    model = keras.Model(inp, out)
    with pytest.warns(UserWarning, match=r"not planned: 128 of \d+ Conv/Dense weights .* custom layers \(blk\)"):
        p = tfprune.plan(model, 0.5)
    text = p.table()
    assert "not planned: 128" in text and "rnn (LSTM" in text


def test_second_fit_with_a_new_target_and_a_past_end_step_is_refused():
    model = tfprune.wrap(_dense_model())
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).random((32, 6), dtype=np.float32)
    y = np.zeros(32, np.int64)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[tfprune.Pruning(0.5, end_step=4, frequency=1)])
    with pytest.raises(ValueError, match="end_step=4 is not after this model's pruning step 8.*Fix"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[tfprune.Pruning(0.7, end_step=4, frequency=1)])
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[tfprune.Pruning(0.7, end_step=14, frequency=1)])
    assert tfprune.prunable_layers(model).total_sparsity() == pytest.approx(0.7, abs=0.02)


def test_export_writes_both_files_or_neither(tmp_path):
    model = _dense_model()
    x = np.random.default_rng(0).random((16, 6), dtype=np.float32)
    (tmp_path / "hdr").mkdir()
    with pytest.raises(ValueError, match="c_header=.* is a folder.*Fix"):
        tfprune.export_tflite(model, str(tmp_path / "m.tflite"), mode="float", sample_inputs=x, c_header=str(tmp_path / "hdr"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="lies under .*notes.txt.*which is a file"):
        tfprune.export_tflite(model, str(tmp_path / "notes.txt" / "m.tflite"), mode="float", sample_inputs=x)
    with pytest.raises(ValueError, match="c_var_name must be a C identifier"):
        tfprune.export_tflite(model, str(tmp_path / "m.tflite"), mode="float", sample_inputs=x, c_header=str(tmp_path / "m.h"),
                              c_var_name="my model!")
    assert sorted(os.listdir(tmp_path)) == ["hdr", "notes.txt"]
    tfprune.export_tflite(model, str(tmp_path / "m.tflite"), mode="float", sample_inputs=x, c_header=str(tmp_path / "m.h"))
    assert (tmp_path / "m.tflite").stat().st_size > 0 and "g_model" in (tmp_path / "m.h").read_text()
