"""Shallowing: probes, candidates, decision rule, rebuild (functional, Sequential, nested), profile, Distiller."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tfprune._keras import keras
from tfprune.shallow import find_units, probe_layers, remove_units, shallow
from tfprune.shallow.decide import removals_for_tau, tau_for_reduction
from tfprune.shallow.probes import fit_probe, pool_features
from tfprune.training.distill import distillation_loss

L = keras.layers


def snapshot(model):
    """The model's config (as JSON text) and a copy of its weights: to check it is not modified."""
    return json.dumps(model.get_config(), sort_keys=True, default=str), [w.copy() for w in model.get_weights()]


def assert_unchanged(model, snap):
    config, weights = snap
    assert json.dumps(model.get_config(), sort_keys=True, default=str) == config
    assert len(model.get_weights()) == len(weights)
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def chain(layers, x):
    """Run ``x`` through ``layers`` one after another, eagerly, in inference mode (the model "by hand")."""
    h = tf.constant(x)
    for layer in layers:
        h = layer(h, training=False)
    return h.numpy()


def cbr(i, width=8, momentum=0.9):
    return [L.Conv2D(width, 3, padding="same", name=f"conv{i}"), L.BatchNormalization(momentum=momentum, name=f"bn{i}"), L.ReLU(name=f"relu{i}")]


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
    with pytest.raises(ValueError, match="not removable"):
        remove_units(m, [u for u in find_units(m) if not u.removable][:1])


def resnet_by_hand(m, x, skip=()):
    """ResNet-20 (tfprune.models.resnet_cifar) computed layer by layer from ``m``'s layers, without the blocks in ``skip``."""
    h = chain([m.get_layer(n) for n in ("stem_conv", "stem_bn", "stem_relu")], x)
    names = {layer.name for layer in m.layers}
    for stage in (1, 2, 3):
        for b in (1, 2, 3):
            name = f"stage{stage}_block{b}"
            if name in skip:
                continue
            y = chain([m.get_layer(f"{name}_{n}") for n in ("conv1", "bn1", "relu1", "conv2", "bn2")], h)
            sc = chain([m.get_layer(f"{name}_proj"), m.get_layer(f"{name}_proj_bn")], h) if f"{name}_proj" in names else h
            h = m.get_layer(f"{name}_out")(m.get_layer(f"{name}_add")([sc, y])).numpy()
    return chain([m.get_layer("gap"), m.get_layer("fc")], h)


def test_resnet_block_removal_equals_the_network_without_the_block():
    keras.utils.set_random_seed(0)
    m = tfprune.models.resnet_cifar(20, (16, 16, 1))
    for layer in m.layers:  # non-trivial BatchNorm statistics, so a wrong wiring or a missed weight shows
        if isinstance(layer, L.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(np.random.default_rng(1).normal(size=n).astype("float32") * 0.1)
            layer.moving_variance.assign(np.random.default_rng(2).uniform(0.5, 2.0, n).astype("float32"))
    snap = snapshot(m)
    x = np.random.default_rng(0).random((4, 16, 16, 1)).astype("float32")
    np.testing.assert_allclose(m(x, training=False).numpy(), resnet_by_hand(m, x), rtol=1e-5, atol=1e-5)  # the helper is right
    units = {u.end: u for u in find_units(m)}
    skip = ("stage1_block2", "stage3_block3")
    r = remove_units(m, [units[f"{b}_out"] for b in skip])
    assert r.name == "resnet20_shallow" and r.output_shape == m.output_shape
    gone = set(units["stage1_block2_out"].layers) | set(units["stage3_block3_out"].layers)
    assert {layer.name for layer in r.layers} == {layer.name for layer in m.layers} - gone
    np.testing.assert_allclose(r(x, training=False).numpy(), resnet_by_hand(m, x, skip), rtol=1e-5, atol=1e-5)
    for layer in r.layers:  # weights copied by name, into new variables
        for a, b in zip(layer.weights, m.get_layer(layer.name).weights):
            assert a is not b
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    r.get_layer("fc").kernel.assign(tf.zeros_like(r.get_layer("fc").kernel))
    assert_unchanged(m, snap)
    # every identity block removed at once: the model without any of them
    ident = [u for u in units.values() if u.removable]
    assert [u.end for u in ident] == [f"stage{s}_block{b}_out" for s, b in ((1, 1), (1, 2), (1, 3), (2, 2), (2, 3), (3, 2), (3, 3))]
    r_all = remove_units(m, ident)
    np.testing.assert_allclose(r_all(x, training=False).numpy(), resnet_by_hand(m, x, [u.end[: -len("_out")] for u in ident]), rtol=1e-5, atol=1e-5)


def test_sequential_shallowing_end_to_end(digits_data):
    """A Sequential conv-BN-ReLU CNN: units found, shallowed, rebuilt exactly, fine-tuned; the input model untouched."""
    (xt, yt), (xs, ys) = digits_data
    keras.utils.set_random_seed(0)
    seq = keras.Sequential([keras.Input((28, 28, 1)), *cbr(0), L.MaxPooling2D(name="pool"), *cbr(1), *cbr(2), *cbr(3),
                            L.GlobalAveragePooling2D(name="gap"), L.Dense(10, name="fc")], name="seq_cnn")
    tfprune.models.compile_classifier(seq, 3e-3).fit(xt[:2000], yt[:2000], epochs=2, batch_size=64, verbose=0)
    snap = snapshot(seq)
    units = find_units(seq)
    assert [(u.end, u.layers, u.removable) for u in units] == [
        ("relu0", ["conv0", "bn0", "relu0"], False), ("relu1", ["conv1", "bn1", "relu1"], True),
        ("relu2", ["conv2", "bn2", "relu2"], True), ("relu3", ["conv3", "bn3", "relu3"], True), ("fc", ["fc"], False)]
    assert units[0].reason == "changes the shape (28, 28, 1) -> (28, 28, 8)" and units[1].macs == 14 * 14 * 8 * 9 * 8
    rep = probe_layers(seq, (xt[:1000], yt[:1000]), progress=False)
    assert [r.name for r in rep.rows] == [u.end for u in units] and rep.n_train == rep.n_test == 500
    # exact rebuild: without BatchNorm re-estimation the student is the teacher's layers minus the removed ones
    exact, res = shallow(seq, (xt[:1000], yt[:1000]), probes=rep, target_flops_reduction=0.2, reestimate_bn=False)
    acc, removable = [r.accuracy for r in rep.rows], [r.removable for r in rep.rows]
    assert res.removed and res.removed == [rep.rows[i].name for i in removals_for_tau(acc, removable, res.tau)]
    gone = {n for u in units if u.end in res.removed for n in u.layers}
    assert res.macs_after == res.macs_before - sum(u.macs for u in units if u.end in res.removed) == tfprune.profile(exact).macs
    assert exact.output_shape == seq.output_shape == (None, 10)
    np.testing.assert_allclose(exact(xs[:8], training=False).numpy(), chain([la for la in seq.layers if la.name not in gone], xs[:8]),
                               rtol=1e-5, atol=1e-5)
    # the default student (BatchNorm statistics re-estimated) evaluates and fine-tunes with distillation
    student, res2 = shallow(seq, (xt[:1000], yt[:1000]), probes=rep, target_flops_reduction=0.2)
    assert res2.removed == res.removed
    before = tfprune.models.compile_classifier(student).evaluate(xs, ys, verbose=0)[1]
    keras.utils.set_random_seed(1)
    d = tfprune.Distiller(seq, student, temperature=4.0, alpha=0.9)
    d.compile(optimizer=keras.optimizers.Adam(3e-3))
    d.fit(xt[:2000], yt[:2000], epochs=1, batch_size=64, verbose=0)
    after = tfprune.models.compile_classifier(student).evaluate(xs, ys, verbose=0)[1]
    assert after > max(before, 0.2)  # it learns (chance: 0.1)
    assert_unchanged(seq, snap)


def test_sequential_of_sequential_blocks():
    """Nested Sequential blocks are inlined; a clashing inner name gets its block's name as prefix."""
    keras.utils.set_random_seed(0)

    def block(name):
        return keras.Sequential([L.Conv2D(8, 3, padding="same", name="conv"), L.BatchNormalization(name="bn"), L.ReLU(name="relu")], name=name)

    m = keras.Sequential([keras.Input((12, 12, 1)), *cbr(0), block("block1"), block("block2"), L.GlobalAveragePooling2D(name="gap"),
                          L.Dense(3, name="fc")], name="nest")
    snap = snapshot(m)
    units = find_units(m)
    assert [(u.end, u.layers, u.removable) for u in units] == [
        ("relu0", ["conv0", "bn0", "relu0"], False), ("relu", ["conv", "bn", "relu"], True),
        ("block2_relu", ["block2_conv", "block2_bn", "block2_relu"], True), ("fc", ["fc"], False)]
    x = np.random.default_rng(0).random((4, 12, 12, 1)).astype("float32")
    for end, kept_block in (("block2_relu", "block1"), ("relu", "block2")):
        s = remove_units(m, [u for u in units if u.end == end])
        assert s.output_shape == m.output_shape and not any(isinstance(layer, keras.Model) for layer in s.layers)
        want = chain([*m.layers[:3], m.get_layer(kept_block), m.get_layer("gap"), m.get_layer("fc")], x)
        np.testing.assert_allclose(s(x, training=False).numpy(), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(s.get_layer("block2_conv").kernel.numpy(), m.get_layer("block2").get_layer("conv").kernel.numpy())
    rep = probe_layers(m, (np.random.default_rng(1).random((40, 12, 12, 1)).astype("float32"), np.arange(40) % 3), progress=False)
    assert [r.name for r in rep.rows] == ["relu0", "relu", "block2_relu", "fc"]
    assert_unchanged(m, snap)


def residual_model(c=8):
    """A functional model that calls two functional residual blocks (same inner layer names) as layers."""
    def block(name):
        i = keras.Input((8, 8, c))
        y = L.Conv2D(c, 3, padding="same", name="conv_a")(i)
        y = L.BatchNormalization(name="bn_a")(y)
        y = L.ReLU(name="relu_a")(y)
        y = L.Conv2D(c, 3, padding="same", name="conv_b")(y)
        return keras.Model(i, L.ReLU(name="out")(L.Add(name="add")([i, y])), name=name)

    inp = keras.Input((8, 8, 1), name="img")
    h = L.ReLU(name="stem_relu")(L.Conv2D(c, 3, padding="same", name="stem")(inp))
    h = block("res2")(block("res1")(h))
    return keras.Model(inp, L.Dense(3, name="fc")(L.GlobalAveragePooling2D(name="gap")(h)), name="nested_res")


def test_nested_functional_blocks():
    keras.utils.set_random_seed(0)
    m = residual_model()
    snap = snapshot(m)
    units = {u.end: u for u in find_units(m)}
    assert set(units) == {"stem_relu", "out", "res2_out", "fc"}
    assert units["out"].kind == "block" and units["out"].removable and units["out"].input_from == "stem_relu"
    assert units["res2_out"].layers == ["res2_conv_a", "res2_bn_a", "res2_relu_a", "res2_conv_b", "res2_add", "res2_out"]
    assert units["res2_out"].input_from == "out" and units["res2_out"].removable
    x = np.random.default_rng(0).random((4, 8, 8, 1)).astype("float32")
    flat = tfprune.shallow.flat_graph(m).build()
    np.testing.assert_allclose(flat(x, training=False).numpy(), m(x, training=False).numpy(), rtol=1e-6, atol=1e-6)
    s = remove_units(m, [units["out"]])
    want = chain([m.get_layer(n) for n in ("stem", "stem_relu", "res2", "gap", "fc")], x)
    np.testing.assert_allclose(s(x, training=False).numpy(), want, rtol=1e-5, atol=1e-5)
    student, res = shallow(m, (np.random.default_rng(1).random((40, 8, 8, 1)).astype("float32"), np.arange(40) % 3), tau=1.0, progress=False)
    assert res.removed == ["out", "res2_out"] and [layer.name for layer in student.layers] == ["img", "stem", "stem_relu", "gap", "fc"]
    assert_unchanged(m, snap)


def gated_model():
    """Units that cannot be removed, one per reason, and one that can (``c_relu``); two inputs."""
    inp = keras.Input((8, 8, 4), name="img")
    gate = keras.Input((8, 8, 10), name="gate_in")
    a = L.Conv2D(6, 3, padding="same", name="a")(inp)
    b = L.Conv2D(4, 1, name="b")(inp)
    h = L.Concatenate(name="cat")([a, b])
    h = L.ReLU(name="c_relu")(L.Conv2D(10, 3, padding="same", name="c")(h))
    h = L.Multiply(name="gate")([L.Conv2D(10, 3, padding="same", name="d")(h), gate])
    out = L.Dense(10, name="head")(L.GlobalAveragePooling2D(name="gap")(h))
    return keras.Model([inp, gate], out, name="gated")


def test_units_that_cannot_be_removed_say_why():
    keras.utils.set_random_seed(0)
    m = gated_model()
    units = find_units(m)
    assert {u.end: (u.removable, u.reason) for u in units} == {
        "a": (False, "changes the shape (8, 8, 4) -> (8, 8, 6)"),
        "b": (False, "its input also feeds another layer"),
        "c_relu": (True, ""),
        "d": (False, "feeds a merge layer"),
        "head": (False, "produces the model output"),
    }
    for u in units:
        if not u.removable:
            with pytest.raises(ValueError, match=re.escape(f"not removable: {u.end!r} ({u.reason})")):
                remove_units(m, [u])
    rng = np.random.default_rng(0)
    x = {"img": rng.random((60, 8, 8, 4)).astype("float32"), "gate_in": rng.random((60, 8, 8, 10)).astype("float32")}
    s, res = shallow(m, (x, np.arange(60) % 10), tau=1.0, progress=False)  # dict inputs go through the probes too
    assert res.removed == ["c_relu"] and "c" not in {layer.name for layer in s.layers}
    text = res.table()
    for u in units:
        assert f"kept: {u.reason}" in text if not u.removable else "REMOVED" in text
    assert s.output_shape == m.output_shape and s.predict(x, verbose=0).shape == (60, 10)


def test_graph_errors_name_the_problem():
    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = L.Dense(3)

        def call(self, x):
            return self.d(x)

    sub = Sub()
    sub(np.zeros((1, 4), "float32"))
    with pytest.raises(TypeError, match="subclassed"):
        find_units(sub)
    shared = L.Conv2D(4, 3, padding="same", name="shared")
    inp = keras.Input((8, 8, 4))
    with pytest.raises(ValueError, match="'shared' .*shared .*called 2 times"):
        find_units(keras.Model(inp, shared(shared(inp))))
    m = tfprune.models.plain_cnn((16, 16, 1))
    other = find_units(tfprune.models.resnet_cifar(8, (16, 16, 1)))
    with pytest.raises(ValueError, match="not in model 'plain_cnn'"):
        remove_units(m, [u for u in other if u.removable])


def test_shallow_uses_no_private_keras_attributes():
    """Graph discovery and rebuild go through get_config()/from_config only."""
    src = "".join(p.read_text() for p in sorted((Path(tfprune.__file__).parent / "shallow").glob("*.py")))
    for name in ("_inbound_nodes", "_outbound_nodes", "_keras_history", "_is_graph_network", "_self_tracked_trackables", "_layers",
                 "call_args", "call_kwargs", "_call_spec"):
        assert not re.search(rf"\b{name}\b", src), name


def test_probe_data_forms(digits_data):
    """(x, y) arrays and a tf.data dataset give the same probes; inputs without labels are refused."""
    (xt, yt), _ = digits_data
    m = plain_cnn(3, seed=0)
    rep = probe_layers(m, (xt[:300], yt[:300]), progress=False)
    ds = tf.data.Dataset.from_tensor_slices((xt[:1000], yt[:1000])).batch(64)
    rep_ds = probe_layers(m, ds, n_samples=300, progress=False)
    assert [(r.name, r.accuracy) for r in rep_ds.rows] == [(r.name, r.accuracy) for r in rep.rows]
    with pytest.raises(ValueError, match="needs labels"):
        probe_layers(m, xt[:300], progress=False)
    with pytest.raises(ValueError, match="needs labels"):
        shallow(m, tf.data.Dataset.from_tensor_slices(xt[:300]).batch(64), tau=0.01)


def test_tables_fit_long_layer_names():
    long = "a_really_long_layer_name_for_the_conv_unit_that_would_overflow_a_fixed_column"
    inp = keras.Input((8, 8, 4))
    h = L.ReLU(name=long)(L.Conv2D(4, 3, padding="same", name="conv")(inp))
    m = keras.Model(inp, L.Dense(3, name="fc")(L.GlobalAveragePooling2D()(h)))
    rep = probe_layers(m, (np.random.default_rng(0).random((40, 8, 8, 4)).astype("float32"), np.arange(40) % 3), progress=False)
    _, res = shallow(m, probes=rep, tau=1.0, reestimate_bn=False)
    for text in (rep.table(), res.table()):
        lines = text.splitlines()
        header = next(i for i, line in enumerate(lines) if line.startswith("unit (end layer)"))
        col = lines[header].index("kind")
        rows = lines[header + 2 : header + 2 + len(rep.rows)]
        assert rows[0].startswith(long + " ") and all(r[col:].split()[0] == "layer" for r in rows)
        assert all(r[lines[header].index("status"):].split()[0] in ("REMOVED", "removable", "kept:") for r in rows)
    assert "| " + long + " |" in res.to_markdown()


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
    # one row recomputed by hand: features of relu3 on the same split, the same probe
    idx = np.random.default_rng(0).permutation(1200)
    f = pool_features(keras.Model(m.inputs, m.get_layer("relu3").output)(xt[:1200], training=False).numpy())
    row = next(r for r in rep.rows if r.name == "relu3")
    assert row.accuracy == fit_probe(f[idx[:600]], yt[:1200][idx[:600]], f[idx[600:]], yt[:1200][idx[600:]])
    assert rep.rows[-1].accuracy > 0.3  # the logits separate the classes well above chance (0.1)
    assert "kept: changes the shape" in rep.table()
    with pytest.warns(UserWarning, match="BatchNorm statistics were not re-estimated"):
        stale, stale_res = shallow(m, probes=rep, target_flops_reduction=0.3)
    s, res = shallow(m, (xt[:1200], yt[:1200]), probes=rep, target_flops_reduction=0.3)
    assert res.macs_reduction >= 0.3 and res.removed == stale_res.removed
    assert res.removed == [rep.rows[i].name for i in removals_for_tau([r.accuracy for r in rep.rows], [r.removable for r in rep.rows], res.tau)]
    moved = [not np.allclose(s.get_layer(b.name).moving_mean.numpy(), stale.get_layer(b.name).moving_mean.numpy())
             for b in stale.layers if isinstance(b, L.BatchNormalization)]
    assert any(moved)  # with data, the student's BatchNorm statistics were re-estimated
    assert tfprune.profile(s).macs == res.macs_after
    assert s.predict(xs[:4], verbose=0).shape == (4, 10)
    s2, res2 = shallow(m, (xt[:600], yt[:600]), probes=rep, tau=1.0)  # everything removable goes
    assert len(res2.removed) == sum(r.removable for r in rep.rows)
    assert rep.plot(str(tmp_path / "p.png"), set(res.removed)) == str(tmp_path / "p.png") and (tmp_path / "p.png").stat().st_size > 1000
    assert res.to_dict()["removed"] == res.removed and rep.to_dict()["rows"][0]["name"] == "relu0"
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


@pytest.mark.slow  # the CLI end to end (~11 s); its argument errors stay in the default suite (tests/test_cli_errors.py)
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
