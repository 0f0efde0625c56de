"""The callback says what it did not do: NaN weights, weights it cannot reach, a ramp cut short, a mid-ramp file."""

import warnings

import numpy as np
import pytest

import tfprune
from tfprune._keras import keras


def _cnn(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(8, 3, activation="relu", name="c1")(inp)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(16, activation="relu", name="f1")(h)
    return keras.Model(inp, keras.layers.Dense(3, name="out")(h))


def _data(n=64):
    rng = np.random.default_rng(0)
    return rng.random((n, 8, 8, 1), dtype=np.float32), rng.integers(0, 3, n)


def _fit(model, callbacks, epochs=2, **kw):
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data()
    return model.fit(x, y, batch_size=8, epochs=epochs, verbose=0, shuffle=False, callbacks=callbacks, **kw)


class _PoisonAt(keras.callbacks.Callback):
    """Writes one NaN into layer ``name``'s kernel after the ``at``-th batch (a diverged step, made deterministic)."""

    def __init__(self, name, at):
        super().__init__()
        self.name_, self.at, self.seen = name, at, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.at:
            inner = next(p.inner for p in tfprune.prunable_layers(self.model) if p.name == self.name_)
            k = inner.kernel.numpy()
            k.flat[-1] = np.nan
            inner.kernel.assign(k)


@pytest.mark.parametrize("granularity", ["unstructured", "channel"])
def test_nan_weights_stop_training_at_the_next_mask_update_naming_layer_and_step(granularity):
    model = tfprune.wrap(_cnn(), granularity=granularity)
    kw = dict(macs=0.3, granularity="channel") if granularity == "channel" else dict(sparsity=0.5)
    cb = tfprune.Pruning(**kw, end_step=12, frequency=2)
    with pytest.raises(FloatingPointError, match=r"non-finite weights \(NaN/inf\) at pruning step [4-7]: \{[^}]*'f1': \d+.*Fix"):
        _fit(model, [cb, _PoisonAt("f1", 4)])


def test_nan_weights_only_warn_when_asked_and_logged_sparsity_says_so():
    model = tfprune.wrap(_cnn())
    cb = tfprune.Pruning(0.5, end_step=12, frequency=2, on_non_finite="warn")
    with pytest.warns(UserWarning) as record:
        hist = _fit(model, [cb, _PoisonAt("f1", 4)])
    text = " ".join(str(w.message) for w in record)
    assert "non-finite weights (NaN/inf)" in text and "counts non-finite weights as not pruned" in text
    assert any("non-finite" in n for n in cb.notes_)
    assert np.isfinite(hist.history["sparsity"]).all()
    with pytest.raises(ValueError, match="on_non_finite must be.*got 'x'"):
        tfprune.Pruning(0.5, on_non_finite="x")


def test_training_stopped_before_the_ramp_ends_is_said_and_the_saved_file_says_it_too(tmp_path):
    model = tfprune.wrap(_cnn())
    cb = tfprune.Pruning(0.8, end_step=100, frequency=4)  # 8 steps per epoch: EarlyStopping stops long before step 100

    class Stop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    with pytest.warns(UserWarning, match=r"training ended at pruning step 8, before the ramp's end_step=100.*total sparsity is 0\.\d+ of the 0\.8000 planned"):
        _fit(model, [cb, Stop()], epochs=5)
    assert any("end_step=100" in n for n in cb.notes_) and "note: training ended" in cb.summary()
    path = str(tmp_path / "mid.keras")
    model.save(path)
    with pytest.warns(UserWarning, match="stopped mid-ramp: pruning step 8 of end_step 100.*Fix: fit it again"):
        loaded = tfprune.load_model(path)
    with pytest.warns(UserWarning, match="exporting model .* stopped mid-ramp"):
        tfprune.export_tflite(loaded, str(tmp_path / "m.tflite"), mode="float")


def test_a_finished_ramp_warns_nothing(tmp_path):
    model = tfprune.wrap(_cnn())
    cb = tfprune.Pruning(0.5, end_step=8, frequency=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _fit(model, [cb], epochs=2)
        path = str(tmp_path / "done.keras")
        model.save(path)
        tfprune.load_model(path)
    assert cb.notes_ == []


class Block(keras.layers.Layer):
    """A custom layer holding a Dense: tfprune's wrappers cannot reach inside it."""

    def __init__(self, units=32, **kw):
        super().__init__(**kw)
        self.units = units
        self.inner = keras.layers.Dense(units, activation="relu")

    def call(self, x):
        return self.inner(x)

    def get_config(self):  # its name survives tfprune.wrap's rebuild
        return {**super().get_config(), "units": self.units}


def test_weights_inside_custom_layers_are_reported_with_the_total_over_all_weights():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, name="c1")(inp))
    h = Block(64, name="block")(h)
    model = keras.Model(inp, keras.layers.Dense(3, name="out")(h))
    inv = tfprune.prunable_layers(model)
    hidden = 144 * 64
    assert inv.n_skipped_kernels == hidden
    assert "block" in inv.table() and "not pruned" in inv.table()
    wrapped = tfprune.wrap(model)
    cb = tfprune.Pruning(0.8, end_step=8, frequency=2)
    with pytest.warns(UserWarning, match=r"9216 of \d+ Conv/Dense weights \(\d+\.\d%\) sit inside layers tfprune cannot wrap.*block \(Block, 9216\)"
                                         r".*is 0\.\d+ of all of them.*PruneLayer"):
        _fit(wrapped, [cb])
    n = sum(p.n_params for p in tfprune.prunable_layers(wrapped))
    assert f"{0.8 * n / (n + hidden):.4f}" in cb.notes_[0]
