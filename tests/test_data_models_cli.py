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
    """No $TFPRUNE_MNIST and a keras download that fails, as on a fresh offline machine."""

    def fail(*a, **k):
        raise OSError("no network")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", fail)
    monkeypatch.delenv(datasets.ENV_VAR, raising=False)


def _raw(path):
    with np.load(path) as d:
        return {k: d[k] for k in d.files}


def test_mnist_from_path_and_env(monkeypatch, offline, capsys):
    path = mnist_path()
    raw = _raw(path)
    (xt, yt), (xs, ys) = datasets.mnist(path)
    assert xt.shape == (len(raw["x_train"]), 28, 28, 1) and xt.dtype == np.float32 and yt.dtype == np.int64
    assert xs.shape == (len(raw["x_test"]), 28, 28, 1) and len(ys) == len(xs) and len(yt) == len(xt)
    np.testing.assert_array_equal(xt[..., 0], raw["x_train"] / np.float32(255))  # scaled, not altered
    np.testing.assert_array_equal(ys, raw["y_test"])
    assert xt.min() == 0 and xt.max() == 1 and set(np.unique(ys)) == set(range(10))
    monkeypatch.setenv(datasets.ENV_VAR, path)
    (xt2, _), _ = datasets.mnist(normalize=False)
    assert xt2.dtype == np.uint8 and xt2.shape == xt.shape
    np.testing.assert_array_equal(xt2[..., 0], raw["x_train"])
    data, source = datasets.load_mnist()
    assert source == f"MNIST from {path} ({len(xt):,} train / {len(xs):,} test images)"
    assert capsys.readouterr().err == ""  # a file that is found is not announced as a fallback


def test_mnist_missing_names_every_option(offline, tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        datasets.mnist(tmp_path / "nope.npz", fallback=False)
    msg = str(err.value)
    assert "nope.npz (no such file)" in msg and f"${datasets.ENV_VAR}: not set" in msg
    assert "download: OSError: no network" in msg and "Fix:" in msg


def test_bad_npz_layout(tmp_path):
    p = tmp_path / "bad.npz"
    np.savez(p, x=np.zeros(3))
    with pytest.raises(ValueError, match="layout"):
        datasets.mnist(p)


def test_offline_falls_back_to_bundled_mnist_and_says_so(offline, capsys):
    """A fresh offline machine: the MNIST subset shipped in the package, announced with its size."""
    (xt, yt), (xs, ys) = datasets.mnist("/nonexistent/mnist.npz")
    err = capsys.readouterr().err
    raw = _raw(datasets.BUNDLED_MNIST)
    np.testing.assert_array_equal(xt[..., 0], raw["x_train"] / np.float32(255))
    np.testing.assert_array_equal(ys, raw["y_test"])
    assert xt.shape[1:] == (28, 28, 1) and set(np.unique(yt)) == set(range(10))
    assert "full MNIST not found" in err and "/nonexistent/mnist.npz (no such file)" in err and "no network" in err
    assert f"bundled with tfprune ({len(xt):,} train / {len(xs):,} test images" in err and datasets.BUNDLED_MNIST in err
    data, source = datasets.load_mnist_or_digits(verbose=False)
    assert source.startswith("the MNIST subset bundled with tfprune") and capsys.readouterr().err == ""
    np.testing.assert_array_equal(data[1][1], ys)
    with pytest.raises(FileNotFoundError):
        datasets.mnist(fallback=False)


def test_bundled_subset_is_the_start_of_mnist():
    """The shipped file holds real MNIST: the first images of the full set (when that is here)."""
    small = _raw(datasets.BUNDLED_MNIST)
    assert all(small[k].dtype == np.uint8 for k in small) and small["x_train"].shape[1:] == (28, 28)
    assert os.path.getsize(datasets.BUNDLED_MNIST) < 3 * 2**20
    assert np.bincount(small["y_train"], minlength=10).min() > 0.05 * len(small["y_train"])  # every class well represented
    full_path = mnist_path()
    if full_path == datasets.BUNDLED_MNIST:
        pytest.skip("no full MNIST here to compare with")
    full = _raw(full_path)
    for k in small:
        np.testing.assert_array_equal(small[k], full[k][: len(small[k])])


def test_keras_download_has_a_socket_timeout(monkeypatch):
    """An unreachable network must not hang the download: a socket timeout is set while it runs."""
    import socket

    seen = []

    def fake_load():
        seen.append(socket.getdefaulttimeout())
        raise OSError("no network")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", fake_load)
    before = socket.getdefaulttimeout()
    with pytest.raises(OSError):
        datasets._keras_download(timeout=3.0)
    assert seen == [3.0] and socket.getdefaulttimeout() == before


def test_digits_only_when_the_bundled_file_is_missing(offline, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(datasets, "BUNDLED_MNIST", str(tmp_path / "gone.npz"))
    with pytest.raises(FileNotFoundError, match="reinstall tfprune"):
        datasets.mnist_small()
    (data, source) = datasets.load_mnist_or_digits("/nonexistent/mnist.npz")
    (xt, yt), (xs, ys) = data
    assert "scikit-learn digits" in source and "offline fallback" in capsys.readouterr().err
    assert xt.shape[1:] == (28, 28, 1) and len(xt) + len(xs) == 1797  # sklearn's digit set
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
    lr = keras.optimizers.schedules.deserialize(tfprune.training.finetune.adam_cosine(1e-3, decay_steps=10).get_config()["learning_rate"])
    assert abs(float(lr(0)) - 1e-3) < 1e-9 and float(lr(10)) < 1e-9 and 0 < float(lr(5)) < 1e-3
    assert tfprune.training.finetune.adam_cosine(5e-4).get_config()["learning_rate"] == pytest.approx(5e-4)
    with pytest.raises(ValueError, match="decay_steps"):
        tfprune.training.finetune.adam_cosine(1e-3, decay_steps=0)


def _cli(*args, timeout=600):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "tfprune.cli", *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


@pytest.mark.slow  # keeps the default suite under 12 min; make test-all runs it
def test_cli_layers_and_export(trained_tiny, tmp_path):
    path = str(tmp_path / "m.keras")
    tfprune.wrap(trained_tiny, 0.5).save(path)
    r = _cli("layers", path)
    assert r.returncode == 0, r.stderr[-2000:]
    inv = tfprune.prunable_layers(trained_tiny)
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines() if line.split() and line.split()[0] in inv.names}
    assert set(rows) == set(inv.names)
    for p in inv:  # params column and "wrapped: yes" on every prunable layer's row
        assert rows[p.name][-2:] == [str(p.n_params), "yes"], rows[p.name]
    assert f"total prunable weights: {inv.n_params}" in r.stdout
    out = str(tmp_path / "m.tflite")
    r = _cli("export", path, "--out", out, "--mode", "sparse", "--data", mnist_path(), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(r.stdout[r.stdout.index("{"):])
    assert rep["bytes"] == os.path.getsize(out) and rep["top1_agreement"] == 1.0 and rep["max_abs_diff"] < 1e-4
    assert not rep["inputs_were_random"] and rep["n_samples"] == 256
    assert 0.5 < rep["keras_accuracy"] <= 1 and rep["tflite_accuracy"] == rep["keras_accuracy"]  # trained: far above chance (0.1)
    fc1 = [t for t in rep["tensors"] if tuple(t["shape"]) == (32, 576)]
    kernel = trained_tiny.get_layer("fc1").kernel.numpy()  # wrapped but not yet pruned: its zeros are the trained ones
    assert fc1 and fc1[0]["zero_fraction"] == pytest.approx(np.mean(kernel == 0), abs=1e-9)
    r = _cli("export", str(tmp_path / "missing.keras"), "--out", out)
    assert r.returncode == 2 and "no model file" in r.stderr


def test_demo_short_run(tmp_path, capsys):
    """The README demo, shortened (1+1 epochs on 12,000 images): trains, prunes, fine-tunes, exports, prints, plots."""
    from tfprune.demo import run_demo

    with np.load(mnist_path()) as full:  # a 12,000 / 3,000 subset keeps this under 30 s on 2 cores (the full set is the demo's)
        subset = {k: full[k][:12_000] if k.endswith("train") else full[k][:3_000] for k in full.files}
    data = tmp_path / "mnist_subset.npz"
    np.savez(data, **subset)
    rec = run_demo(str(data), str(tmp_path), sparsity=0.9, epochs=1, prune_epochs=1)
    out = capsys.readouterr().out
    n_test = len(subset["y_test"])
    assert rec["data"].startswith(f"MNIST from {data}") and f"{n_test:,} test images" in rec["data"]
    assert f"data: {rec['data']}" in out and f"LeNet-5 on {rec['data']}" in out
    assert rec["achieved_sparsity"] == pytest.approx(0.9, abs=1e-4)
    assert [row["name"] for row in rec["layers"]] == tfprune.prunable_layers(models.lenet5()).names
    assert all(row["achieved"] == pytest.approx(row["target"], abs=1e-3) for row in rec["layers"])
    acc = rec["accuracy"]
    assert all(0 <= v <= 1 for v in acc.values())
    assert acc["dense_keras"] > 0.85 and acc["pruned_keras"] > 0.85  # chance is 0.1
    assert acc["dense_tflite"] == pytest.approx(acc["dense_keras"], abs=1e-3)
    assert acc["sparse_tflite"] == pytest.approx(acc["pruned_keras"], abs=1e-3)
    assert acc["int8_tflite"] == pytest.approx(acc["pruned_keras"], abs=0.02)
    assert rec["tflite"]["sparse"]["bytes"] < 0.25 * rec["tflite"]["float"]["bytes"]
    for key, file in (("float", "lenet5_dense"), ("sparse", "lenet5_sparse"), ("int8", "lenet5_int8")):
        assert rec["tflite"][key]["bytes"] == (tmp_path / f"{file}.tflite").stat().st_size
    assert f"| pruned Keras | {acc['pruned_keras']:.4f} |" in out
    saved = json.loads((tmp_path / "demo.json").read_text())
    assert saved == {k: v for k, v in rec.items() if k != "plot"}
    assert (tmp_path / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header = (tmp_path / "lenet5_int8.h").read_text()
    assert f"_len = {rec['tflite']['int8']['bytes']};" in header
