"""The CLI's --data: any .npz (key names as options), an image folder, or module:function; on a non-MNIST model."""

import json
import sys

import numpy as np
import pytest

import tfprune
from tfprune import cli
from tfprune._keras import keras


def _images(n=24, seed=0):
    """Three classes of 16x16 RGB images a tiny CNN can tell apart: a bright red, green or blue square."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = (rng.random((n, 16, 16, 3)) * 60).astype(np.uint8)
    for i, c in enumerate(y):
        x[i, 4:12, 4:12, c] = 255
    return x, y


@pytest.fixture(scope="module")
def rgb_model(tmp_path_factory):
    keras.utils.set_random_seed(0)
    x, y = _images(96)
    inp = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(8, 3, activation="relu", name="c1")(inp)
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = keras.layers.Dense(3, activation="softmax", name="head")(keras.layers.Dense(16, activation="relu", name="fc")(h))
    m = keras.Model(inp, out)
    m.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    m.fit(x / 255.0, y, epochs=30, verbose=0)
    path = str(tmp_path_factory.mktemp("m") / "rgb.keras")
    m.save(path)
    return path, m


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    x, y = _images(24)
    folder = root / "images"
    for i, (img, c) in enumerate(zip(x, y)):
        (folder / f"class_{c}").mkdir(parents=True, exist_ok=True)
        keras.utils.save_img(str(folder / f"class_{c}" / f"{i}.png"), img)
    npz = root / "custom.npz"
    np.savez(npz, pixels=x, labels=y)
    mod = root / "my_data.py"
    mod.write_text(
        "import numpy as np, tensorflow as tf\n"
        f"d = np.load({str(npz)!r})\n"
        "def dataset():\n"
        "    return tf.data.Dataset.from_tensor_slices((d['pixels'] / 255.0, d['labels'])).batch(8)\n"
    )
    sys.path.insert(0, str(root))
    yield {"folder": str(folder), "npz": str(npz), "module": "my_data:dataset"}
    sys.path.remove(str(root))


def test_load_source_forms(sources):
    from tfprune.data import load_source, take

    train, test, desc = load_source(sources["folder"], image_size=(16, 16))
    s = take(test, need_labels=True)
    assert s.x.shape == (24, 16, 16, 3) and 0 <= s.x.min() and s.x.max() <= 1.0 and sorted(set(s.y.tolist())) == [0, 1, 2]
    assert "3 classes" in desc
    a, _, _ = load_source(sources["npz"], x_key="pixels", y_key="labels")
    assert a[0].dtype == np.float32 and a[0].max() == pytest.approx(1.0) and len(a[1]) == 24
    m, _, _ = load_source(sources["module"])
    assert take(m, need_labels=True).x.shape == (24, 16, 16, 3)
    with pytest.raises(ValueError, match="--x-key"):
        load_source(sources["npz"])
    with pytest.raises(ValueError, match="holds"):
        load_source(sources["npz"], x_key="nope")
    with pytest.raises(ValueError, match="cannot import"):
        load_source("no_such_module_xyz:fn")


@pytest.mark.parametrize("form", ["folder", "npz", "module"])
def test_cli_commands_on_a_non_mnist_model(rgb_model, sources, form, tmp_path, capsys):
    path, model = rgb_model
    data = ["--data", sources[form]] + (["--x-key", "pixels", "--y-key", "labels"] if form == "npz" else [])
    assert cli.main(["plan", path, "--sparsity", "0.5", "--json", *data]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["targets"]) == {"c1", "fc", "head"}
    assert cli.main(["analyze", path, "--sparsity", "0.5", "--json", *data]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["dense_acc"] > 0.9  # the model learned the three colours; the data reached it the right way
    tfl = str(tmp_path / "m.tflite")
    assert cli.main(["export", path, "--out", tfl, "--mode", "float", "--json", *data]) == 0
    ex = json.loads(capsys.readouterr().out)
    assert ex["max_abs_diff"] < 1e-4 and ex["tflite_accuracy"] > 0.9
    out_path = str(tmp_path / "obs.keras")
    assert cli.main(["obs", path, "--sparsity", "0.5", "--n-samples", "24", "--out", out_path, *data]) == 0
    text = capsys.readouterr().out
    assert "test accuracy:" in text and tfprune.prunable_layers(tfprune.load_model(out_path)).total_sparsity() > 0.3
