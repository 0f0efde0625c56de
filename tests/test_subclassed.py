"""Subclassed models: the one route (`PruneLayer` inside the subclass -> `Pruning` -> `export_tflite`), and every fix an error names.

Each test that meets an error message follows the fix it suggests, literally,
and checks that it works: no message points at another error.
"""

from __future__ import annotations

import numpy as np
import pytest

import tfprune
from tfprune._keras import keras
from tfprune.compat import PruneLowMagnitude
from tfprune.masks.wrapping import SUBCLASS_ROUTE, rewrap_fix

L = keras.layers
N_IN = (8, 8, 1)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


def _data(n: int = 64):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, *N_IN)).astype("float32"), rng.integers(0, 10, n)


class RouteNet(keras.Model):
    """The route as the wrap error names it: tfprune.PruneLayer around the Dense/Conv layers inside the subclass."""

    def __init__(self):
        super().__init__()
        self.conv = tfprune.PruneLayer(L.Conv2D(4, 3, activation="relu"))
        self.flat = L.Flatten()
        self.fc = tfprune.PruneLayer(keras.layers.Dense(10))  # the message's example, literally

    def call(self, x):
        return self.fc(self.flat(self.conv(x)))


class PlainNet(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = L.Conv2D(4, 3, activation="relu")
        self.flat = L.Flatten()
        self.fc = L.Dense(10)

    def call(self, x):
        return self.fc(self.flat(self.conv(x)))


class TfmotNet(keras.Model):
    """What the old wrap error suggested: tfmot's prune_low_magnitude with a LayerwiseSchedule inside the subclass."""

    def __init__(self):
        super().__init__()
        import tensorflow_model_optimization as tfmot

        self.flat = L.Flatten()
        self.fc = tfmot.sparsity.keras.prune_low_magnitude(L.Dense(10), pruning_schedule=tfprune.LayerwiseSchedule())

    def call(self, x):
        return self.fc(self.flat(x))


def _compile(model):
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _raw_weights(model):
    return [v.numpy().copy() for v in model.weights]


def test_route_end_to_end_prune_and_export(tmp_path):
    """PruneLayer inside a subclass: found, pruned to the target by Pruning(0.8), exported (sparse, parity checked), model unchanged."""
    x, y = _data()
    model = RouteNet()
    model(x[:1])  # call the model once on a batch to build it
    inv = tfprune.prunable_layers(model)
    assert [(p.layer_type, p.wrapped) for p in inv] == [("Conv2D", True), ("Dense", True)]
    assert len(tfprune.masks.wrapping.wrappers(model)) == 2 and tfprune.masks.wrapping.is_wrapped(model)

    cb = tfprune.Pruning(0.8)
    _compile(model).fit(x, y, epochs=2, batch_size=16, callbacks=[cb], verbose=0)
    assert cb.action_ == "planned" and set(cb.targets_) == set(inv.names)
    assert all(int(w.pruning_step.numpy()) >= cb.end_step_ for w in tfprune.masks.wrapping.wrappers(model))
    assert tfprune.prunable_layers(model).total_sparsity() == pytest.approx(0.8, abs=0.01)  # reached its target

    before, ref = _raw_weights(model), model.predict(x, verbose=0)
    report = tfprune.export_tflite(model, tmp_path / "sub.tflite", mode="sparse", sample_inputs=(x, y))
    assert (tmp_path / "sub.tflite").exists() and report.max_abs_diff < 1e-5 and report.keras_accuracy == report.tflite_accuracy
    assert report.outputs[0].name == "output_1" and report.top1_agreement == 1.0
    dense_kernel = [t for t in report.tensors if t.shape == (10, 144)] or [t for t in report.tensors if t.n_elements == 1440]
    assert dense_kernel and dense_kernel[0].stored == "sparse"
    assert dense_kernel[0].zero_fraction == pytest.approx(tfprune.prunable_layers(model)[1].sparsity(), abs=1e-9)
    assert sum(t.n_elements for t in report.tensors if t.n_elements >= 36) == 36 + 1440  # each kernel once: no mask tensors, no MUL
    assert all(np.array_equal(a, b) for a, b in zip(before, _raw_weights(model)))  # export put the weights back
    np.testing.assert_array_equal(model.predict(x, verbose=0), ref)
    assert not any(w.as_layer for w in tfprune.masks.wrapping.wrappers(model))


def test_wrap_error_names_the_route_and_following_it_literally_works(tmp_path):
    x, y = _data()
    plain = PlainNet()
    plain(x[:1])
    with pytest.raises(TypeError, match="subclassed") as err:
        tfprune.wrap(plain)
    msg = str(err.value)
    assert SUBCLASS_ROUTE in msg and "self.fc = tfprune.PruneLayer(keras.layers.Dense(10))" in msg
    assert "prune_low_magnitude" not in msg and "LayerwiseSchedule" not in msg  # the old, looping suggestion is gone
    with pytest.raises(TypeError, match="subclassed") as err:  # unbuilt too: the route, not the built check first
        tfprune.wrap(PlainNet())
    assert SUBCLASS_ROUTE in str(err.value)
    # the route, step by step as the message says it (RouteNet holds exactly its example)
    model = RouteNet()
    model(x[:1])
    _compile(model).fit(x, y, epochs=1, batch_size=16, callbacks=[tfprune.Pruning(0.8)], verbose=0)
    report = tfprune.export_tflite(model, tmp_path / "m.tflite")
    assert report.max_abs_diff < 1e-5 and report.inputs_were_random
    # wrap on the already wrapped subclass points forward (train it, export it), never to strip
    with pytest.raises(TypeError, match="already holds pruning wrappers") as err:
        tfprune.wrap(model)
    assert "export_tflite(model, path)" in str(err.value) and "strip" not in str(err.value)


def test_tfmot_wrapper_in_subclass_error_names_prune_layer_and_the_fix_works(tmp_path):
    """The issue's loop: tfmot's wrapper inside a subclass -> the callback now names PruneLayer, not strip + wrap."""
    x, y = _data()
    model = TfmotNet()
    model(x[:1])
    with pytest.raises(TypeError, match="tfprune.PruneLayer in place of that wrapper inside the subclass") as err:
        _compile(model).fit(x, y, epochs=1, batch_size=16, callbacks=[tfprune.Pruning(0.8)], verbose=0)
    assert "tfprune.strip" not in str(err.value) and "tfprune.wrap" not in str(err.value)
    assert rewrap_fix(model) in str(err.value)

    class FixedNet(keras.Model):  # the fix: PruneLayer in its place, same arguments
        def __init__(self):
            super().__init__()
            self.flat = L.Flatten()
            self.fc = tfprune.PruneLayer(L.Dense(10), pruning_schedule=tfprune.LayerwiseSchedule())

        def call(self, x):
            return self.fc(self.flat(x))

    fixed = FixedNet()
    fixed(x[:1])  # then build, compile and fit again
    cb = tfprune.Pruning(0.8)
    _compile(fixed).fit(x, y, epochs=2, batch_size=16, callbacks=[cb], verbose=0)
    assert tfprune.prunable_layers(fixed).total_sparsity() == pytest.approx(0.8, abs=0.01)
    # exporting the tfmot-wrapped subclass names the same fix (its call assigns the masked kernel in every graph) ...
    with pytest.raises(TypeError, match="put tfprune.PruneLayer in place of that wrapper inside the subclass"):
        tfprune.export_tflite(model, tmp_path / "t.tflite", mode="float", sample_inputs=x)
    report = tfprune.export_tflite(fixed, tmp_path / "t.tflite", mode="float", sample_inputs=x)  # ... which exports
    assert report.max_abs_diff < 1e-5


def test_tfmot_wrapper_in_functional_model_error_says_strip_and_wrap_and_that_works():
    import tensorflow_model_optimization as tfmot

    x, y = _data()
    inp = keras.Input(N_IN)
    out = tfmot.sparsity.keras.prune_low_magnitude(L.Dense(10, name="fc"), pruning_schedule=tfprune.LayerwiseSchedule())(L.Flatten()(inp))
    model = keras.Model(inp, out)
    with pytest.raises(TypeError, match="strip and wrap again") as err:
        _compile(model).fit(x, y, epochs=1, batch_size=16, callbacks=[tfprune.Pruning(0.8)], verbose=0)
    assert "`model = tfprune.wrap(tfprune.strip(model))`" in str(err.value) and "inside the subclass" not in str(err.value)
    model = tfprune.wrap(tfprune.strip(model))  # the fix, literally; then compile and fit
    _compile(model).fit(x, y, epochs=2, batch_size=16, callbacks=[tfprune.Pruning(0.8)], verbose=0)
    assert tfprune.prunable_layers(model).total_sparsity() == pytest.approx(0.8, abs=0.01)


def test_strip_and_finalize_name_export_and_save_weights_and_both_work(tmp_path):
    x, y = _data()
    model = RouteNet()
    model(x[:1])
    cb = tfprune.Pruning(0.5)
    _compile(model).fit(x, y, epochs=1, batch_size=16, callbacks=[cb], verbose=0)
    for fn in (tfprune.strip, tfprune.clone, lambda m: cb.finalize()):
        with pytest.raises(TypeError, match="subclassed keras.Model") as err:
            fn(model)
        assert "`tfprune.export_tflite(model, path)`" in str(err.value) and "model.save_weights(path)" in str(err.value)
    first = tfprune.export_tflite(model, tmp_path / "a.tflite", mode="float", sample_inputs=x)  # fix 1: export it as it is
    model.save_weights(str(tmp_path / "ckpt"))  # fix 2: keep it with save_weights; load into a new instance called once
    again = RouteNet()
    again(x[:1])
    again.load_weights(str(tmp_path / "ckpt")).expect_partial()  # (the optimizer's slots are not needed)
    assert list(tfprune.prunable_layers(again).sparsity().values()) == list(tfprune.prunable_layers(model).sparsity().values())
    assert [int(w.pruning_step.numpy()) for w in tfprune.masks.wrapping.wrappers(again)] == [
        int(w.pruning_step.numpy()) for w in tfprune.masks.wrapping.wrappers(model)]
    np.testing.assert_array_equal(again(x, training=False), model(x, training=False))
    second = tfprune.export_tflite(again, tmp_path / "b.tflite", mode="float", sample_inputs=x)
    assert [t.zero_fraction for t in second.tensors] == [t.zero_fraction for t in first.tensors] and second.max_abs_diff < 1e-5


def test_plain_subclassed_model_exports_and_an_uncalled_one_names_the_fix(tmp_path):
    x, _ = _data(16)
    model = PlainNet()
    model.build((None, *N_IN))  # built, never called: its inputs are unknown to the converter
    with pytest.raises(ValueError, match="never called") as err:
        tfprune.export_tflite(model, tmp_path / "p.tflite", mode="float")
    assert "model(x[:1])" in str(err.value)
    model(x[:1])  # the fix, literally
    report = tfprune.export_tflite(model, tmp_path / "p.tflite", mode="float", sample_inputs=x)
    assert report.max_abs_diff < 1e-5 and report.n_samples == 16


def test_unbuilt_subclass_error_fix_works():
    model = RouteNet()
    with pytest.raises(ValueError, match="not built") as err:
        tfprune.prunable_layers(model)
    assert "model.build(input_shape)" in str(err.value)
    model.build((None, *N_IN))  # one of the named fixes
    assert [p.wrapped for p in tfprune.prunable_layers(model)] == [True, True]


@pytest.mark.parametrize("fn", [tfprune.profile, tfprune.prunable_layers, tfprune.wrap])
def test_a_single_layer_is_refused_naming_the_argument_and_the_fix_works(fn):
    layer = L.Dense(3, name="head")
    with pytest.raises(TypeError, match="`model` must be a tf-keras Model, got layer Dense 'head'") as err:
        fn(layer)
    assert "keras.Sequential([keras.Input(shape=(64,)), layer])" in str(err.value)
    result = fn(keras.Sequential([keras.Input(shape=(64,)), layer]))  # the fix, literally
    if fn is tfprune.profile:
        assert result.params == 64 * 3 + 3 and result.macs == 64 * 3
    elif fn is tfprune.prunable_layers:
        assert result.names == ["head"]
    else:
        assert [type(w) for w in tfprune.masks.wrapping.wrappers(result)] == [tfprune.PruneLayer]
        assert isinstance(tfprune.masks.wrapping.wrappers(result)[0], PruneLowMagnitude)


class PrunedBlock(L.Layer):
    """A custom layer: its Dense is pruned only when tfprune.PruneLayer is put around it inside the layer."""

    def __init__(self, wrapped: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.wrapped = wrapped
        dense = L.Dense(16, activation="relu")
        self.inner = tfprune.PruneLayer(dense) if wrapped else dense

    def call(self, x):
        return self.inner(x)

    def get_config(self):
        return {**super().get_config(), "wrapped": self.wrapped}


def test_prune_layer_inside_a_block_of_a_subclass_is_found_pruned_and_exported(tmp_path):
    x, y = _data()

    class BlockNet(keras.Model):
        def __init__(self):
            super().__init__()
            self.flat = L.Flatten()
            self.block = PrunedBlock(name="block")
            self.fc = tfprune.PruneLayer(L.Dense(10))

        def call(self, x):
            return self.fc(self.block(self.flat(x)))

    model = BlockNet()
    model(x[:1])
    inv = tfprune.prunable_layers(model)
    assert [(p.path.startswith("block"), "/" in p.path, p.wrapped) for p in inv] == [(True, True, True), (False, False, True)]
    assert inv.n_skipped_kernels == 0
    cb = tfprune.Pruning(0.8)
    _compile(model).fit(x, y, epochs=2, batch_size=16, callbacks=[cb], verbose=0)
    assert set(cb.targets_) == set(inv.names)
    assert tfprune.prunable_layers(model).total_sparsity() == pytest.approx(0.8, abs=0.01) and not cb.notes_
    report = tfprune.export_tflite(model, tmp_path / "b.tflite", sample_inputs=x)
    assert report.max_abs_diff < 1e-5 and sorted(t.stored for t in report.tensors if t.n_elements in (64 * 16, 16 * 10)) == ["sparse", "sparse"]


def test_custom_layer_note_fix_followed_literally_in_a_functional_model(tmp_path):
    """The callback's note: 'put tfprune.PruneLayer around them inside the custom layer'; doing so, they are pruned and exported."""
    x, y = _data()

    def build(wrapped):
        inp = keras.Input(N_IN)
        return keras.Model(inp, L.Dense(10, name="head")(PrunedBlock(wrapped, name="block")(L.Flatten()(inp))))

    model = tfprune.wrap(build(False))
    with pytest.warns(UserWarning, match="put tfprune.PruneLayer around the layers inside the custom layer"):
        _compile(model).fit(x, y, epochs=1, batch_size=16, callbacks=[tfprune.Pruning(0.5)], verbose=0)
    model = tfprune.wrap(build(True))  # the fix: PruneLayer inside the custom layer (wrap leaves it there, clones it whole)
    assert [(p.path.split("/")[0], p.layer_type, p.wrapped) for p in tfprune.prunable_layers(model)] == [
        ("block", "Dense", True), ("head", "Dense", True)]
    cb = tfprune.Pruning(0.8)
    _compile(model).fit(x, y, epochs=2, batch_size=16, callbacks=[cb], verbose=0)
    assert not cb.notes_ and tfprune.prunable_layers(model).total_sparsity() == pytest.approx(0.8, abs=0.01)
    report = tfprune.export_tflite(model, tmp_path / "f.tflite", sample_inputs=x)
    assert report.max_abs_diff < 1e-5
    assert sorted(t.stored for t in report.tensors if t.n_elements in (64 * 16, 16 * 10)) == ["sparse", "sparse"]


def test_a_subclass_nested_in_a_functional_model_follows_the_same_route(tmp_path):
    """wrap/strip of the outer model name the route (the nested subclass cannot be cloned); training and export take it as it is."""
    x, y = _data()
    plain_inner = PlainNet()
    plain_inner(x[:1])
    inp = keras.Input(N_IN)
    with pytest.raises(TypeError, match="nested in the model") as err:
        tfprune.wrap(keras.Model(inp, plain_inner(inp)))
    assert SUBCLASS_ROUTE in str(err.value)
    inner = RouteNet()  # the route: PruneLayer inside the subclass
    inner(x[:1])
    inp = keras.Input(N_IN)
    outer = keras.Model(inp, inner(inp))
    with pytest.raises(ValueError, match="already holds pruning wrappers") as err:
        tfprune.wrap(outer)
    assert "export_tflite(model, path)" in str(err.value) and "strip" in str(err.value) and "call tfprune.strip" not in str(err.value)
    with pytest.raises(TypeError, match="nested in the model"):
        tfprune.strip(outer)
    cb = tfprune.Pruning(0.8)
    _compile(outer).fit(x, y, epochs=2, batch_size=16, callbacks=[cb], verbose=0)
    assert tfprune.prunable_layers(outer).total_sparsity() == pytest.approx(0.8, abs=0.01)
    before, ref = _raw_weights(outer), outer.predict(x, verbose=0)
    report = tfprune.export_tflite(outer, tmp_path / "o.tflite", sample_inputs=x)
    assert report.max_abs_diff < 1e-5 and report.outputs[0].name == outer.output_names[0]
    assert all(np.array_equal(a, b) for a, b in zip(before, _raw_weights(outer)))
    np.testing.assert_array_equal(outer.predict(x, verbose=0), ref)
