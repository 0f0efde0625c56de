"""Distiller: the user's hard loss, regularisation, compile metrics, softmax/one-hot/multi-output, save and reload."""

import numpy as np
import pytest

import tfprune
from tfprune._keras import keras
from tfprune.training.distill import Distiller

RNG = np.random.default_rng(0)
X = RNG.normal(size=(96, 6)).astype("float32")
Y = np.arange(96) % 3
ONE_HOT = np.eye(3, dtype="float32")[Y]


def mlp(seed, activation=None, reg=None, heads=1):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((6,))
    h = keras.layers.Dense(8, activation="relu", kernel_regularizer=reg, name="h")(inp)
    outs = [keras.layers.Dense(3, activation=activation, name=f"out{i}")(h) for i in range(heads)]
    return keras.Model(inp, outs if heads > 1 else outs[0])


def copy(model):
    c = keras.models.clone_model(model)
    c.set_weights(model.get_weights())
    return c


def softmax(z, T=1.0):
    e = np.exp(z / T - (z / T).max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def kl(t_logits, s_logits, T):
    pt, ps = softmax(t_logits, T), softmax(s_logits, T)
    return float(np.mean(np.sum(pt * (np.log(pt) - np.log(ps)), -1)))


def test_alpha_zero_is_the_students_own_loss_with_regularisation_softmax_and_one_hot():
    student = mlp(2, "softmax", keras.regularizers.l2(0.05))
    plain = copy(student)
    plain.compile(loss="categorical_crossentropy")
    want = plain.evaluate(X, ONE_HOT, verbose=0)
    assert student.losses and want > 0
    d = Distiller(mlp(1), student, temperature=2.0, alpha=0.0)
    d.compile(optimizer="sgd")
    assert "softmax" in d.hard_loss_source and "probabilities" in d.hard_loss_source
    assert d.evaluate(X, ONE_HOT, verbose=0)[0] == pytest.approx(want, rel=1e-5)
    assert d.evaluate(X, Y, verbose=0)[0] == pytest.approx(want, rel=1e-5)  # class ids: the same loss


def test_compile_loss_is_the_hard_loss():
    smooth = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.2)
    student = mlp(2)
    ref = copy(student)
    ref.compile(loss=smooth)
    d = Distiller(mlp(1), student, alpha=0.0)
    d.compile(optimizer="sgd", loss=smooth)
    assert d.hard_loss_source == "loss= argument"
    got = d.evaluate(X, ONE_HOT, verbose=0)[0]
    assert got == pytest.approx(ref.evaluate(X, ONE_HOT, verbose=0), rel=1e-5)
    plain = keras.losses.CategoricalCrossentropy(from_logits=True)(ONE_HOT, student(X)).numpy()
    assert abs(got - plain) > 1e-3  # the smoothing changed it: the compile loss was used
    # without loss=, the student's own compiled loss is the hard loss
    compiled = copy(student)
    compiled.compile(loss=smooth)
    d2 = Distiller(mlp(1), compiled, alpha=0.0)
    d2.compile(optimizer="sgd")
    assert d2.hard_loss_source == "the model's compiled loss"
    assert d2.evaluate(X, ONE_HOT, verbose=0)[0] == pytest.approx(got, rel=1e-5)


def test_soft_term_is_the_same_for_softmax_and_logits_outputs():
    teacher, student = mlp(1), mlp(2)
    t_soft = mlp(1, "softmax")
    t_soft.set_weights(teacher.get_weights())
    s_soft = mlp(2, "softmax")
    s_soft.set_weights(student.get_weights())
    T = 3.0
    want = T * T * kl(teacher(X).numpy(), student(X).numpy(), T)
    for t, s in ((teacher, student), (t_soft, s_soft), (teacher, s_soft)):
        d = Distiller(t, s, temperature=T, alpha=1.0)
        d.compile(optimizer="sgd")
        assert d.evaluate(X, Y, verbose=0)[0] == pytest.approx(want, rel=1e-4)


def test_multi_output_loss_and_metrics_from_compile():
    teacher, student = mlp(1, heads=2), mlp(2, heads=2)
    a, T = 0.4, 2.0
    d = Distiller(teacher, student, temperature=T, alpha=a)
    d.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    t_out, s_out = [o.numpy() for o in teacher(X)], [o.numpy() for o in student(X)]
    ce = [-np.mean(np.log(softmax(s)[np.arange(len(Y)), Y])) for s in s_out]
    want = (1 - a) * sum(ce) + a * T * T * sum(kl(t, s, T) for t, s in zip(t_out, s_out))
    res = d.evaluate(X, [Y, Y], verbose=0, return_dict=True)
    assert res["loss"] == pytest.approx(want, rel=1e-4)
    assert {"out0_accuracy", "out1_accuracy"} <= set(res)
    assert res["out0_accuracy"] == pytest.approx(np.mean(s_out[0].argmax(-1) == Y))
    d.fit(X, [Y, Y], epochs=3, batch_size=32, verbose=0)
    assert d.evaluate(X, [Y, Y], verbose=0, return_dict=True)["loss"] < want  # training lowers that same loss


def test_metrics_from_compile_and_default_accuracy():
    d = Distiller(mlp(1), mlp(2), alpha=0.5)
    d.compile(optimizer="adam", metrics=[keras.metrics.SparseTopKCategoricalAccuracy(k=2, name="top2")])
    h = d.fit(X, Y, epochs=1, batch_size=32, verbose=0)
    assert set(h.history) == {"loss", "top2"}
    d2 = Distiller(mlp(1), mlp(2), alpha=0.5)
    d2.compile(optimizer="adam")
    assert set(d2.fit(X, Y, epochs=1, batch_size=32, verbose=0).history) == {"loss", "accuracy"}
    with pytest.raises(ValueError, match="needs labels"):
        d2.fit(X, epochs=1, verbose=0)


def test_save_and_reload_with_load_model(tmp_path):
    student = mlp(2, reg=keras.regularizers.l2(0.01))
    d = Distiller(mlp(1), student, temperature=3.0, alpha=0.7)
    d.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    d.fit(X, Y, epochs=1, batch_size=32, verbose=0)
    path = str(tmp_path / "d.keras")
    d.save(path)
    r = tfprune.load_model(path)
    assert isinstance(r, Distiller) and (r.temperature, r.alpha) == (3.0, 0.7)
    np.testing.assert_allclose(r.student(X).numpy(), student(X).numpy(), atol=1e-6)
    np.testing.assert_allclose(r.teacher(X).numpy(), d.teacher(X).numpy(), atol=1e-6)
    assert r.evaluate(X, Y, verbose=0)[0] == pytest.approx(d.evaluate(X, Y, verbose=0)[0], rel=1e-5)
    assert r.hard_loss_source == "loss= argument"
    r.fit(X, Y, epochs=1, batch_size=32, verbose=0)  # compiled on load: it trains
    c = Distiller.from_config(d.get_config())
    assert c.student is not student and c.get_config()["alpha"] == 0.7
    np.testing.assert_array_equal(c.student.get_layer("h").kernel.shape, student.get_layer("h").kernel.shape)


def test_bad_arguments():
    with pytest.raises(ValueError, match="differ"):
        Distiller(mlp(1), mlp(2, heads=2))
    sig = mlp(2, "sigmoid")
    with pytest.raises(ValueError, match="sigmoid"):
        Distiller(mlp(1), sig)
