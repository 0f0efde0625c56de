"""Issue 5: probes, candidates, decision rule, rebuild, profile, Distiller."""

import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tfprune._keras import keras
from tfprune.distill import distillation_loss
from tfprune.shallow import find_units, probe_layers, remove_units, shallow
from tfprune.shallow.decide import removals_for_tau, tau_for_reduction
from tfprune.shallow.probes import fit_probe, pool_features

L = keras.layers


def plain_cnn(n=6, width=8, seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((28, 28, 1))
    x = L.Conv2D(width, 3, padding="same", name="conv0")(inp)
    x = L.ReLU(name="relu0")(x)
    for i in range(1, n):
        x = L.Conv2D(width, 3, padding="same", name=f"conv{i}")(x)
        x = L.BatchNormalization(name=f"bn{i}")(x)
        x = L.ReLU(name=f"relu{i}")(x)
        if i == 2:
            x = L.MaxPooling2D(name="pool")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, L.Dense(10, name="fc")(x))


# ------------------------------------------------------------- decision rule
def test_removals_for_tau_uses_previous_kept_point():
    acc = [0.5, 0.52, 0.60, 0.601, 0.58, 0.70]
    rem = [False, True, True, True, True, False]
    assert removals_for_tau(acc, rem, 0.05) == [1, 3, 4]  # 0.60-0.50 >= tau keeps point 2; 0.601-0.60 and 0.58-0.60 < tau
    assert removals_for_tau(acc, rem, -1.0) == []
    assert removals_for_tau(acc, rem, 1.0) == [1, 2, 3, 4]


def test_tau_for_reduction_is_the_smallest_meeting_the_target():
    acc = [0.5, 0.52, 0.60, 0.601, 0.58, 0.70]
    rem = [False, True, True, True, True, False]
    cost = [10, 10, 10, 10, 10, 50]
    tau = tau_for_reduction(acc, rem, cost, 100, 0.3)
    assert sum(np.array(cost)[removals_for_tau(acc, rem, tau)]) >= 30
    assert sum(np.array(cost)[removals_for_tau(acc, rem, tau - 1e-6)]) < 30
    with pytest.raises(ValueError, match="less than the target"):
        tau_for_reduction(acc, rem, cost, 100, 0.5)


# ------------------------------------------------------------------- graph
def test_units_of_plain_cnn_and_resnet():
    units = {u.end: u for u in find_units(plain_cnn())}
    assert not units["relu0"].removable and "changes the shape" in units["relu0"].reason
    assert units["relu3"].removable and units["relu3"].layers == ["conv3", "bn3", "relu3"]
    assert not units["fc"].removable
    r20 = tfprune.models.resnet_cifar(20, (16, 16, 1))
    blocks = [u for u in find_units(r20) if u.kind == "block"]
    assert len(blocks) == 9 and sum(u.removable for u in blocks) == 7  # stage 1: 3 identity blocks; stages 2, 3: 2 each
    assert all("projection" in u.reason for u in blocks if not u.removable)
    ident = next(u for u in blocks if u.end == "stage1_block2_out")
    assert ident.layers[-2:] == ["stage1_block2_add", "stage1_block2_out"] and ident.macs > 0
    assert not any(u.kind == "layer" and u.removable for u in find_units(r20))  # inner convs are not separate candidates


def test_remove_units_keeps_weights_and_shapes():
    m = plain_cnn()
    x = np.random.default_rng(0).random((3, 28, 28, 1)).astype("float32")
    units = [u for u in find_units(m) if u.end in ("relu1", "relu4")]
    s = remove_units(m, units)
    assert {"conv1", "bn1", "conv4", "bn4"}.isdisjoint(layer.name for layer in s.layers)
    np.testing.assert_array_equal(s.get_layer("conv2").kernel.numpy(), m.get_layer("conv2").kernel.numpy())
    # by hand: the same network without those units
    h = m.get_layer("relu0")(m.get_layer("conv0")(x))
    for name in ("conv2", "bn2", "relu2", "pool", "conv3", "bn3", "relu3", "conv5", "bn5", "relu5", "gap", "fc"):
        h = m.get_layer(name)(h, training=False) if name.startswith("bn") else m.get_layer(name)(h)
    np.testing.assert_allclose(s(x, training=False).numpy(), h.numpy(), rtol=1e-5, atol=1e-5)
    r20 = tfprune.models.resnet_cifar(20, (16, 16, 1))
    blocks = [u for u in find_units(r20) if u.removable]
    r = remove_units(r20, blocks)
    assert r.output_shape == r20.output_shape and len(r.layers) < len(r20.layers)
    with pytest.raises(ValueError, match="not removable"):
        remove_units(m, [u for u in find_units(m) if not u.removable][:1])


def test_profile_counts():
    p = tfprune.profile(tfprune.models.lenet5())
    by = {r.name: r for r in p.layers}
    assert by["conv1"].macs == 24 * 24 * 20 * 25 and by["conv2"].macs == 8 * 8 * 50 * 500
    assert by["fc1"].params == 800 * 500 + 500 and p.params == 431080
    assert tfprune.profile(tfprune.wrap(tfprune.models.lenet5())).macs == p.macs


# ------------------------------------------------------------------- probes
def test_pooling_and_fit_probe():
    a = np.arange(2 * 3 * 3 * 2, dtype=float).reshape(2, 3, 3, 2)
    assert pool_features(a, "avg").shape == (2, 2) and pool_features(a, "flatten").shape == (2, 18)
    assert np.allclose(pool_features(a, "max")[0], a[0].reshape(-1, 2).max(0))
    with pytest.raises(ValueError, match="pooling"):
        pool_features(a, "median")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    f = np.eye(3)[y] * 3 + rng.normal(size=(600, 3))
    assert fit_probe(f[:300], y[:300], f[300:], y[300:]) > 0.9
    noise = rng.normal(size=(600, 3))
    assert fit_probe(noise[:300], y[:300], noise[300:], y[300:]) < 0.5
    multi = (rng.random((600, 4)) < 0.3).astype(int)
    feats = multi * 2.0 + rng.normal(size=(600, 4)) * 0.5
    assert fit_probe(feats[:300], multi[:300], feats[300:], multi[300:], multilabel=True) > 0.8


def test_probe_layers_and_shallow_on_trained_cnn(digits_data, tmp_path):
    (xt, yt), (xs, ys) = digits_data
    m = tfprune.models.compile_classifier(plain_cnn())
    m.fit(xt[:2000], yt[:2000], epochs=2, batch_size=64, verbose=0)
    rep = probe_layers(m, (xt[:1200], yt[:1200]), progress=False)
    assert [r.name for r in rep.rows][:2] == ["relu0", "relu1"] and rep.n_train == rep.n_test == 600
    assert all(0 <= r.accuracy <= 1 for r in rep.rows) and rep.rows[-1].accuracy > 0.3
    assert "kept: changes the shape" in rep.table()
    with pytest.warns(UserWarning, match="BatchNorm statistics were not re-estimated"):
        stale, _ = shallow(m, probes=rep, target_flops_reduction=0.3)
    s, res = shallow(m, (xt[:1200], yt[:1200]), probes=rep, target_flops_reduction=0.3)
    assert res.macs_reduction >= 0.3 and res.removed
    moved = [not np.allclose(s.get_layer(b.name).moving_mean.numpy(), stale.get_layer(b.name).moving_mean.numpy())
             for b in stale.layers if isinstance(b, L.BatchNormalization)]
    assert any(moved)  # with data, the student's BatchNorm statistics were re-estimated
    assert tfprune.profile(s).macs == res.macs_after
    assert s.predict(xs[:4], verbose=0).shape == (4, 10)
    s2, res2 = shallow(m, (xt[:600], yt[:600]), probes=rep, tau=1.0)  # everything removable goes
    assert len(res2.removed) == sum(r.removable for r in rep.rows)
    assert rep.plot(str(tmp_path / "p.png"), set(res.removed)).endswith("p.png")
    with pytest.raises(ValueError, match="exactly one"):
        shallow(m, probes=rep)


# ---------------------------------------------------------------- distiller
def test_distillation_loss_formula():
    y = np.array([0, 2])
    t = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]], "float32")
    s = np.array([[1.0, 1.0, 0.0], [0.0, 0.5, 1.0]], "float32")
    T, a = 3.0, 0.7
    def softmax(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)
    ce = -np.mean(np.log(softmax(s)[np.arange(2), y]))
    pt, ps = softmax(t / T), softmax(s / T)
    kl = np.mean(np.sum(pt * (np.log(pt) - np.log(ps)), -1))
    want = (1 - a) * ce + a * T * T * kl
    assert float(distillation_loss(y, tf.constant(t), tf.constant(s), T, a)) == pytest.approx(want, rel=1e-5)


def test_distiller_trains_only_the_student(digits_data):
    (xt, yt), _ = digits_data
    teacher = tfprune.models.compile_classifier(plain_cnn(4, seed=1))
    teacher.fit(xt[:1000], yt[:1000], epochs=1, verbose=0)
    student = remove_units(teacher, [u for u in find_units(teacher) if u.end == "relu3"])
    t_before = [w.numpy().copy() for w in teacher.weights]
    s_before = student.get_layer("fc").kernel.numpy().copy()
    d = tfprune.Distiller(teacher, student, temperature=4.0, alpha=0.9)
    d.compile(optimizer=keras.optimizers.Adam(1e-3))
    h = d.fit(xt[:512], yt[:512], epochs=1, batch_size=64, verbose=0)
    assert "loss" in h.history and "accuracy" in h.history
    assert not np.allclose(student.get_layer("fc").kernel.numpy(), s_before)
    for a, b in zip(t_before, [w.numpy() for w in teacher.weights]):
        np.testing.assert_array_equal(a, b)
    assert teacher.trainable and all(layer.trainable for layer in teacher.layers)  # the teacher object is not mutated
    with pytest.raises(ValueError, match="alpha"):
        tfprune.Distiller(teacher, student, alpha=1.5)
    with pytest.raises(ValueError, match="temperature"):
        tfprune.Distiller(teacher, student, temperature=0)


def test_distiller_with_alpha_zero_is_plain_cross_entropy(digits_data, tmp_path):
    """alpha=0 drops the KL term: the same steps as compiling the student with sparse CE."""
    (xt, yt), _ = digits_data
    teacher = plain_cnn(4, seed=1)
    path = str(tmp_path / "s.keras")
    plain_cnn(3, seed=2).save(path)
    trained = []
    for use_distiller in (True, False):
        keras.utils.set_random_seed(3)
        student = tfprune.load_model(path, compile=False)
        if use_distiller:
            trainer = tfprune.Distiller(teacher, student, temperature=4.0, alpha=0.0)
            trainer.compile(optimizer=keras.optimizers.SGD(0.05))
        else:
            trainer = student
            student.compile(optimizer=keras.optimizers.SGD(0.05), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        trainer.fit(xt[:256], yt[:256], epochs=1, batch_size=64, shuffle=False, verbose=0)
        trained.append([w.numpy() for w in student.weights])
    assert not np.allclose(trained[0][0], keras.models.load_model(path).weights[0].numpy())  # it trained
    for a, b in zip(*trained):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_cli_shallow(tmp_path):
    from tests.conftest import mnist_path
    from tests.test_data_models_cli import _cli

    if mnist_path() is None:
        pytest.skip("needs mnist.npz for the CLI's --data")
    m = tfprune.models.compile_classifier(plain_cnn(5))
    path = str(tmp_path / "m.keras")
    m.save(path)
    out = str(tmp_path / "s.keras")
    r = _cli("shallow", path, "--data", mnist_path(), "--tau", "1.0", "--n-samples", "600", "--plot", str(tmp_path / "p.png"), "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "linear probes" in r.stdout and "REMOVED" in r.stdout and (tmp_path / "p.png").is_file()
    assert "probes" in r.stderr and "%|" in r.stderr  # the progress bars (tqdm, on stderr)
    assert len(tfprune.load_model(out).layers) < len(m.layers)
