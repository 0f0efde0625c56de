"""The Keras 3 backend: a Keras 3 model pruned in its own fit by the same wrap / Pruning / strip / plan / export (TensorFlow backend here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras as keras3  # Keras 3, beside tf-keras in the same process
import numpy as np
import pytest

import tfprune
from tfprune.keras3.inventory import keras3_channel_masks, keras3_wrappers
from tfprune.keras3.masks import mask_ops
from tfprune.keras3.wrapper import ChannelMask, PruneWrapper
from tfprune.masks.granularity import block_mask_np, kept_count, nm_mask_np, parse_granularity, unstructured_mask_np

assert keras3.__version__.startswith("3.")


def k3_cnn(name: str = "k3") -> keras3.Model:
    inp = keras3.Input((28, 28, 1))
    x = keras3.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv1")(inp)
    x = keras3.layers.Conv2D(16, 3, strides=2, activation="relu", name="conv2")(x)
    x = keras3.layers.Flatten()(x)
    x = keras3.layers.Dense(32, activation="relu", name="fc1")(x)
    out = keras3.layers.Dense(10, name="fc2")(x)
    return keras3.Model(inp, out, name=name)


def _compiled(model, steps_per_execution=1):
    model.compile(optimizer=keras3.optimizers.SGD(0.05), loss=keras3.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], steps_per_execution=steps_per_execution)
    return model


@pytest.fixture(scope="module")
def data(digits_data):
    (xt, yt), (xs, ys) = digits_data
    return (xt[:640], yt[:640]), (xs[:200], ys[:200])


@pytest.fixture(scope="module")
def trained(data):
    (x, y), _ = data
    keras3.utils.set_random_seed(0)
    m = _compiled(k3_cnn())
    m.fit(x, y, batch_size=64, epochs=1, verbose=0)
    return m


def _masks(model) -> dict[str, np.ndarray]:
    return {w.layer.name: np.asarray(w.mask.numpy()) for w in keras3_wrappers(model)}


def _weights(model) -> list[np.ndarray]:
    return [np.asarray(v.numpy()).copy() for v in model.weights]


# ------------------------------------------------------------------ mask rules
@pytest.mark.parametrize("rule", ["unstructured", "block", "2:4"])
@pytest.mark.parametrize("shape", [(64, 16), (3, 3, 8, 16)])
def test_keras_ops_rules_equal_the_numpy_references(rule, shape):
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal(shape).astype(np.float32)
    kernel[rng.random(shape) < 0.3] = 0.0  # ties among zeros: broken by index in both
    g = parse_granularity(rule)
    for s in (0.0, 0.3, 0.5, 0.75, 0.9):
        got = np.asarray(keras3.ops.convert_to_numpy(mask_ops(keras3.ops.convert_to_tensor(kernel), s, g)))
        if rule == "unstructured" or (rule == "block" and len(shape) != 2):
            want = unstructured_mask_np(kernel, s)
        elif rule == "block":
            want = block_mask_np(kernel, s, g.block_size)
        else:
            want = nm_mask_np(kernel, s, g.n, g.m)
        np.testing.assert_array_equal(got, want, err_msg=f"{rule} {shape} s={s}")


# --------------------------------------------------------- wrap, fit, strip
def test_wrap_prune_in_fit_and_strip(trained, data, tmp_path):
    (x, y), (xs, ys) = data
    before = _weights(trained)
    w = _compiled(tfprune.wrap(trained), steps_per_execution=3)
    assert [type(layer).__name__ for layer in w.layers if isinstance(layer, PruneWrapper)] == ["PruneWrapper"] * 4
    cb = tfprune.Pruning(0.8, end_step=12, frequency=3)
    hist = w.fit(x, y, batch_size=64, epochs=2, callbacks=[cb], verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, _weights(trained)))  # the user's model is untouched
    assert hist.history["sparsity"][-1] == pytest.approx(cb.plan_.achieved, abs=1e-4)
    inv = tfprune.prunable_layers(w)
    for p in inv:  # every layer holds exactly its planned zeros
        k = p.kernel()
        assert int((k == 0).sum()) == k.size - kept_count(k.size, cb.targets_[p.name]), p.name
        assert int(p.layer.pruning_step.numpy()) == 20
    plain = tfprune.strip(w)
    assert not keras3_wrappers(plain) and all(type(layer).__module__.startswith("keras.") for layer in plain.layers)
    np.testing.assert_allclose(plain.predict(xs, verbose=0), w.predict(xs, verbose=0), rtol=1e-5, atol=1e-5)
    for p in tfprune.prunable_layers(plain):
        assert p.sparsity() == pytest.approx(cb.targets_[p.name], abs=1.0 / p.n_params)
    path = tmp_path / "plain.keras"
    plain.save(path)
    np.save(tmp_path / "x.npy", xs[:8])
    np.save(tmp_path / "want.npy", plain.predict(xs[:8], verbose=0))
    code = ("import sys, numpy as np, keras; m = keras.saving.load_model(sys.argv[1]); "
            "np.testing.assert_allclose(m.predict(np.load(sys.argv[2]), verbose=0), np.load(sys.argv[3]), rtol=1e-5, atol=1e-5); "
            "assert 'tfprune' not in sys.modules; print('ok')")
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    out = subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "x.npy"), str(tmp_path / "want.npy")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]  # loads without tfprune


def test_steps_per_execution_gives_the_same_masks(trained, data):
    (x, y), _ = data
    runs = []
    for spe in (1, 4):
        keras3.utils.set_random_seed(0)
        w = _compiled(tfprune.wrap(trained), steps_per_execution=spe)
        w.fit(x, y, batch_size=64, epochs=2, shuffle=False, callbacks=[tfprune.Pruning(0.7, end_step=18, frequency=3)], verbose=0)
        runs.append(_masks(w))
    assert runs[0].keys() == runs[1].keys() and all(np.array_equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert all((m == 0).any() for m in runs[0].values())


@pytest.mark.parametrize("granularity", ["block", "2:4"])
def test_block_and_n_m_rules(trained, data, granularity):
    (x, y), _ = data
    w = _compiled(tfprune.wrap(trained, granularity=granularity))
    w.fit(x, y, batch_size=64, epochs=1, callbacks=[tfprune.Pruning(0.5, end_step=6, frequency=2)], verbose=0)
    masks = _masks(w)
    if granularity == "block":  # Dense kernels in (4, 1) blocks: every block all kept or all removed
        for name in ("fc1", "fc2"):
            blocks = masks[name].reshape(masks[name].shape[0] // 4, 4, -1)
            assert np.all(blocks.min(axis=1) == blocks.max(axis=1)) and (masks[name] == 0).any()
    else:  # every group of 4 consecutive input weights keeps exactly 2
        for name, m in masks.items():
            groups = np.moveaxis(m, -2, -1).reshape(-1, 4)
            assert np.all(groups.sum(axis=1) == 2), name


@pytest.mark.slow  # 30 s; nested models are also covered by test_twins_compute_the_same_function_both_ways
def test_nested_keras_applications_backbone(data):
    backbone = keras3.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None)
    inp = keras3.Input((32, 32, 3))
    out = keras3.layers.Dense(10, name="head")(keras3.layers.GlobalAveragePooling2D()(backbone(inp)))
    model = keras3.Model(inp, out)
    inv = tfprune.prunable_layers(model)
    w = _compiled(tfprune.wrap(model))
    assert len(keras3_wrappers(w)) == len(inv) > 30  # every Conv2D inside the nested backbone, and the head
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 32, 32, 3)).astype(np.float32), rng.integers(0, 10, 64)
    cb = tfprune.Pruning(0.5, end_step=4, frequency=1)
    w.fit(x, y, batch_size=16, epochs=1, callbacks=[cb], verbose=0)
    got = tfprune.prunable_layers(w)
    total = sum(p.n_params * p.sparsity() for p in got) / sum(p.n_params for p in got)
    assert total == pytest.approx(0.5, abs=2e-3)


# ------------------------------------------------------------- save, resume
RESUME_END = 30  # steps 0..30, frequency 3; 10 steps per epoch


def _run(model, x, y, epochs, initial_epoch=0, callbacks=(), granularity="unstructured"):
    if granularity == "channel":
        cb = tfprune.Pruning(macs=0.5, granularity="channel", begin_step=0, end_step=RESUME_END, frequency=3)
    else:
        cb = tfprune.Pruning(0.8, begin_step=0, end_step=RESUME_END, frequency=3)
    model.fit(x, y, batch_size=64, epochs=epochs, initial_epoch=initial_epoch, shuffle=False, callbacks=[cb, *callbacks], verbose=0)
    return cb


class _Stop(keras3.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt("simulated interruption")


def _channel_keeps(model) -> dict[str, np.ndarray]:
    return {m.name: np.asarray(m.keep.numpy()) for m in keras3_channel_masks(model)}


@pytest.mark.parametrize(("how", "granularity"), [
    ("keras", "unstructured"), pytest.param("save_weights", "unstructured", marks=pytest.mark.slow), ("backup_and_restore", "unstructured"),
    ("keras", "channel"), pytest.param("backup_and_restore", "channel", marks=pytest.mark.slow)])
def test_interrupted_and_uninterrupted_runs_give_identical_masks(trained, data, tmp_path, how, granularity, monkeypatch):
    (x, y), _ = data
    fresh = lambda: _compiled(tfprune.wrap(trained, granularity=granularity))  # noqa: E731
    run = lambda *a, **k: _run(*a, granularity=granularity, **k)  # noqa: E731
    reference = fresh()
    run(reference, x, y, epochs=4)
    if how == "backup_and_restore":
        with pytest.raises(KeyboardInterrupt):
            run(fresh(), x, y, epochs=4, callbacks=[keras3.callbacks.BackupAndRestore(str(tmp_path / "b")), _Stop(1)])
        calls = []
        monkeypatch.setattr("tfprune.training.callbacks.plan", lambda *a, **k: calls.append(1))
        resumed = fresh()
        cb = run(resumed, x, y, epochs=4, callbacks=[keras3.callbacks.BackupAndRestore(str(tmp_path / "b"))])
    else:
        first = fresh()
        run(first, x, y, epochs=2)
        if how == "keras":
            first.save(tmp_path / "mid.keras")
            resumed = tfprune.load_model(tmp_path / "mid.keras")
            assert any(isinstance(layer, (PruneWrapper, ChannelMask)) for layer in resumed.layers)
        else:
            first.save_weights(tmp_path / "mid.weights.h5")
            resumed = fresh()
            resumed.load_weights(tmp_path / "mid.weights.h5")
            # save_weights holds no optimizer state: give SGD its step count back (plain SGD has no other state)
            resumed.optimizer.build(resumed.trainable_variables)
            resumed.optimizer.iterations.assign(first.optimizer.iterations.numpy())
        assert all(np.array_equal(m, _masks(resumed)[k]) for k, m in _masks(first).items())
        assert all(np.array_equal(m, _channel_keeps(resumed)[k]) for k, m in _channel_keeps(first).items())
        calls = []
        monkeypatch.setattr("tfprune.training.callbacks.plan", lambda *a, **k: calls.append(1))
        cb = run(resumed, x, y, epochs=4, initial_epoch=2)
    assert not calls and cb.action_ == "resumed"  # the saved ramp goes on; nothing is planned again
    ref, got = _masks(reference), _masks(resumed)
    assert all(np.array_equal(ref[k], got[k]) for k in ref)
    ref, got = _channel_keeps(reference), _channel_keeps(resumed)
    assert ref.keys() == got.keys() and all(np.array_equal(ref[k], got[k]) for k in ref)
    if granularity == "channel":  # the ramp reached its end: channels really removed, the same ones
        assert ref and any((k == 0).any() for k in ref.values())
    for a, b in zip(_weights(reference), _weights(resumed)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------- load, export, guard
def test_load_model_gives_each_file_its_own_keras(trained, tmp_path, tiny):
    trained.save(tmp_path / "k3.keras")
    tiny.save(tmp_path / "tf.keras")
    assert tfprune.io.saved_keras_version(tmp_path / "k3.keras").startswith("3.")
    assert tfprune.io.saved_keras_version(tmp_path / "tf.keras").startswith("2.")
    assert isinstance(tfprune.load_model(tmp_path / "k3.keras"), keras3.Model)
    assert isinstance(tfprune.load_model(tmp_path / "tf.keras"), tfprune._keras.keras.Model)


@pytest.mark.slow  # keeps the default suite under 12 min; make test-all runs it
def test_export_tflite_takes_a_keras3_model(trained, data, tmp_path):
    (x, y), (xs, ys) = data
    w = _compiled(tfprune.wrap(trained))
    w.fit(x, y, batch_size=64, epochs=1, callbacks=[tfprune.Pruning(0.8, end_step=5, frequency=1)], verbose=0)
    for mode in ("sparse", "int8"):
        report = tfprune.export_tflite(w, tmp_path / f"m.{mode}.tflite", mode=mode, sample_inputs=(xs, ys), representative_data=x[:128])
        assert any("Keras 3" in n for n in report.notes)
        assert report.top1_agreement >= 0.95 and (tmp_path / f"m.{mode}.tflite").is_file()


def test_tf_keras_only_functions_say_what_works_and_the_fix_works(trained, data):
    (x, y), _ = data
    with pytest.raises(TypeError, match=r"works on tf-keras models only.*tfprune\.wrap.*Fix: .*import tf_keras as keras.*set_weights"):
        tfprune.pqat(trained, x[:64], y[:64], epochs=1)
    # the fix it names: the same layers built with tf-keras, the Keras 3 weights loaded into them
    from tests.conftest import tiny_cnn

    twin = tfprune.models.compile_classifier(tiny_cnn())
    twin.set_weights(trained.get_weights())
    np.testing.assert_allclose(twin.predict(x[:32], verbose=0), trained.predict(x[:32], verbose=0), rtol=1e-5, atol=1e-5)
    qat = tfprune.pqat(twin, x[:64], y[:64], epochs=1)
    assert qat is not None
    assert json.dumps(tfprune.plan(trained, 0.5).to_dict())  # plan takes the Keras 3 model itself


# ------------------------------------------------- the tf-keras twin route
def test_twins_compute_the_same_function_both_ways():
    from tfprune.keras3.convert import to_keras3, to_tf_keras

    rng = np.random.default_rng(0)
    x = (rng.random((4, 32, 32, 3)) * 255).astype(np.float32)
    inner = keras3.Sequential([keras3.Input((32, 32, 3)), keras3.layers.Conv2D(8, 3, name="c"), keras3.layers.BatchNormalization(name="bn"),
                               keras3.layers.DepthwiseConv2D(3, name="dw")], name="block")
    inp = keras3.Input((32, 32, 3))
    nested = keras3.Model(inp, keras3.layers.Dense(5, name="head")(keras3.layers.GlobalAveragePooling2D(name="gap")(inner(inp))))
    for k3_model in (tfprune.models.resnet_cifar(20, keras3=True), nested):
        for w in k3_model.weights:  # non-trivial BN statistics, so a mismatch would show
            value = np.asarray(w.numpy()) + rng.normal(0, 0.05, w.shape).astype(np.float32)
            w.assign(np.abs(value) + 0.5 if "variance" in w.path else value)
        tf_model = to_tf_keras(k3_model)
        assert isinstance(tf_model, tfprune._keras.keras.Model) and [la.name for la in tf_model.layers] == [la.name for la in k3_model.layers]
        want = k3_model.predict(x, verbose=0)
        np.testing.assert_allclose(tf_model.predict(x, verbose=0), want, rtol=1e-5, atol=1e-5)
        again = to_keras3(tf_model)
        assert isinstance(again, keras3.Model)
        np.testing.assert_allclose(again.predict(x, verbose=0), want, rtol=1e-5, atol=1e-5)


def test_obs_shrink_and_shallow_serve_keras3_models(trained, data):
    (x, y), (xs, ys) = data
    pruned, report = tfprune.obs.prune(trained, x[:128], 0.5, progress=False)
    assert isinstance(pruned, keras3.Model) and report.total_sparsity == pytest.approx(0.5, abs=0.01)
    assert tfprune.prunable_layers(pruned).total_sparsity() == pytest.approx(0.5, abs=0.01)
    groups = tfprune.channel_graph(trained)
    conv1 = next(g for g in groups.prunable if "conv1" in g.name)
    small, rep = tfprune.shrink(trained, remove={conv1.name: [0, 1]})
    assert isinstance(small, keras3.Model) and small.get_layer("conv1").filters == 6
    assert rep.params_after < rep.params_before
    probes = tfprune.shallow.probe_layers(trained, (x, y), progress=False)
    assert len(probes.rows) == 4
    retrained = tfprune.training.finetune.retrain(pruned, x[:128], y[:128], steps=2)
    assert isinstance(retrained, keras3.Model)
    assert tfprune.prunable_layers(retrained).total_sparsity() == pytest.approx(0.5, abs=0.01)  # the zeros stay
    scores = tfprune.score_layers(trained, "sensitivity", data=(x[:128], y[:128]), progress=False)
    assert set(scores.scores) == {"conv1", "conv2", "fc1", "fc2"}
    report = tfprune.analyze(trained, (x[:128], y[:128]), progress=False)
    assert report is not None
    small2, rep2 = tfprune.structured.prune_channels(trained, 0.3)
    assert isinstance(small2, keras3.Model) and tfprune.profile(small2).macs < tfprune.profile(trained).macs
# ------------------------------------------------------------------- backends
@pytest.mark.slow  # a JAX-backend subprocess (~20 s); make test-all runs it
def test_jax_backend_prunes_strips_and_saves(tmp_path):
    """A fresh process with KERAS_BACKEND=jax: wrap, fit with Pruning(0.8), every layer exactly at its planned zeros, strip, save,
    reload; then channel groups (Pruning(macs=0.5)) masked in fit and finalize() to a smaller model."""
    script = os.path.join(os.path.dirname(__file__), "scripts", "keras3_backend.py")
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    out = subprocess.run([sys.executable, script, str(tmp_path)], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["backend"] == "jax"
    for name, layer in result["layers"].items():
        assert layer["zeros"] == layer["planned_zeros"] > 0 and layer["step"] == 16, name
    assert result["sparsity_log"][-1] == pytest.approx(0.8, abs=1e-3)
    assert result["max_abs_diff"] < 1e-5 and "PruneWrapper" not in result["plain_layers"]
    # channel groups masked in the JAX train step, then shrunk: the planned MACs gone, the same outputs
    assert result["small_macs_ratio"] == pytest.approx(1 - result["planned_macs_removed"], abs=1e-6)
    assert result["channel_max_abs_diff"] < 1e-4 and result["small_backend_module"].startswith("keras.")


def test_the_readme_keras3_example_runs(tmp_path, monkeypatch, digits_data):
    """README section (f), as written, on 640 MNIST images and one epoch per fit (the only changes)."""
    import re

    text = (os.path.join(os.path.dirname(__file__), "..", "README.md"))
    with open(text) as f:
        readme = f.read()
    section = readme[readme.index("### (f) Keras 3 models"):]
    code = section[section.index("```python") + len("```python"):section.index("```", section.index("```python") + 9)]
    (xt, yt), (xs, ys) = digits_data
    monkeypatch.setattr(tfprune.datasets, "mnist", lambda *a, **k: ((xt[:640], yt[:640]), (xs[:200], ys[:200])))
    code = re.sub(r"epochs=\d+", "epochs=1", code)
    code = code.replace("latency=0.6,", "latency=0.6, iterations=2, finetune_steps=5, final_steps=5, proposal_samples=200, "
                        "check_latency=False, quantize='float',")  # (g): fewer steps; measured checks and int8 are tested in test_compress
    # the MACs table in place of timing this machine (test_compress tests the host table's use; this tests the Keras 3 route)
    monkeypatch.setattr("tfprune.latency.search.build_table", lambda m, **k: tfprune.latency.macs_table(m))
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md (f)", "exec"), scope)  # noqa: S102  (our own README)
    small = scope["small"]
    assert isinstance(small, keras3.Model) and not keras3_wrappers(small)
    assert tfprune.prunable_layers(small).total_sparsity() == pytest.approx(0.9, abs=1e-3)
    assert (tmp_path / "small.tflite").is_file()
    assert isinstance(scope["smaller"], keras3.Model) and tfprune.profile(scope["smaller"]).macs < tfprune.profile(scope["dense"]).macs
    assert isinstance(scope["pruned"], keras3.Model) and scope["report"].total_sparsity == pytest.approx(0.9, abs=0.01)
    assert isinstance(scope["student"], keras3.Model) and scope["result"].macs_reduction >= 0.3 and scope["result"].removed
    assert isinstance(scope["fast"], keras3.Model) and (tmp_path / "fast.tflite").is_file()
    assert tfprune.profile(scope["fast"]).macs < tfprune.profile(scope["dense"]).macs


def test_profile_and_the_model_zoo_twins():
    """tfprune.models builds the same network in Keras 3 (keras3=True); profile counts both alike, wrapped or not."""
    for build in (lambda k3: tfprune.models.lenet5(keras3=k3), lambda k3: tfprune.models.resnet_cifar(20, keras3=k3)):
        tf_model, k3_model = build(False), build(True)
        assert isinstance(k3_model, keras3.Model)
        a, b = tfprune.profile(tf_model), tfprune.profile(k3_model)
        assert (a.params, a.macs) == (b.params, b.macs) and a.macs > 0
        assert [w.shape for w in tf_model.get_weights()] == [w.shape for w in k3_model.get_weights()]
        c = tfprune.profile(tfprune.wrap(k3_model))
        assert (c.params, c.macs) == (b.params, b.macs)


# -------------------------------------------------------------- channel groups
def test_channel_groups_masked_in_fit_then_shrunk(trained, data, tmp_path):
    """granularity='channel' on Keras 3: ChannelMask wrappers mask coupled groups in the train step; finalize() removes them."""
    from tfprune.keras3.inventory import keras3_channel_masks

    (x, y), (xs, _) = data
    w = _compiled(tfprune.wrap(trained, granularity="channel"), steps_per_execution=2)
    masks = keras3_channel_masks(w)
    assert [m.layer.name for m in masks] == ["conv1", "conv2", "fc1"]  # fc2 makes the logits: kept whole
    cb = tfprune.Pruning(macs=0.5, granularity="channel", end_step=10, frequency=2)
    hist = w.fit(x, y, batch_size=64, epochs=2, callbacks=[cb], verbose=0)
    assert hist.history["macs_masked"][-1] == pytest.approx(cb.plan_.achieved, abs=0.02)
    masked = cb.channels_masked()
    assert sum(len(v) for v in masked.values()) == sum(len(v) for v in cb.plan_.channels.values()) > 0
    w.save(tmp_path / "masked.keras")  # the masks and ranks are saved with the model
    again = tfprune.load_model(tmp_path / "masked.keras")
    assert all(np.array_equal(a.keep.numpy(), b.keep.numpy()) for a, b in zip(keras3_channel_masks(again), keras3_channel_masks(w)))
    small = cb.finalize(x=xs[:8])
    assert isinstance(small, keras3.Model) and not keras3_channel_masks(small)
    assert tfprune.profile(small).macs == pytest.approx((1 - cb.plan_.achieved) * tfprune.profile(trained).macs, rel=0.02)
    np.testing.assert_allclose(small.predict(xs[:16], verbose=0), w.predict(xs[:16], verbose=0), rtol=1e-4, atol=1e-4)


def test_the_command_line_takes_keras3_files(trained, data, tmp_path, capsys):
    """Every CLI command reads a Keras 3 file (as its tf-keras twin) and writes --out files as Keras 3."""
    from tfprune import cli

    (x, y), (xs, ys) = data
    path, npz = str(tmp_path / "k3.keras"), str(tmp_path / "d.npz")
    trained.save(path)
    np.savez(npz, x_train=x, y_train=y, x_test=xs, y_test=ys)
    assert cli.main(["layers", path]) == 0 and "conv1" in capsys.readouterr().out
    assert cli.main(["plan", path, "--sparsity", "0.8"]) == 0
    assert cli.main(["obs", path, "--data", npz, "--sparsity", "0.5", "--n-samples", "128", "--out", str(tmp_path / "obs.keras")]) == 0
    out = tfprune.load_model(tmp_path / "obs.keras")
    assert isinstance(out, keras3.Model) and tfprune.prunable_layers(out).total_sparsity() == pytest.approx(0.5, abs=0.01)
    assert cli.main(["channels", path, "--data", npz, "--macs", "0.4", "--out", str(tmp_path / "small.keras")]) == 0
    assert isinstance(tfprune.load_model(tmp_path / "small.keras"), keras3.Model)
    assert cli.main(["export", path, "--data", npz, "--mode", "float", "--out", str(tmp_path / "m.tflite")]) == 0
    assert "Keras 3 model" in capsys.readouterr().err


# ----------------------------------------------------------- keras-hub backbones
def _hub_classifier(backbone) -> keras3.Model:
    inp = keras3.Input((32, 32, 3))
    x = keras3.layers.GlobalAveragePooling2D()(backbone(inp))
    return keras3.Model(inp, keras3.layers.Dense(10, name="head")(x))


def _hub_data():
    rng = np.random.default_rng(0)
    return rng.random((64, 32, 32, 3)).astype(np.float32), rng.integers(0, 10, 64)


def test_keras_hub_backbone_weights_and_channels():
    """A keras-hub backbone (a functional subclass whose config holds constructor arguments) nested in a classifier:
    weights pruned in fit and stripped; channel groups masked in fit and shrunk through the twin, exactness checked."""
    import keras_hub

    x, y = _hub_data()
    build = lambda: _hub_classifier(keras_hub.models.VGGBackbone(stackwise_num_repeats=[1, 2], stackwise_num_filters=[16, 32],  # noqa: E731
                                                                 image_shape=(32, 32, 3)))
    model = build()
    w = tfprune.wrap(model)
    assert len(keras3_wrappers(w)) == 4  # the three convolutions inside the backbone, and the head
    w.compile("sgd", keras3.losses.SparseCategoricalCrossentropy(from_logits=True))
    cb = tfprune.Pruning(0.6, end_step=4, frequency=1)
    w.fit(x, y, batch_size=16, epochs=1, callbacks=[cb], verbose=0)
    for p in tfprune.prunable_layers(w):
        k = p.kernel()
        assert int((k == 0).sum()) == k.size - kept_count(k.size, cb.targets_[p.name]), p.name
    np.testing.assert_allclose(tfprune.strip(w).predict(x[:8], verbose=0), w.predict(x[:8], verbose=0), rtol=1e-5, atol=1e-6)

    c = tfprune.wrap(model, granularity="channel")
    c.compile("sgd", keras3.losses.SparseCategoricalCrossentropy(from_logits=True))
    ccb = tfprune.Pruning(macs=0.3, granularity="channel", end_step=4, frequency=1)
    c.fit(x, y, batch_size=16, epochs=1, callbacks=[ccb], verbose=0)
    small, report = tfprune.shrink(c)
    assert isinstance(small, keras3.Model) and report.max_rel_diff <= 1e-4
    assert tfprune.profile(small).macs / tfprune.profile(model).macs == pytest.approx(1 - ccb.plan_.achieved, abs=1e-6)
    np.testing.assert_allclose(small.predict(x[:8], verbose=0), c.predict(x[:8], verbose=0), rtol=1e-4, atol=1e-5)


def test_keras_hub_blocks_that_rename_themselves_keep_their_weights():
    """keras-hub's MobileNet blocks rename themselves on from_config: wrap/strip copy their weights by position (the outputs of the
    unpruned wrap are the model's own, exactly), say so, and warn that the Conv kernels inside the custom blocks are not pruned."""
    import keras_hub

    x, y = _hub_data()
    backbone = keras_hub.models.MobileNetBackbone(
        stackwise_expansion=[[1], [4]], stackwise_num_blocks=[1, 1], stackwise_num_filters=[[16], [24]], stackwise_kernel_size=[[3], [3]],
        stackwise_num_strides=[[2], [2]], stackwise_se_ratio=[[None], [None]], stackwise_activation=[["relu"], ["relu"]],
        stackwise_padding=[[1], [1]], output_num_filters=64, depthwise_filters=8, depthwise_stride=1, depthwise_residual=False,
        last_layer_filter=64, image_shape=(32, 32, 3))
    model = _hub_classifier(backbone)
    want = model.predict(x[:8], verbose=0)
    with pytest.warns(UserWarning, match=r"renamed by their own class.*copied by position"):
        w = tfprune.wrap(model)
    np.testing.assert_array_equal(w.predict(x[:8], verbose=0), want)
    w.compile("sgd", keras3.losses.SparseCategoricalCrossentropy(from_logits=True))
    cb = tfprune.Pruning(0.5, end_step=2, frequency=1)
    with pytest.warns(UserWarning, match=r"Conv/Dense weights .* sit inside layers tfprune cannot wrap"):
        w.fit(x, y, batch_size=32, epochs=1, callbacks=[cb], verbose=0)
    assert any("cannot wrap" in n for n in cb.notes_)
    with pytest.warns(UserWarning, match="renamed"):
        plain = tfprune.strip(w)
    np.testing.assert_allclose(plain.predict(x[:8], verbose=0), w.predict(x[:8], verbose=0), rtol=1e-5, atol=1e-6)
