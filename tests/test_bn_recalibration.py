"""BatchNorm re-estimation after a shrink (tfprune.structured.batchnorm) and its use in prune_channels."""

from __future__ import annotations

import numpy as np
import pytest

import tfprune
from tfprune._keras import keras
from tfprune.structured import recalibrate_batchnorm
from tfprune.structured.batchnorm import batchnorm_layers, cumulative_momentum
from tfprune.structured.prune import prune_channels

L = keras.layers


def test_cumulative_momentum_gives_plain_mean():
    rng = np.random.default_rng(0)
    values = rng.normal(size=7)
    m = 123.0  # anything: batch 0 has momentum 0 and replaces it
    for k, b in enumerate(values):
        mom = cumulative_momentum(k)
        m = m * mom + b * (1 - mom)
    assert m == pytest.approx(values.mean())
    with pytest.raises(ValueError, match=">= 0"):
        cumulative_momentum(-1)


def conv_bn(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((6, 6, 2))
    a = L.Conv2D(4, 3, padding="same", name="c")(inp)
    a = L.BatchNormalization(name="bn")(a)
    inner = keras.Sequential([L.Conv2D(3, 1, name="c2"), L.BatchNormalization(name="bn2")], name="inner")
    out = inner(L.ReLU()(a))
    return keras.Model(inp, out)


def test_recalibrate_sets_moving_stats_to_the_data_statistics():
    model = conv_bn()
    rng = np.random.default_rng(1)
    x = (3.0 + 2.0 * rng.normal(size=(256, 6, 6, 2))).astype("float32")
    kernel_before = [w.copy() for w in model.get_weights() if w.ndim == 4]
    bn = model.get_layer("bn")
    momentum = bn.momentum
    n = recalibrate_batchnorm(model, x, batch_size=64, max_samples=256)
    assert n == 2 and len(batchnorm_layers(model)) == 2  # the nested model's BN too
    assert bn.momentum == momentum
    conv_out = keras.Model(model.input, model.get_layer("c").output).predict(x, verbose=0)
    # the mean of 4 batch means equals the mean over all samples; the variance is the mean of the batch variances
    np.testing.assert_allclose(bn.moving_mean.numpy(), conv_out.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-4)
    batch_vars = np.stack([conv_out[i:i + 64].var(axis=(0, 1, 2)) for i in range(0, 256, 64)]).mean(0)
    np.testing.assert_allclose(bn.moving_variance.numpy(), batch_vars, rtol=1e-3)
    for a, b in zip(kernel_before, [w for w in model.get_weights() if w.ndim == 4]):
        np.testing.assert_array_equal(a, b)
    # frozen BN layers run in inference mode in tf-keras: left alone
    frozen = conv_bn()
    frozen.get_layer("bn").trainable = False
    before = frozen.get_layer("bn").moving_mean.numpy().copy()
    assert recalibrate_batchnorm(frozen, x) == 1
    np.testing.assert_array_equal(frozen.get_layer("bn").moving_mean.numpy(), before)
    with pytest.raises(ValueError, match=">= 1"):
        recalibrate_batchnorm(model, x, batch_size=0)


def test_prune_channels_recalibrates_and_recovers_one_shot_accuracy():
    """A trained ResNet-8 shrunk by 50% of its MACs: re-estimated BN statistics give a one-shot accuracy at least
    that of stale ones (seed 0 here: 0.53 vs 0.48)."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(768, 12, 12, 1)).astype("float32")
    y = (x[:, :6].mean(axis=(1, 2, 3)) > x[:, 6:].mean(axis=(1, 2, 3))).astype("int64")
    model = tfprune.models.resnet_cifar(8, (12, 12, 1), num_classes=2)
    tfprune.models.compile_classifier(model, 1e-3)
    model.fit(x[:512], y[:512], epochs=4, batch_size=64, verbose=0)
    data, ev = (x[:512], y[:512]), (x[512:], y[512:])
    _, stale = prune_channels(model, macs=0.5, data=data, eval_data=ev, recalibrate_bn=0)
    _, fresh = prune_channels(model, macs=0.5, data=data, eval_data=ev)
    assert stale.bn_recalibrated == 0 and fresh.bn_recalibrated == len(batchnorm_layers(model))
    assert any("re-estimated on 512 training samples" in n for n in fresh.notes)
    assert fresh.acc_shrunk > stale.acc_shrunk
    _, nodata = prune_channels(model, macs=0.5)
    assert nodata.bn_recalibrated == 0 and any("not re-estimated" in n for n in nodata.notes)
