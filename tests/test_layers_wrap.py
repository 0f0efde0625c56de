"""Items 3 and 5: layer discovery, wrap/strip round trip, selection, never mutating the input."""

import re

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

import tfprune
from tests.conftest import weights_snapshot
from tfprune._keras import keras

L = keras.layers


def messy_model():
    """Functional model with Rescaling, TFOpLambda, BN, a nested model, Add, Concatenate and a shared layer."""
    inp = keras.Input((12, 12, 3))
    x = L.Rescaling(1 / 255.0)(inp)
    x = L.Conv2D(4, 3, name="c1")(x)
    x = L.BatchNormalization(name="bn")(x)
    x = tf.nn.relu(x)
    inner = keras.Sequential([keras.Input((10, 10, 4)), L.Conv2D(4, 3, padding="same", name="ic"), L.ReLU()], name="inner")
    x = L.Add(name="add")([x, inner(x)])
    shared = L.Dense(5, name="shared")
    a = shared(L.GlobalAveragePooling2D()(x))
    b = shared(L.GlobalMaxPooling2D()(x))
    x = L.Concatenate()([a, b])
    out = L.Dense(3, name="out")(x)
    return keras.Model(inp, out, name="messy")


def all_types_model():
    inp1 = keras.Input((16, 16, 3))
    x = L.Conv2D(4, 3, name="conv2d")(inp1)
    x = L.SeparableConv2D(6, 3, name="sep2d")(x)
    x = L.DepthwiseConv2D(3, name="dw")(x)
    x = L.Conv2DTranspose(4, 3, name="convT")(x)
    x = L.Reshape((12 * 12, 4))(x)
    x = L.Conv1D(4, 3, name="conv1d")(x)
    x = L.GlobalAveragePooling1D()(x)
    x = L.Reshape((2, 2, 1, 1))(x)
    x = L.Conv3D(2, 1, name="conv3d")(x)
    x = L.Flatten()(x)
    tok = keras.Input((5,), dtype="int32")
    e = L.Flatten()(L.Embedding(50, 4, name="emb")(tok))
    out = L.Dense(2, name="dense")(L.Concatenate()([x, e]))
    return keras.Model([inp1, tok], out)


def test_discovery_on_messy_model():
    inv = tfprune.prunable_layers(messy_model())
    assert inv.names == ["c1", "ic", "shared", "out"]
    assert inv["inner/ic"].path == "inner/ic" and inv["ic"].shape == (3, 3, 4, 4)
    assert inv.n_params == 3 * 3 * 3 * 4 + 3 * 3 * 4 * 4 + 4 * 5 + 10 * 3
    reasons = {s.layer_type: s.reason for s in inv.skipped}
    assert "normalization" in reasons["BatchNormalization"]
    assert reasons["TFOpLambda"] == "has no weights"
    assert {"Rescaling", "Add", "Concatenate", "InputLayer"} <= set(reasons)
    assert "skipped:" in inv.table()


def test_discovery_on_every_supported_type():
    inv = tfprune.prunable_layers(all_types_model())
    by = {p.name: p for p in inv}
    assert set(by) == {"conv2d", "sep2d", "convT", "conv1d", "conv3d", "emb", "dense"}
    assert by["sep2d"].weight == "pointwise_kernel" and by["sep2d"].shape == (1, 1, 4, 6)
    assert by["emb"].weight == "embeddings" and by["emb"].n_params == 200
    assert by["convT"].layer_type == "Conv2DTranspose"
    assert any(s.name == "dw" and "depthwise" in s.reason for s in inv.skipped)


def test_sequential_and_unbuilt_models():
    seq = keras.Sequential([keras.Input((6,)), L.Dense(4, name="a"), L.Dense(2, name="b")])
    assert tfprune.prunable_layers(seq).names == ["a", "b"]
    unbuilt = keras.Sequential([L.Dense(4), L.Dense(2)])
    with pytest.raises(ValueError, match="not built.*input_shape"):
        tfprune.prunable_layers(unbuilt)
    with pytest.raises(ValueError, match="not built"):
        tfprune.wrap(unbuilt)


def test_no_prunable_layers():
    m = keras.Sequential([keras.Input((6,)), L.BatchNormalization(), L.ReLU()])
    with pytest.raises(ValueError, match="no prunable layers"):
        tfprune.wrap(m)


@pytest.mark.parametrize("factory", [messy_model, all_types_model])
def test_wrap_strip_round_trip_keeps_outputs_and_input_model(factory):
    keras.utils.set_random_seed(1)
    m = factory()
    xs = [np.random.rand(3, *i.shape[1:]).astype("float32") * (255 if len(i.shape) == 4 and i.shape[-1] == 3 else 1) for i in m.inputs]
    if len(m.inputs) == 2:
        xs[1] = np.random.randint(0, 50, (3, 5)).astype("int32")
    before = weights_snapshot(m)
    config_before = m.get_config()
    ref = m.predict(xs, verbose=0)
    w = tfprune.wrap(m, 0.5)
    assert tfprune.masks.wrapping.is_wrapped(w) and not tfprune.masks.wrapping.is_wrapped(m)
    assert all(p.wrapped for p in tfprune.prunable_layers(w))
    np.testing.assert_allclose(w.predict(xs, verbose=0), ref, rtol=1e-5, atol=1e-6)
    s = tfprune.strip(w)
    assert not tfprune.masks.wrapping.is_wrapped(s)
    assert [type(a).__name__ for a in s.layers] == [type(b).__name__ for b in m.layers]
    np.testing.assert_allclose(s.predict(xs, verbose=0), ref, rtol=1e-5, atol=1e-6)
    # the input model is untouched and shares no variable with the results
    assert m.get_config() == config_before
    for a, b in zip(before, weights_snapshot(m)):
        np.testing.assert_array_equal(a, b)
    ids = {id(v) for v in m.weights}
    assert not ids & {id(v) for v in w.weights} and not ids & {id(v) for v in s.weights}


def test_strip_applies_masks_and_leaves_wrapped_model_alone(tiny):
    w = tfprune.wrap(tiny)
    wr = tfprune.prunable_layers(w)["fc1"].layer
    mask = np.ones(wr.layer.kernel.shape, "float32")
    mask[:, ::2] = 0
    wr.pruning_vars[0][1].assign(mask)
    s = tfprune.strip(w)
    k = s.get_layer("fc1").kernel.numpy()
    assert np.all(k[:, ::2] == 0) and np.count_nonzero(k[:, 1::2]) > 0
    assert np.count_nonzero(wr.layer.kernel.numpy()[:, ::2]) > 0  # wrapped weights not rewritten by strip


def test_include_exclude_by_name_regex_and_type():
    m = messy_model()
    names = lambda model: [p.name for p in tfprune.prunable_layers(model) if p.wrapped]  # noqa: E731
    assert names(tfprune.wrap(m, include=["c1", "out"])) == ["c1", "out"]
    assert names(tfprune.wrap(m, include=re.compile("c.*"))) == ["c1"]
    assert names(tfprune.wrap(m, include="(c1|ic)")) == ["c1", "ic"]
    assert names(tfprune.wrap(m, exclude=keras.layers.Dense)) == ["c1", "ic"]
    assert names(tfprune.wrap(m, include=keras.layers.Dense, exclude="out")) == ["shared"]
    with pytest.raises(ValueError, match="matches no layer|selected no layer"):
        tfprune.wrap(m, include="nothing_matches")
    with pytest.raises(TypeError, match="include"):
        tfprune.wrap(m, include=[3.5])


def test_initial_targets_block_size_and_errors():
    m = messy_model()
    w = tfprune.wrap(m, {"c1": 0.3, "out": 0.6}, block_size=(4, 1))
    inv = tfprune.prunable_layers(w)
    assert inv["c1"].schedule.target_sparsity == pytest.approx(0.3)
    assert inv["out"].schedule.target_sparsity == pytest.approx(0.6)
    assert inv["shared"].schedule.target_sparsity == 0.0
    # block_size selects the block rule; Dense kernels get (4, 1) blocks, convolutions fall back to weights
    assert inv["out"].layer.granularity == "block" and inv["out"].layer.block_size_ == (4, 1)
    with pytest.raises(ValueError, match="unknown layer name"):
        tfprune.wrap(m, {"nope": 0.5})
    with pytest.raises(ValueError, match="must be in \\[0, 1\\)"):
        tfprune.wrap(m, {"c1": 1.2})
    with pytest.raises(ValueError, match="must be in \\[0, 1\\)"):
        tfprune.wrap(m, float("nan"))
    with pytest.raises(ValueError, match="block_size"):
        tfprune.wrap(m, block_size=(0, 1))
    with pytest.raises(ValueError, match="already holds pruning wrappers"):
        tfprune.wrap(w)


def test_subclassed_model_error_names_the_fix():
    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = L.Dense(3)

        def call(self, x):
            return self.d(x)

    m = Sub()
    m(np.zeros((1, 4), "float32"))
    with pytest.raises(TypeError, match="subclassed"):
        tfprune.wrap(m)


def test_wrappers_are_tfmot_prune_low_magnitude(tiny):
    w = tfprune.wrap(tiny)
    assert all(isinstance(p.layer, pruning_wrapper.PruneLowMagnitude) for p in tfprune.prunable_layers(w))
    assert all(isinstance(p.schedule, tfprune.LayerwiseSchedule) for p in tfprune.prunable_layers(w))
