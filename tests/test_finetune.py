"""tfprune.training.finetune: the user's loss (softmax, one-hot, multi-output), frozen-zero retraining, one-pass BatchNorm re-estimation."""

import warnings

import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tfprune._keras import keras
from tfprune.importance import score_layers
from tfprune.shallow import find_units, remove_units
from tfprune.training import finetune
from tfprune.training.finetune import CrossEntropy, combine_moments, model_loss, reestimate_batchnorm, retrain

RNG = np.random.default_rng(0)
X = RNG.normal(size=(256, 8)).astype("float32")
Y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 0.5).astype(int)  # 3 classes a small MLP can learn
ONE_HOT = np.eye(3, dtype="float32")[Y]


def mlp(activation=None, heads=1, seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8,))
    h = keras.layers.Dense(32, activation="relu", name="fc1")(inp)
    h = keras.layers.Dense(16, activation="relu", name="fc2")(h)
    outs = [keras.layers.Dense(3, activation=activation, name=f"head{i}")(h) for i in range(heads)]
    return keras.Model(inp, outs if heads > 1 else outs[0])


def same_weights(model, activation):
    m = mlp(activation, heads=len(model.outputs))
    m.set_weights(model.get_weights())
    return m


# ------------------------------------------------------------------ losses
def test_cross_entropy_reads_label_format():
    logits = RNG.normal(size=(10, 3)).astype("float32")
    y = np.arange(10) % 3
    sparse = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, logits).numpy()
    ce = CrossEntropy(from_logits=True)
    assert ce(y, logits).numpy() == pytest.approx(sparse, rel=1e-6)
    assert ce(np.eye(3)[y], logits).numpy() == pytest.approx(sparse, rel=1e-6)  # one-hot: the same value
    assert ce(y[:, None], logits).numpy() == pytest.approx(sparse, rel=1e-6)
    probs = tf.nn.softmax(logits).numpy()
    assert CrossEntropy(from_logits=False)(y, probs).numpy() == pytest.approx(sparse, rel=1e-5)
    yb = np.array([0, 1, 1, 0], "float32")
    zb = np.array([[0.3], [-1.0], [2.0], [0.1]], "float32")
    assert ce(yb, zb).numpy() == pytest.approx(keras.losses.BinaryCrossentropy(from_logits=True)(yb[:, None], zb).numpy(), rel=1e-6)
    again = CrossEntropy.from_config(CrossEntropy(from_logits=False, binary=True).get_config())
    assert (again.from_logits, again.binary) == (False, True)


def test_model_loss_order_and_output_check():
    soft, logits = mlp("softmax"), mlp()
    assert finetune.output_activations(soft) == ["softmax"] and finetune.output_activations(logits) == ["linear"]
    p = soft(X).numpy()
    want = keras.losses.sparse_categorical_crossentropy(Y, p).numpy().mean()
    spec = model_loss(soft)
    assert spec.source.startswith("default") and "softmax" in spec.source
    assert float(spec(Y, p)) == pytest.approx(want, rel=1e-5)
    assert float(spec(ONE_HOT, p)) == pytest.approx(want, rel=1e-5)
    twin = same_weights(soft, None)  # the same network without the softmax: logits, the same loss value
    assert model_loss(twin).source == "default: cross-entropy from logits"
    assert float(model_loss(twin)(Y, twin(X))) == pytest.approx(want, rel=1e-5)
    compiled = mlp()
    compiled.compile(loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.3))
    assert model_loss(compiled).source == "the model's compiled loss"
    assert model_loss(compiled, "mse").source == "loss= argument"
    relu_out = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, activation="relu")])
    with pytest.warns(UserWarning, match="assumes logits.*pass loss="):
        model_loss(relu_out)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model_loss(relu_out, "sparse_categorical_crossentropy")  # the user's loss: no warning


def test_sensitivity_uses_the_right_loss_for_softmax_one_hot_and_multi_output():
    base = mlp(seed=1)
    base.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    base.fit(X, Y, epochs=5, batch_size=32, verbose=0)
    ref = score_layers(same_weights(base, None), "sensitivity", data=(X, Y), sparsity=0.8, progress=False)
    soft = same_weights(base, "softmax")  # uncompiled softmax model: the default must not treat probabilities as logits
    for data in ((X, Y), (X, ONE_HOT)):
        got = score_layers(soft, "sensitivity", data=data, sparsity=0.8, progress=False)
        assert got.details["dense_loss"] == pytest.approx(ref.details["dense_loss"], rel=1e-4)
        for k in ref.scores:
            assert got.scores[k] == pytest.approx(ref.scores[k], rel=1e-3, abs=1e-4)
    wrong = keras.losses.sparse_categorical_crossentropy(Y, soft.predict(X, verbose=0), from_logits=True).numpy().mean()
    assert abs(wrong - ref.details["dense_loss"]) > 0.1  # what the old hard-coded loss would have measured
    # multi-output, compiled with per-output losses and weights: the compiled loss (as evaluate reports it)
    two = mlp(heads=2, seed=2)
    two.compile(loss=[CrossEntropy(), keras.losses.CategoricalCrossentropy(from_logits=True)], loss_weights=[1.0, 0.5])
    s = score_layers(two, "sensitivity", data=(X, [Y, ONE_HOT]), sparsity=0.8, progress=False)
    assert s.details["dense_loss"] == pytest.approx(two.evaluate(X, [Y, ONE_HOT], verbose=0)[0], rel=1e-4)
    assert set(s.scores) == {"fc1", "fc2", "head0", "head1"} and max(s.scores.values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"importance 'sensitivity' needs labels; pass \(x, y\)"):
        score_layers(base, "sensitivity", data=X, progress=False)


# ------------------------------------------------------------------ retraining
def _prune_half(model):
    out = same_weights(model, finetune.output_activations(model)[0]) if len(model.outputs) == 1 else tfprune.clone(model)
    for name in ("fc1", "fc2"):
        k = out.get_layer(name).kernel
        w = k.numpy()
        w[np.abs(w) < np.quantile(np.abs(w), 0.6)] = 0
        k.assign(w)
    return out


def _zeros_kept(before, after):
    for name in ("fc1", "fc2"):
        z = before.get_layer(name).kernel.numpy() == 0
        assert z.sum() > 0 and np.all(after.get_layer(name).kernel.numpy()[z] == 0)


def test_freeze_zeros_masks_are_the_zeros():
    pruned = _prune_half(mlp())
    w = finetune.freeze_zeros(pruned)
    for p in tfprune.prunable_layers(w):
        if p.name in ("fc1", "fc2"):
            np.testing.assert_array_equal(p.mask(), (pruned.get_layer(p.name).kernel.numpy() != 0).astype("float32"))
    assert not tfprune.masks.wrapping.is_wrapped(pruned)  # the input is not changed


@pytest.mark.parametrize("case", ["softmax + one-hot", "logits + dataset", "multi-output"])
def test_retrain_keeps_zeros_and_lowers_the_users_loss(case):
    if case == "multi-output":
        model, data, spec_y = mlp(heads=2), (X, [Y, ONE_HOT]), [Y, ONE_HOT]
        model.compile(loss=[CrossEntropy(), keras.losses.CategoricalCrossentropy(from_logits=True)])
    elif case == "softmax + one-hot":
        model, data, spec_y = mlp("softmax"), (X, ONE_HOT), ONE_HOT
    else:
        model, data, spec_y = mlp(), tf.data.Dataset.from_tensor_slices((X, Y)).batch(32), Y
    pruned = _prune_half(model)
    if case == "multi-output":
        pruned.compile(loss=model.loss)
    spec = model_loss(pruned)
    before = float(spec(spec_y, pruned(X)))
    re = retrain(pruned, data, steps=60, batch_size=32, learning_rate=1e-2)
    after = float(spec(spec_y, re(X)))
    assert after < 0.9 * before, (before, after)
    _zeros_kept(pruned, re)
    assert not tfprune.masks.wrapping.is_wrapped(re)


def test_retrain_positional_x_y_and_errors():
    pruned = _prune_half(mlp())
    re = retrain(pruned, X, Y, 5)  # positional x, y, steps
    _zeros_kept(pruned, re)
    same = retrain(pruned, X, Y, steps=0)
    np.testing.assert_array_equal(same.get_layer("fc1").kernel.numpy(), pruned.get_layer("fc1").kernel.numpy())
    with pytest.raises(ValueError, match=r"retrain needs labels; pass \(x, y\)"):
        retrain(pruned, X, steps=5)


# ------------------------------------------------------------------ BatchNorm
def sequential_reestimate(model, x):
    """The exact reference: each BatchNorm in graph order from its input with the earlier ones already updated."""
    for b in [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]:
        a = keras.Model(model.inputs, b.input)(x, training=False).numpy().astype(np.float64)
        a = a.reshape(-1, a.shape[-1])
        b.moving_mean.assign(a.mean(0).astype("float32"))
        b.moving_variance.assign(a.var(0).astype("float32"))
    return model


def _bn_stats(model):
    return {b.name: (b.moving_mean.numpy().copy(), b.moving_variance.numpy().copy()) for b in model.layers if isinstance(b, keras.layers.BatchNormalization)}


def _spoil(model):
    for b in model.layers:
        if isinstance(b, keras.layers.BatchNormalization):
            b.moving_mean.assign(np.full(b.moving_mean.shape, 5.0, "float32"))
            b.moving_variance.assign(np.full(b.moving_variance.shape, 0.01, "float32"))


def test_combine_moments_is_exact():
    parts = [RNG.normal(loc=i, scale=i + 1, size=(n, 4)) for i, n in enumerate((5, 17, 1, 40))]
    mean, var = combine_moments([len(p) for p in parts], [p.mean(0) for p in parts], [p.var(0) for p in parts])
    allx = np.concatenate(parts)
    np.testing.assert_allclose(mean, allx.mean(0), rtol=1e-12)
    np.testing.assert_allclose(var, allx.var(0), rtol=1e-12)


def test_one_pass_equals_the_sequential_method_on_a_resnet_with_a_block_removed():
    dense = tfprune.models.resnet_cifar(20, (12, 12, 1))
    x = np.random.default_rng(1).random((192, 12, 12, 1)).astype("float32")
    sequential_reestimate(dense, x)  # realistic statistics before the surgery
    block = [u for u in find_units(dense) if u.removable][2]
    student = remove_units(dense, [block])
    ref = _bn_stats(sequential_reestimate(tfprune.clone(student), x))
    _spoil(student)
    assert reestimate_batchnorm(student, (x, np.zeros(len(x)))) is student  # labels are ignored
    got = _bn_stats(student)
    assert set(got) == set(ref) and len(got) > 15
    for name, (m, v) in ref.items():
        np.testing.assert_allclose(got[name][0], m, rtol=1e-5, atol=1e-6 * np.abs(m).max())
        np.testing.assert_allclose(got[name][1], v, rtol=1e-5, atol=1e-6 * v.max())
    # in batches (per-batch normalisation upstream): close, not exact
    _spoil(student)
    reestimate_batchnorm(student, tf.data.Dataset.from_tensor_slices(x).batch(64), batch_size=64)
    for name, (_, v) in ref.items():
        assert np.abs(student.get_layer(name).moving_variance.numpy() - v).max() <= 0.05 * v.max()


def test_dropout_stays_off_nested_models_and_no_batchnorm():
    inner = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5), keras.layers.BatchNormalization(name="inner_bn")], name="inner")
    inp = keras.Input((8,))
    h = keras.layers.Dense(6, name="d")(inp)
    h = keras.layers.Dropout(0.5)(h)
    h = keras.layers.BatchNormalization(name="bn")(h)
    out = inner(h)
    m = keras.Model(inp, out)
    _spoil(m)
    _spoil(inner)
    reestimate_batchnorm(m, X)
    a = m.get_layer("d")(X).numpy()  # Dropout off: the BatchNorm sees Dense's output as is
    np.testing.assert_allclose(m.get_layer("bn").moving_mean.numpy(), a.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(m.get_layer("bn").moving_variance.numpy(), a.var(0), rtol=1e-4)
    b = inner.layers[0](m.get_layer("bn")(a, training=False)).numpy()
    np.testing.assert_allclose(inner.get_layer("inner_bn").moving_variance.numpy(), b.var(0), rtol=1e-3)
    plain = mlp()
    before = [w.copy() for w in plain.get_weights()]
    reestimate_batchnorm(plain, X)
    for u, v in zip(before, plain.get_weights()):
        np.testing.assert_array_equal(u, v)


def test_obs_no_longer_reexports_finetune():
    for name in ("retrain", "reestimate_batchnorm", "wrap_with_masks"):
        assert not hasattr(tfprune.obs, name) and not hasattr(tfprune.obs.pruning, name), name


def test_cross_entropy_saves_with_the_model(tmp_path):
    m = mlp("softmax")
    m.compile(loss=CrossEntropy(from_logits=False))
    path = str(tmp_path / "m.keras")
    m.save(path)
    r = tfprune.load_model(path)
    spec = model_loss(r)
    assert spec.source == "the model's compiled loss" and isinstance(spec.loss, CrossEntropy) and not spec.loss.from_logits
    assert float(spec(ONE_HOT, r(X))) == pytest.approx(float(model_loss(m)(Y, m(X))), rel=1e-6)
