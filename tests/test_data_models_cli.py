"""Items 1, 9 and 10: datasets, reference models, the console script, the demo."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tfprune
from tests.conftest import ROOT, mnist_path
from tfprune import datasets, models
from tfprune._keras import keras


@pytest.fixture
def offline(monkeypatch):
    def fail(*a, **k):
        raise OSError("no network")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", fail)
    monkeypatch.delenv(datasets.ENV_VAR, raising=False)


@pytest.mark.skipif(mnist_path() is None, reason="real MNIST not available here")
def test_mnist_from_path_and_env(monkeypatch, offline):
    path = mnist_path()
    (xt, yt), (xs, ys) = datasets.mnist(path)
    assert xt.shape[1:] == (28, 28, 1) and xt.dtype == np.float32 and 0 <= xt.min() and xt.max() <= 1
    assert xs.shape == (10000, 28, 28, 1) and set(np.unique(ys)) == set(range(10))
    monkeypatch.setenv(datasets.ENV_VAR, path)
    (xt2, _), _ = datasets.mnist(normalize=False)
    assert xt2.dtype == np.uint8 and xt2.shape == xt.shape


def test_mnist_missing_names_every_option(offline, tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        datasets.mnist(tmp_path / "nope.npz")
    msg = str(err.value)
    assert "nope.npz" in msg and datasets.ENV_VAR in msg and "download" in msg


def test_bad_npz_layout(tmp_path):
    p = tmp_path / "bad.npz"
    np.savez(p, x=np.zeros(3))
    with pytest.raises(ValueError, match="layout"):
        datasets.mnist(p)


def test_offline_fallback_is_real_digits_and_announced(offline, capsys):
    (data, source) = datasets.load_mnist_or_digits("/nonexistent/mnist.npz")
    (xt, yt), (xs, ys) = data
    assert "scikit-learn digits" in source and "offline fallback" in capsys.readouterr().out
    assert xt.shape[1:] == (28, 28, 1) and len(xt) + len(xs) == 1797
    assert xt[:, :4].max() == 0 and xt.max() > 0.9  # centred in a 28x28 frame like MNIST


def test_reference_models():
    def kernels(m):
        return tfprune.prunable_layers(m).n_params

    assert kernels(models.lenet5()) == 430500
    assert [p.n_params for p in tfprune.prunable_layers(models.lenet5())] == [500, 25000, 400000, 5000]
    assert kernels(models.lenet_300_100()) == 784 * 300 + 300 * 100 + 100 * 10
    r20 = models.resnet_cifar(20, (28, 28, 1))
    convs = [p for p in tfprune.prunable_layers(r20) if p.layer_type == "Conv2D" and not p.name.endswith("proj")]
    assert len(convs) == 19
    assert sum(isinstance(layer, keras.layers.Add) for layer in r20.layers) == 9
    assert len([p for p in tfprune.prunable_layers(models.resnet56()) if not p.name.endswith("proj")]) == 56
    assert models.vgg_small().output_shape == (None, 10)
    with pytest.raises(ValueError, match="6n\\+2"):
        models.resnet_cifar(21)


def test_plain_cnn_stages_and_shallowing_candidates():
    from tfprune.shallow import find_units

    m = models.plain_cnn()
    convs = [layer for layer in m.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [16, 16, 32, 32, 32, 64, 64, 64]
    units = find_units(m)
    removable = [u.end for u in units if u.removable]
    assert removable == ["relu1", "relu3", "relu4", "relu6", "relu7"]
    # VGG-style: every removable conv costs the same MACs (28*28*9*16*16 at 28x28 input)
    assert {u.macs for u in units if u.removable} == {28 * 28 * 9 * 16 * 16}
    assert models.plain_cnn(stages=((8, 1), (8, 2))).count_params() < m.count_params()
    with pytest.raises(ValueError, match="stages"):
        models.plain_cnn(stages=((16, 0),))


def test_adam_cosine_decay():
    lr = keras.optimizers.schedules.deserialize(models.adam(1e-3, decay_steps=10).get_config()["learning_rate"])
    assert abs(float(lr(0)) - 1e-3) < 1e-9 and float(lr(10)) < 1e-9 and 0 < float(lr(5)) < 1e-3
    assert models.adam(5e-4).get_config()["learning_rate"] == pytest.approx(5e-4)
    with pytest.raises(ValueError, match="decay_steps"):
        models.adam(1e-3, decay_steps=0)


def _cli(*args, timeout=600):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "tfprune.cli", *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def test_cli_layers_and_export(trained_tiny, tmp_path):
    path = str(tmp_path / "m.keras")
    tfprune.wrap(trained_tiny, 0.5).save(path)
    r = _cli("layers", path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "fc1" in r.stdout and "yes" in r.stdout
    out = str(tmp_path / "m.tflite")
    r = _cli("export", path, "--out", out, "--mode", "sparse", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(r.stdout[r.stdout.index("{"):])
    assert rep["bytes"] == os.path.getsize(out) and rep["top1_agreement"] == 1.0
    r = _cli("export", str(tmp_path / "missing.keras"), "--out", out)
    assert r.returncode == 2 and "no model file" in r.stderr


def test_demo_short_run(tmp_path):
    """The README demo, shortened (1+2 epochs): trains, prunes, fine-tunes, exports, prints, plots."""
    from tfprune.demo import run_demo

    rec = run_demo(mnist_path(), str(tmp_path), sparsity=0.9, epochs=1, prune_epochs=2)
    assert rec["achieved_sparsity"] == pytest.approx(0.9, abs=1e-4)
    assert all(row["achieved"] == pytest.approx(row["target"], abs=1e-3) for row in rec["layers"])
    acc = rec["accuracy"]
    assert acc["dense_keras"] > 0.85 and acc["pruned_keras"] > 0.85
    assert acc["sparse_tflite"] == pytest.approx(acc["pruned_keras"], abs=1e-3)
    assert rec["tflite"]["sparse"]["bytes"] < 0.25 * rec["tflite"]["float"]["bytes"]
    for f in ("demo.json", "demo.png", "lenet5_sparse.tflite", "lenet5_int8.tflite", "lenet5_int8.h"):
        assert (tmp_path / f).is_file(), f
