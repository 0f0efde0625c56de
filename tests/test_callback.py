"""The one callback: exact per-layer targets, every granularity in the graph, logs, tf.data, exact resume."""

import csv
import glob

import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tfprune._keras import keras
from tfprune.masks.wrapping import channel_masks

TARGETS = {"conv1": 0.3, "conv2": 0.6, "fc1": 0.85, "fc2": 0.5}


def _rows(x, y, n):
    """Exactly ``n`` samples (repeating the set if it is smaller): no assertion depends on the dataset's size."""
    return np.resize(x, (n,) + x.shape[1:]), np.resize(y, (n,) + y.shape[1:])


def _compiled(model, optimizer="adam", **kw):
    opt = keras.optimizers.SGD(0.05) if optimizer == "sgd" else keras.optimizers.Adam(1e-3)
    model.compile(optimizer=opt, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"], **kw)
    return model


def _zeros_exact(model, targets):
    inv = tfprune.prunable_layers(model)
    for name, s in targets.items():
        p = inv[name]
        k = p.kernel()
        want_kept = round(p.n_params * (1 - s))
        assert np.count_nonzero(k) == want_kept, (name, np.count_nonzero(k), want_kept)
        assert np.count_nonzero(p.mask() == 0) == p.n_params - want_kept


def _masks(model):
    """Every mask of the model: weight masks per wrapped layer, or the keep-vector of every channel wrapper."""
    cms = channel_masks(model)
    if cms:
        return {m.name: m.keep.numpy().copy() for m in cms}
    return {p.name: p.mask().copy() for p in tfprune.prunable_layers(model)}


def _wrap(model, granularity, **kw):
    return tfprune.wrap(model, granularity={"2:4": "2:4", "channel": "channel"}.get(granularity, "unstructured"), **kw)


def _callback(granularity, **kw):
    """The one callback: 60% of the weights (50% under 2:4), or 40% of the MACs over channel groups."""
    if granularity == "channel":
        return tfprune.Pruning(macs=0.4, granularity="channel", **kw)
    return tfprune.Pruning(0.6 if granularity != "2:4" else 0.5, granularity=granularity, **kw)


def _step(model):
    cms = channel_masks(model)
    return int(cms[0].pruning_step.numpy()) if cms else int(tfprune.prunable_layers(model)[0].layer.pruning_step.numpy())


def test_reaches_exact_per_layer_targets_by_end_step_with_numpy(tiny, digits_data):
    (xt, yt), _ = digits_data
    x, y = _rows(xt, yt, 2560)
    w = _compiled(tfprune.wrap(tiny))
    cb = tfprune.Pruning(TARGETS, begin_step=0, end_step=40, frequency=7)
    h = w.fit(x, y, batch_size=64, epochs=2, callbacks=[cb], verbose=0)  # 80 steps
    _zeros_exact(w, TARGETS)
    assert cb.end_step_ == 40 and cb.frequency_ == 7 and cb.action_ == "planned"
    assert h.history["sparsity/fc1"][-1] == pytest.approx(0.85, abs=1e-3)
    inv = tfprune.prunable_layers(w)
    total = sum(round(p.n_params * TARGETS[p.name]) for p in inv) / inv.n_params
    assert h.history["sparsity"][-1] == pytest.approx(total, abs=1e-6)
    assert int(inv[0].layer.pruning_step.numpy()) == 80


def test_float_target_uses_the_plan_defaults_and_default_end_step(tiny, digits_data):
    (xt, yt), _ = digits_data
    x, y = _rows(xt, yt, 1280)
    w = _compiled(tfprune.wrap(tiny))
    cb = tfprune.Pruning(0.8)  # How Compact? defaults, end_step from fit params
    w.fit(x, y, batch_size=64, epochs=2, callbacks=[cb], verbose=0)  # 40 steps
    assert cb.end_step_ == round(0.7 * 40)
    assert cb.plan_.allocator == "importance" and cb.scores_.method == "capacity_energy"
    _zeros_exact(w, cb.targets_)
    expected = tfprune.plan(tiny, 0.8)  # the same plan, computed apart from the callback
    assert expected.targets == pytest.approx(cb.targets_)
    assert tfprune.prunable_layers(w).total_sparsity() == pytest.approx(cb.plan_.achieved, abs=1e-9)
    assert cb.plan_.achieved == pytest.approx(0.8, abs=1e-4)
    assert tfprune.Pruning is tfprune.Pruning


def test_tf_data_input_and_logs_reach_history_csv_and_tensorboard(tiny, digits_data, tmp_path):
    (xt, yt), _ = digits_data
    x, y = _rows(xt, yt, 1280)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    w = _compiled(tfprune.wrap(tiny))
    csv_path = tmp_path / "log.csv"
    tb_dir = tmp_path / "tb"
    cbs = [tfprune.Pruning(TARGETS, end_step=30), keras.callbacks.CSVLogger(str(csv_path)), keras.callbacks.TensorBoard(str(tb_dir))]
    h = w.fit(ds, epochs=2, callbacks=cbs, verbose=0)
    _zeros_exact(w, TARGETS)
    rows = list(csv.DictReader(open(csv_path)))
    assert float(rows[-1]["sparsity/fc1"]) == pytest.approx(0.85, abs=1e-3)
    assert "sparsity" in rows[-1] and len(h.history["sparsity"]) == 2
    events = glob.glob(str(tb_dir / "train" / "events.*"))
    assert events
    tags = {v.tag for e in tf.compat.v1.train.summary_iterator(events[0]) for v in e.summary.value}
    assert "epoch_sparsity" in tags and "epoch_sparsity/fc1" in tags


def _check_granularity(model, cb, granularity):
    p = cb.plan_
    if granularity == "channel":
        assert cb.channels_masked() == {g: sorted(c) for g, c in p.channels.items() if c}  # every group reached its planned channels
        assert "fc2" in p.excluded, "the logits layer keeps every class"
        for m in channel_masks(model):  # every wrapper of a group masks the same channels
            assert int(np.count_nonzero(m.keep.numpy() == 0)) == int(round(m.pruning_schedule.target_sparsity * m.channels))
        small = cb.finalize()
        rep = cb.shrink_report_
        assert rep.max_abs_diff <= rep.tolerance and not rep.kept  # every masked channel removed, outputs unchanged
        assert tfprune.profile(small).macs == p.macs_after and small.count_params() == p.params_after
        return
    inv = tfprune.prunable_layers(model)
    for layer in inv:
        k = layer.kernel()
        assert np.count_nonzero(k == 0) == p.removed[layer.name], (granularity, layer.name)
    assert inv.total_sparsity() == pytest.approx(p.achieved, abs=1e-9)
    if granularity == "2:4":
        assert "conv1" in p.excluded  # one input channel: no group of 4
        for layer in inv:
            if p.targets[layer.name] == 0:
                continue
            k = layer.kernel()
            groups = np.moveaxis(k, -2, -1).reshape(-1, 4)
            assert np.all(np.count_nonzero(groups, axis=1) <= 2)
    if granularity == "block":
        k = inv["fc1"].kernel()
        blocks = k.reshape(k.shape[0] // 4, 4, k.shape[1])
        assert np.all((np.abs(blocks).sum(1) == 0) | np.all(blocks != 0, axis=1))  # whole 4x1 blocks


@pytest.mark.parametrize("granularity", ["unstructured", "block", "channel", "2:4"])
def test_every_granularity_reaches_the_plan_exactly_with_steps_per_execution(tiny, digits_data, granularity):
    (xt, yt), _ = digits_data
    x, y = _rows(xt, yt, 1280)
    w = _compiled(_wrap(tiny, granularity), steps_per_execution=4)
    cb = _callback(granularity, end_step=24, frequency=4)
    w.fit(x, y, batch_size=64, epochs=2, callbacks=[cb], verbose=0)  # 40 steps, callbacks see 10 executions
    assert _step(w) == 40
    _check_granularity(w, cb, granularity)


@pytest.mark.parametrize("granularity", ["unstructured", "channel"])
def test_steps_per_execution_gives_the_masks_of_one_step_per_execution(tiny, digits_data, granularity):
    """Masks are computed in the train step: 4 steps per execution give the masks and weights of 1 at every epoch end."""
    (xt, yt), _ = digits_data
    x, y = _rows(xt, yt, 640)
    runs = []
    for spe in (1, 4):
        keras.utils.set_random_seed(0)
        w = _compiled(_wrap(tfprune.clone(tiny), granularity), optimizer="sgd", steps_per_execution=spe)
        w.fit(x, y, batch_size=64, epochs=2, shuffle=False, callbacks=[_callback(granularity, end_step=18, frequency=3)], verbose=0)
        runs.append((_masks(w), [v.numpy() for v in w.weights]))
    (m1, w1), (m4, w4) = runs
    assert m1.keys() == m4.keys() and all(np.array_equal(m1[k], m4[k]) for k in m1)
    assert any((m == 0).any() for m in m1.values())
    for a, b in zip(w1, w4):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_channel_pruning_can_include_the_outputs(tiny, digits_data):
    (xt, yt), _ = digits_data
    x, y = _rows(xt, yt, 640)
    w = _compiled(tfprune.wrap(tiny, granularity="channel", include_outputs=True))
    cb = tfprune.Pruning(macs=0.4, granularity="channel", include_outputs=True, end_step=8)
    w.fit(x, y, batch_size=64, epochs=1, callbacks=[cb], verbose=0)
    assert "fc2" not in cb.plan_.excluded
    assert "fc2" in cb.channels_masked()


# --------------------------------------------------------------------- resume
RESUME_END = 30  # ramp: steps 0..30, frequency 3; each epoch is 10 steps


def _resume_run(tiny, x, y, granularity, epochs, callbacks=(), model=None, initial_epoch=0):
    w = model if model is not None else _compiled(_wrap(tiny, granularity), optimizer="sgd")
    cb = _callback(granularity, begin_step=0, end_step=RESUME_END, frequency=3)
    w.fit(x, y, batch_size=64, epochs=epochs, initial_epoch=initial_epoch, shuffle=False, callbacks=[cb, *callbacks], verbose=0)
    return w, cb


@pytest.fixture(scope="module")
def resume_reference(trained_tiny, digits_data):
    (xt, yt), _ = digits_data
    x, y = _rows(xt, yt, 640)
    out = {}
    for g in ("unstructured", "block", "channel", "2:4"):
        w, _ = _resume_run(tfprune.clone(trained_tiny), x, y, g, epochs=4)
        out[g] = (_masks(w), [v.numpy().copy() for v in w.weights])
    return x, y, out


class _Stop(keras.callbacks.Callback):
    """Interrupts training with an exception at the end of an epoch (after the others' on_epoch_end)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt("simulated interruption")


SAVE_PATHS = ["keras", "h5", "save_weights", "checkpoint_weights_only", "backup_and_restore"]
# Every save path with unstructured masks; channel keep-vectors through a .keras file, save_weights and BackupAndRestore in the default
# run; every other pair marked slow (`make test-all`): the save paths do not depend on the mask kind.
RESUME_CASES = [
    pytest.param(how, g, marks=() if g == "unstructured" or (g == "channel" and how in ("keras", "save_weights", "backup_and_restore"))
                 else pytest.mark.slow)
    for g in ("unstructured", "block", "channel", "2:4") for how in SAVE_PATHS
]


@pytest.mark.parametrize("how, granularity", RESUME_CASES)
def test_interrupted_and_uninterrupted_runs_give_identical_masks(tiny, resume_reference, tmp_path, how, granularity, monkeypatch):
    x, y, reference = resume_reference
    ref_masks, ref_weights = reference[granularity]
    fresh = lambda: _compiled(_wrap(tiny, granularity), optimizer="sgd")  # noqa: E731
    if how == "backup_and_restore":
        backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
        with pytest.raises(KeyboardInterrupt):
            _resume_run(tiny, x, y, granularity, epochs=4, callbacks=[backup, _Stop(1)])
        # a new process would build the model again: BackupAndRestore restores it (listed after our callback)
        calls = []
        monkeypatch.setattr("tfprune.training.callbacks.plan", lambda *a, **k: calls.append(1))
        resumed, cb = _resume_run(tiny, x, y, granularity, epochs=4, callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))], model=fresh())
    else:
        ckpt = keras.callbacks.ModelCheckpoint(str(tmp_path / "ckpt"), save_weights_only=True)
        first, _ = _resume_run(tiny, x, y, granularity, epochs=2, callbacks=[ckpt])  # 20 of 30 ramp steps
        mid = _masks(first)
        if how in ("keras", "h5"):
            path = str(tmp_path / f"mid.{how}")
            first.save(path)
            model = tfprune.load_model(path)
        elif how == "save_weights":
            path = str(tmp_path / "mid.weights.h5")
            first.save_weights(path)
            model = fresh()
            model.load_weights(path)
        else:
            model = fresh()  # the checkpoint written by ModelCheckpoint at the end of epoch 2
            model.load_weights(str(tmp_path / "ckpt")).expect_partial()
        assert all(np.array_equal(m, _masks(model)[k]) for k, m in mid.items())
        cms = channel_masks(model)
        sched = cms[-1].pruning_schedule if cms else tfprune.prunable_layers(model)["fc1"].schedule
        assert (sched.begin_step, sched.end_step, sched.frequency) == (0, RESUME_END, 3)
        calls = []
        monkeypatch.setattr("tfprune.training.callbacks.plan", lambda *a, **k: calls.append(1))
        resumed, cb = _resume_run(tiny, x, y, granularity, epochs=4, model=model, initial_epoch=2)
    assert cb.action_ == "resumed" and cb.plan_ is None and not calls, "a resumed run never re-scores pruned weights"
    got = _masks(resumed)
    for k, m in ref_masks.items():
        assert np.array_equal(m, got[k]), (how, granularity, k)
    for a, b in zip(ref_weights, [v.numpy() for v in resumed.weights]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_mid_ramp_with_another_request_raises_unless_replan(tiny, digits_data):
    (xt, yt), _ = digits_data
    x, y = _rows(xt, yt, 640)
    w = _compiled(tfprune.wrap(tiny))
    w.fit(x, y, batch_size=64, epochs=1, callbacks=[tfprune.Pruning(0.5, end_step=30)], verbose=0)
    with pytest.raises(ValueError, match="mid-ramp.*replan=True"):
        w.fit(x, y, batch_size=64, epochs=1, callbacks=[tfprune.Pruning(0.8, end_step=30)], verbose=0)
    cb = tfprune.Pruning(0.8, replan=True)
    w.fit(x, y, batch_size=64, epochs=1, callbacks=[cb], verbose=0)
    assert cb.action_ == "replanned" and cb.begin_step_ == 10
    _zeros_exact(w, cb.targets_)


def test_second_fit_after_the_ramp_keeps_or_retargets_never_silently_nothing(tiny, digits_data):
    (xt, yt), _ = digits_data
    x, y = _rows(xt, yt, 640)
    w = _compiled(tfprune.wrap(tiny))
    w.fit(x, y, batch_size=64, epochs=1, callbacks=[tfprune.Pruning(0.5)], verbose=0)
    before = _masks(w)
    same = tfprune.Pruning(0.5)
    w.fit(x, y, batch_size=64, epochs=1, callbacks=[same], verbose=0)
    assert same.action_ == "unchanged"
    assert all(np.array_equal(m, _masks(w)[k]) for k, m in before.items())
    more = tfprune.Pruning(0.9)
    w.fit(x, y, batch_size=64, epochs=2, callbacks=[more], verbose=0)
    assert more.action_ == "replanned" and more.begin_step_ == 20
    assert tfprune.prunable_layers(w).total_sparsity() == pytest.approx(0.9, abs=1e-4)
    _zeros_exact(w, more.targets_)
    # the ramp starts from where each layer is: already-removed weights stay removed
    for k, m in before.items():
        assert np.all(_masks(w)[k][m == 0] == 0)


def test_replan_every_keeps_dense_importance_scores(tiny, digits_data, monkeypatch):
    (xt, yt), _ = digits_data
    x, y = _rows(xt, yt, 640)
    import tfprune.planning.planner as plan_mod

    real = plan_mod.score_layers
    calls = []
    monkeypatch.setattr(plan_mod, "score_layers", lambda *a, **k: calls.append(1) or real(*a, **k))
    w = _compiled(tfprune.wrap(tiny))
    cb = tfprune.Pruning(0.8, replan_every=1, end_step=35)
    w.fit(x, y, batch_size=64, epochs=4, callbacks=[cb], verbose=0)
    assert len(calls) == 1, "data-free importance is scored once, on the dense weights"
    assert tfprune.prunable_layers(w).total_sparsity() == pytest.approx(0.8, abs=1e-4)


def test_quiet_by_default_and_verbose_prints_the_plan(tiny, digits_data, capsys):
    (xt, yt), _ = digits_data
    x, y = _rows(xt, yt, 128)
    w = _compiled(tfprune.wrap(tiny))
    w.fit(x, y, batch_size=64, epochs=1, callbacks=[tfprune.Pruning(0.5, end_step=1)], verbose=0)
    assert capsys.readouterr().out == ""
    w2 = _compiled(tfprune.wrap(tiny))
    w2.fit(x, y, batch_size=64, epochs=1, callbacks=[tfprune.Pruning(0.5, end_step=1, verbose=1)], verbose=0)
    out = capsys.readouterr().out
    assert "plan: sparsity 0.5000 requested" in out and "fc1" in out and "planned" in out


def test_load_model_helper_and_plain_keras_load_after_import(tiny, tmp_path):
    w = tfprune.wrap(tiny, 0.5)
    path = str(tmp_path / "m.keras")
    w.save(path)
    assert tfprune.masks.wrapping.is_wrapped(tfprune.load_model(path))
    assert tfprune.masks.wrapping.is_wrapped(keras.models.load_model(path))  # importing tfprune registers its classes
    with pytest.raises(FileNotFoundError):
        tfprune.load_model(str(tmp_path / "missing.keras"))


def test_retarget_mid_training_without_recompiling(tiny, digits_data):
    (xt, yt), _ = digits_data
    x, y = _rows(xt, yt, 1280)

    class Retarget(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                tfprune.prunable_layers(self.model)["fc1"].schedule.set(target_sparsity=0.95)

    w = _compiled(tfprune.wrap(tiny))
    cb = tfprune.Pruning({"fc1": 0.5}, begin_step=0, end_step=10, frequency=1)
    w.fit(x, y, batch_size=64, epochs=2, callbacks=[cb, Retarget()], verbose=0)
    # after end_step the mask is frozen at 0.5 in epoch 0; a retarget moves the schedule but no further pruning happens
    assert tfprune.prunable_layers(w)["fc1"].sparsity() == pytest.approx(0.5, abs=1e-3)
    cb2 = tfprune.Pruning({"fc1": 0.5}, begin_step=0, end_step=60, frequency=1)
    w2 = _compiled(tfprune.wrap(tiny))
    w2.fit(x, y, batch_size=64, epochs=3, callbacks=[cb2, Retarget()], verbose=0)
    assert tfprune.prunable_layers(w2)["fc1"].sparsity() == pytest.approx(0.95, abs=1e-3)


def test_bad_inputs_fail_at_construction_with_the_valid_names(tiny, digits_data):
    (xt, yt), _ = digits_data
    for bad in (1.0, -0.2, float("nan"), {"fc1": 1.5}, {"fc1": float("nan")}, {}, "0.5", None):
        with pytest.raises(ValueError):
            tfprune.Pruning(bad)
    with pytest.raises(ValueError, match="end_step"):
        tfprune.Pruning(0.5, begin_step=10, end_step=5)
    with pytest.raises(ValueError, match="unknown allocation 'nope'.*importance.*lamp"):
        tfprune.Pruning(0.5, allocation="nope")
    with pytest.raises(ValueError, match="unknown importance.*capacity"):
        tfprune.Pruning(0.5, importance="nope")
    with pytest.raises(ValueError, match="unknown granularity.*channel"):
        tfprune.Pruning(0.5, granularity="row")
    with pytest.raises(ValueError, match="calibration data"):
        tfprune.Pruning(0.5, importance="sensitivity")
    w = _compiled(tfprune.wrap(tiny))
    with pytest.raises(ValueError, match="unknown layer name"):
        w.fit(xt[:64], yt[:64], epochs=1, callbacks=[tfprune.Pruning({"nope": 0.5})], verbose=0)
    plain = _compiled(tfprune.clone(tiny))
    with pytest.raises(ValueError, match="no pruning wrappers.*tfprune.wrap"):
        plain.fit(xt[:64], yt[:64], epochs=1, callbacks=[tfprune.Pruning(0.5)], verbose=0)


def test_warns_when_fit_ends_before_end_step(tiny, digits_data):
    (xt, yt), _ = digits_data
    x, y = _rows(xt, yt, 640)
    w = _compiled(tfprune.wrap(tiny))
    with pytest.warns(UserWarning, match="before end_step"):
        w.fit(x, y, batch_size=64, epochs=1, callbacks=[tfprune.Pruning(0.5, end_step=100)], verbose=0)


def test_nested_model_is_pruned(digits_data):
    (xt, yt), _ = digits_data
    x, y = _rows(xt, yt, 640)
    inner = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 3, strides=2, name="ic"), keras.layers.Flatten()], name="body")
    inp = keras.Input((28, 28, 1))
    out = keras.layers.Dense(10, name="head")(inner(inp))
    w = _compiled(tfprune.wrap(keras.Model(inp, out)))
    w.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[tfprune.Pruning({"ic": 0.5, "head": 0.75}, end_step=5)])
    _zeros_exact(w, {"ic": 0.5, "head": 0.75})
