"""capacity_activation: effective rank of a layer's output-channel correlation on data, over its channel count."""

import numpy as np
import pytest

from tfprune._keras import keras
from tfprune.importance import list_importance, needs_data, score_layers
from tfprune.importance.activation import CorrelationAccumulator, correlation_capacity


def test_accumulator_matches_numpy_corrcoef_and_drops_constant_channels():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 5)) @ rng.normal(size=(5, 5))
    a = np.hstack([a, np.full((500, 1), 3.0)])  # a constant channel
    acc = CorrelationAccumulator(6)
    for part in np.array_split(a, 7):
        acc.add(part)
    corr, live = acc.correlation()
    assert live.tolist() == [True] * 5 + [False]
    np.testing.assert_allclose(corr, np.corrcoef(a[:, :5], rowvar=False), atol=1e-9)
    # the absolute scale and a large common offset change nothing
    for scale, offset in ((1e-7, 0.0), (1.0, 1e6)):
        acc2 = CorrelationAccumulator(6)
        for part in np.array_split(a * scale + offset, 7):
            acc2.add(part)
        corr2, live2 = acc2.correlation()
        assert live2.tolist() == live.tolist()
        np.testing.assert_allclose(corr2, corr, atol=1e-6)


def test_correlation_capacity_counts_independent_directions():
    assert correlation_capacity(np.eye(8), 8) == pytest.approx(1.0)
    dup = np.ones((4, 4))  # four copies of one channel: one direction
    assert correlation_capacity(dup, 4) == pytest.approx(0.25)
    block = np.kron(np.eye(2), np.ones((4, 4)))  # two groups of four identical channels
    assert correlation_capacity(block, 8) == pytest.approx(0.25)
    assert correlation_capacity(np.zeros((0, 0)), 3) == pytest.approx(1e-6)


def test_capacity_activation_sees_duplicated_channels_and_needs_data():
    assert "capacity_activation" in list_importance() and needs_data("capacity_activation")
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(8, 3, name="a")(inp)
    b = keras.layers.Conv2D(8, 3, name="b")(inp)
    x = keras.layers.Concatenate()([a, b])
    model = keras.Model(inp, keras.layers.Dense(3, name="d")(keras.layers.GlobalAveragePooling2D()(x)))
    k, bias = model.get_layer("a").get_weights()
    k[..., 4:], bias[4:] = 2 * k[..., :4], 2 * bias[:4]  # channels 4..7 of 'a' are scaled copies of 0..3
    model.get_layer("a").set_weights([k, bias])
    before = [w.copy() for w in model.get_weights()]
    x = np.random.default_rng(0).random((64, 8, 8, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="needs calibration data"):
        score_layers(model, "capacity_activation")
    s = score_layers(model, "capacity_activation", data=x)
    assert s.scores["a"] <= 0.5 + 1e-6 < s.scores["b"]
    assert all(0 < v <= 1 for v in s.scores.values())
    assert all(np.array_equal(u, v) for u, v in zip(before, model.get_weights()))  # the model is only read


def test_capacity_activation_on_a_random_weight_mobilenetv2_sees_every_layer():
    # deep in a randomly initialised MobileNetV2 the activations are ~1e-6: still measured, not taken as constant
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), weights=None, classes=10)
    x = np.random.default_rng(0).random((8, 96, 96, 3), dtype=np.float32)
    s = score_layers(model, "capacity_activation", data=x, n_samples=8)
    assert s.details["not_probed"] == []
    # 'predictions' (softmax of ~0 logits) is really constant here: no direction, the floor
    inner = {k: v for k, v in s.scores.items() if k != "predictions"}
    assert min(inner.values()) > 1e-3, sorted(inner.items(), key=lambda kv: kv[1])[:3]
