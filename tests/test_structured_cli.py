"""`tfprune channels`: structured pruning from the command line, on a tiny saved model and a small mnist.npz."""

import json

import numpy as np
import pytest

import tfprune
from tfprune import cli
from tfprune.inventory.profiling import profile
from tfprune.structured.prune import top1_accuracy


@pytest.fixture
def saved(trained_tiny, digits_data, tmp_path):
    (xt, yt), (xs, ys) = digits_data
    model_path = str(tmp_path / "tiny.keras")
    trained_tiny.save(model_path)
    npz = str(tmp_path / "mnist_small.npz")
    as_uint8 = lambda x: np.round(x[..., 0] * 255).astype(np.uint8)  # noqa: E731  (keras layout: uint8 (N, 28, 28))
    np.savez(npz, x_train=as_uint8(xt[:1000]), y_train=yt[:1000], x_test=as_uint8(xs[:500]), y_test=ys[:500])
    return model_path, npz, trained_tiny, (xs[:500], ys[:500])


def test_cli_channels_prunes_finetunes_and_saves(saved, tmp_path, capsys):
    model_path, npz, model, (xs, ys) = saved
    out = str(tmp_path / "small.keras")
    assert cli.main(["channels", model_path, "--macs", "0.4", "--data", npz, "--finetune-epochs", "1", "--allocation", "uniform",
                     "--out", out]) == 0
    text = capsys.readouterr().out
    assert "channel plan for 'tiny': macs removed" in text and "allocation 'uniform'" in text
    assert "conv1" in text and "conv2" in text and "fc1" in text  # the per-group table
    assert f"saved {out}" in text
    small = tfprune.load_model(out)
    ratio = profile(small).macs / profile(model).macs
    assert abs((1 - ratio) - 0.4) <= 0.05
    acc = top1_accuracy(ys, small.predict(xs, verbose=0))
    assert f"{acc:.4f}" in text  # the printed fine-tuned accuracy is the saved model's
    dense = top1_accuracy(ys, model.predict(xs, verbose=0))
    assert f"{dense:.4f}" in text


def test_cli_channels_json_params_target(saved, capsys):
    model_path, _, model, _ = saved
    assert cli.main(["channels", model_path, "--params", "0.3", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["plan"]["budget"] == "params" and abs(d["plan"]["achieved"] - 0.3) <= 0.05
    assert d["acc_before"] is None and d["finetune_epochs"] == 0


def test_cli_channels_errors(saved, capsys):
    model_path, _, _, _ = saved
    assert cli.main(["channels", model_path, "--finetune-epochs", "1"]) == 2
    assert "needs --data" in capsys.readouterr().err
    assert cli.main(["channels", model_path, "--macs", "1.5"]) == 2
    assert "fraction removed" in capsys.readouterr().err


def _rgb_sources(root):
    """A tiny RGB classification set as a .npz with custom keys, an image folder and a module:function."""
    import sys

    from tfprune._keras import keras

    rng = np.random.default_rng(0)
    y = np.arange(24) % 3
    x = (rng.random((24, 16, 16, 3)) * 60).astype(np.uint8)
    for i, c in enumerate(y):
        x[i, 4:12, 4:12, c] = 255
    folder = root / "images"
    for i, (img, c) in enumerate(zip(x, y)):
        (folder / f"class_{c}").mkdir(parents=True, exist_ok=True)
        keras.utils.save_img(str(folder / f"class_{c}" / f"{i}.png"), img)
    npz = root / "custom.npz"
    np.savez(npz, pixels=x, labels=y)
    (root / "channels_data.py").write_text(
        "import numpy as np, tensorflow as tf\n"
        f"d = np.load({str(npz)!r})\n"
        "def dataset():\n"
        "    return tf.data.Dataset.from_tensor_slices((d['pixels'] / 255.0, d['labels'])).batch(8)\n")
    sys.path.insert(0, str(root))
    return x / 255.0, y, {"npz": [str(npz), "--x-key", "pixels", "--y-key", "labels"], "folder": [str(folder)],
                          "module": ["channels_data:dataset"]}


@pytest.fixture
def rgb(tmp_path):
    import sys

    from tfprune._keras import keras

    x, y, srcs = _rgb_sources(tmp_path)
    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = keras.Input((16, 16, 3))
    h = L.Conv2D(8, 3, padding="same", name="c1")(inp)
    h = L.ReLU()(L.BatchNormalization(name="bn1")(h))
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="c2")(h)
    h = L.GlobalAveragePooling2D()(h)
    m = keras.Model(inp, L.Dense(3, name="head")(L.Dense(12, activation="relu", name="fc")(h)))
    tfprune.models.compile_classifier(m)
    m.fit(x, y, epochs=3, verbose=0)
    path = str(tmp_path / "rgb.keras")
    m.save(path)
    yield path, m, x, y, srcs
    sys.path.remove(str(tmp_path))


@pytest.mark.parametrize("kind", ["npz", "folder", "module"])
def test_cli_channels_data_sources(rgb, kind, tmp_path, capsys):
    path, model, x, y, srcs = rgb
    out = str(tmp_path / "small.keras")
    assert cli.main(["channels", path, "--macs", "0.3", "--data", *srcs[kind], "--finetune-epochs", "1", "--batch-size", "8",
                     "--out", out, "--json"]) == 0
    captured = capsys.readouterr()
    d = json.loads(captured.out.split("\nsaved ")[0])  # --json: training progress goes to stderr
    assert "data: " in captured.err
    dense = top1_accuracy(y, model.predict(x, verbose=0))
    assert d["acc_before"] == pytest.approx(dense) and d["finetune_epochs"] == 1  # every source reads the same 24 images
    small = tfprune.load_model(out)
    assert abs(profile(small).macs / profile(model).macs - (1 - d["plan"]["achieved"])) < 1e-9


def test_cli_channels_gradual(rgb, tmp_path, capsys):
    path, model, x, y, srcs = rgb
    out = str(tmp_path / "small.keras")
    assert cli.main(["channels", path, "--macs", "0.4", "--data", *srcs["npz"], "--gradual-epochs", "3", "--batch-size", "8",
                     "--allocation", "uniform", "--out", out]) == 0
    text = capsys.readouterr().out
    assert "gradual: 3 epochs with Pruning over channel groups" in text and "channel plan for" in text
    small = tfprune.load_model(out)
    plan_line = [ln for ln in text.splitlines() if ln.startswith("MACs")][0].split()
    assert profile(small).macs == int(plan_line[2])  # the plan's MACs after == the saved small model's
    assert f"{top1_accuracy(y, small.predict(x, verbose=0)):.4f}" in text
    assert cli.main(["channels", path, "--gradual-epochs", "2"]) == 2
    assert "--gradual-epochs 2 needs --data" in capsys.readouterr().err
