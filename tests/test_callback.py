"""Item 6: the one callback: exact per-layer targets, logs, tf.data, save/load/resume, retargeting."""

import csv
import glob

import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tfprune._keras import keras

TARGETS = {"conv1": 0.3, "conv2": 0.6, "fc1": 0.85, "fc2": 0.5}


def _compiled(model):
    return tfprune.models.compile_classifier(model, learning_rate=1e-3)


def _zeros_exact(model, targets):
    inv = tfprune.prunable_layers(model)
    for name, s in targets.items():
        p = inv[name]
        k = p.kernel()
        want_kept = round(p.n_params * (1 - s))
        assert np.count_nonzero(k) == want_kept, (name, np.count_nonzero(k), want_kept)
        assert np.count_nonzero(p.mask() == 0) == p.n_params - want_kept


def test_reaches_exact_per_layer_targets_by_end_step_with_numpy(tiny, digits_data):
    (xt, yt), _ = digits_data
    w = _compiled(tfprune.wrap(tiny))
    cb = tfprune.LayerwisePruning(TARGETS, begin_step=0, end_step=40, frequency=7, verbose=0)
    h = w.fit(xt[:2560], yt[:2560], batch_size=64, epochs=2, callbacks=[cb], verbose=0)  # 80 steps
    _zeros_exact(w, TARGETS)
    assert cb.end_step_ == 40 and cb.frequency_ == 7
    assert h.history["sparsity/fc1"][-1] == pytest.approx(0.85, abs=1e-3)
    total = sum(round(p.n_params * TARGETS[p.name]) for p in tfprune.prunable_layers(w)) / tfprune.prunable_layers(w).n_params
    assert h.history["sparsity"][-1] == pytest.approx(total, abs=1e-6)
    assert int(tfprune.prunable_layers(w)[0].layer.pruning_step.numpy()) == 80


def test_float_target_uses_allocator_and_default_end_step(tiny, digits_data):
    (xt, yt), _ = digits_data
    w = _compiled(tfprune.wrap(tiny))
    cb = tfprune.LayerwisePruning(0.8, verbose=0)  # uniform, end_step from fit params
    w.fit(xt[:1280], yt[:1280], batch_size=64, epochs=2, callbacks=[cb], verbose=0)  # 40 steps
    assert cb.end_step_ == round(0.7 * 40)
    assert cb.allocation_ is not None and cb.allocation_.method == "uniform"
    _zeros_exact(w, cb.targets_)
    assert tfprune.prunable_layers(w).total_sparsity() == pytest.approx(cb.allocation_.total_sparsity, abs=1e-6)


def test_tf_data_input_and_logs_reach_history_csv_and_tensorboard(tiny, digits_data, tmp_path):
    (xt, yt), _ = digits_data
    ds = tf.data.Dataset.from_tensor_slices((xt[:1280], yt[:1280])).batch(64)
    w = _compiled(tfprune.wrap(tiny))
    csv_path = tmp_path / "log.csv"
    tb_dir = tmp_path / "tb"
    cbs = [
        tfprune.LayerwisePruning(TARGETS, end_step=30, verbose=0),
        keras.callbacks.CSVLogger(str(csv_path)),
        keras.callbacks.TensorBoard(str(tb_dir)),
    ]
    h = w.fit(ds, epochs=2, callbacks=cbs, verbose=0)
    _zeros_exact(w, TARGETS)
    rows = list(csv.DictReader(open(csv_path)))
    assert float(rows[-1]["sparsity/fc1"]) == pytest.approx(0.85, abs=1e-3)
    assert "sparsity" in rows[-1] and len(h.history["sparsity"]) == 2
    events = glob.glob(str(tb_dir / "train" / "events.*"))
    assert events
    tags = set()
    for e in tf.compat.v1.train.summary_iterator(events[0]):
        for v in e.summary.value:
            tags.add(v.tag)
    assert "epoch_sparsity" in tags and "epoch_sparsity/fc1" in tags


@pytest.mark.parametrize("ext", [".keras", ".h5"])
def test_save_mid_pruning_load_and_resume(tiny, digits_data, tmp_path, ext):
    (xt, yt), _ = digits_data
    w = _compiled(tfprune.wrap(tiny))
    cb = tfprune.LayerwisePruning(TARGETS, begin_step=0, end_step=60, frequency=5, verbose=0)
    w.fit(xt[:1280], yt[:1280], batch_size=64, epochs=1, callbacks=[cb], verbose=0)  # 20 of 60 steps
    mid = tfprune.prunable_layers(w).sparsity()
    assert 0 < mid["fc1"] < 0.85
    path = str(tmp_path / f"mid{ext}")
    w.save(path)
    loaded = tfprune.load_model(path)
    inv = tfprune.prunable_layers(loaded)
    assert all(p.wrapped for p in inv)
    assert int(inv[0].layer.pruning_step.numpy()) == 20
    sched = inv["fc1"].schedule
    assert isinstance(sched, tfprune.LayerwiseSchedule)
    assert (sched.target_sparsity, sched.begin_step, sched.end_step, sched.frequency) == (pytest.approx(0.85), 0, 60, 5)
    for k, v in inv.sparsity().items():
        assert v == pytest.approx(mid[k])
    x = xt[:32]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), w.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    # resume: end_step=None keeps the saved ramp; the step continues from 20
    cb2 = tfprune.LayerwisePruning(TARGETS, verbose=0)
    loaded.fit(xt[1280:2560], yt[1280:2560], batch_size=64, epochs=2, callbacks=[cb2], verbose=0)
    assert cb2.end_step_ == 60
    assert int(tfprune.prunable_layers(loaded)[0].layer.pruning_step.numpy()) == 60
    _zeros_exact(loaded, TARGETS)


def test_load_model_without_scope_fails_but_helper_works(tiny, tmp_path):
    w = tfprune.wrap(tiny, 0.5)
    path = str(tmp_path / "m.keras")
    w.save(path)
    with pytest.raises(Exception):  # noqa: B017 - keras raises TypeError/ValueError depending on version
        keras.models.load_model(path)
    assert tfprune.is_wrapped(tfprune.load_model(path))
    with pytest.raises(FileNotFoundError):
        tfprune.load_model(str(tmp_path / "missing.keras"))


def test_retarget_mid_training_without_recompiling(tiny, digits_data):
    (xt, yt), _ = digits_data
    w = _compiled(tfprune.wrap(tiny))

    class Retarget(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                tfprune.prunable_layers(self.model)["fc1"].schedule.set(target_sparsity=0.95)

    cb = tfprune.LayerwisePruning({"fc1": 0.5}, begin_step=0, end_step=10, frequency=1, verbose=0)
    w.fit(xt[:1280], yt[:1280], batch_size=64, epochs=2, callbacks=[cb, Retarget()], verbose=0)
    # after end_step the mask is frozen at 0.5 in epoch 0; a retarget moves the schedule but no further pruning happens
    assert tfprune.prunable_layers(w)["fc1"].sparsity() == pytest.approx(0.5, abs=1e-3)
    cb2 = tfprune.LayerwisePruning({"fc1": 0.5}, begin_step=0, end_step=60, frequency=1, verbose=0)
    w2 = _compiled(tfprune.wrap(tiny))
    w2.fit(xt[:1280], yt[:1280], batch_size=64, epochs=3, callbacks=[cb2, Retarget()], verbose=0)
    assert tfprune.prunable_layers(w2)["fc1"].sparsity() == pytest.approx(0.95, abs=1e-3)


def test_bad_inputs(tiny, digits_data):
    (xt, yt), _ = digits_data
    for bad in (1.0, -0.2, float("nan"), {"fc1": 1.5}, {"fc1": float("nan")}, {}):
        with pytest.raises(ValueError):
            tfprune.LayerwisePruning(bad)
    with pytest.raises(ValueError, match="end_step"):
        tfprune.LayerwisePruning(0.5, begin_step=10, end_step=5)
    w = _compiled(tfprune.wrap(tiny))
    with pytest.raises(ValueError, match="unknown layer name"):
        w.fit(xt[:64], yt[:64], epochs=1, callbacks=[tfprune.LayerwisePruning({"nope": 0.5}, verbose=0)], verbose=0)
    plain = _compiled(tfprune.clone(tiny))
    with pytest.raises(ValueError, match="no pruning wrappers.*tfprune.wrap"):
        plain.fit(xt[:64], yt[:64], epochs=1, callbacks=[tfprune.LayerwisePruning(0.5, verbose=0)], verbose=0)


def test_warns_when_fit_ends_before_end_step(tiny, digits_data):
    (xt, yt), _ = digits_data
    w = _compiled(tfprune.wrap(tiny))
    with pytest.warns(UserWarning, match="before end_step"):
        w.fit(xt[:640], yt[:640], batch_size=64, epochs=1, callbacks=[tfprune.LayerwisePruning(0.5, end_step=100, verbose=0)], verbose=0)


def test_nested_model_is_pruned(digits_data):
    (xt, yt), _ = digits_data
    inner = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 3, strides=2, name="ic"), keras.layers.Flatten()], name="body")
    inp = keras.Input((28, 28, 1))
    out = keras.layers.Dense(10, name="head")(inner(inp))
    m = keras.Model(inp, out)
    w = _compiled(tfprune.wrap(m))
    w.fit(xt[:640], yt[:640], batch_size=64, epochs=1, verbose=0, callbacks=[tfprune.LayerwisePruning({"ic": 0.5, "head": 0.75}, end_step=5, verbose=0)])
    _zeros_exact(w, {"ic": 0.5, "head": 0.75})
