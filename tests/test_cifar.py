"""CIFAR-10: the loader (JPEG pack, cache, other sources, the error), the input pipeline, the CIFAR models."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tests.conftest import ROOT, data_mode
from tfprune import datasets, models
from tfprune._keras import keras

SHARED_PACK = ROOT.parent / "shared" / "data" / "cifar10" / "cifar10_jpeg.npz"


def _images(n: int, seed: int) -> np.ndarray:
    """Smooth random colour images (JPEG keeps them recognisable), uint8 (n, 32, 32, 3)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, 4, 4, 3)).astype(np.float32)
    return np.clip(tf.image.resize(small, (32, 32)).numpy(), 0, 255).astype(np.uint8)


def write_pack(path, n_train: int = 40, n_test: int = 20, seed: int = 0) -> dict:
    """A JPEG pack in the shared file's format; returns what decoding it must give."""
    out, want = {}, {}
    for split, n, s in (("train", n_train, seed), ("test", n_test, seed + 1)):
        files = [tf.io.encode_jpeg(img, quality=90).numpy() for img in _images(n, s)]
        out[f"{split}_jpeg"] = np.frombuffer(b"".join(files), np.uint8)
        out[f"{split}_offsets"] = np.concatenate([[0], np.cumsum([len(f) for f in files])]).astype(np.int64)
        out[f"y_{split}"] = (np.arange(n) % 10).astype(np.uint8)
        want[f"x_{split}"] = np.stack([tf.io.decode_jpeg(f, channels=3).numpy() for f in files])
        want[f"y_{split}"] = out[f"y_{split}"]
    out["class_names"] = np.array(datasets.CIFAR10_CLASSES)
    np.savez(path, **out)
    return want


def _check(data, want):
    (xt, yt), (xs, ys) = data
    assert xt.dtype == np.uint8 and xt.shape == want["x_train"].shape and xt.shape[1:] == (32, 32, 3)
    assert yt.dtype == np.uint8 and yt.shape == (len(xt),) and ys.shape == (len(xs),)  # (n,), not keras' (n, 1)
    np.testing.assert_array_equal(xt, want["x_train"])
    np.testing.assert_array_equal(xs, want["x_test"])
    np.testing.assert_array_equal(yt, want["y_train"])
    np.testing.assert_array_equal(ys, want["y_test"])


def test_jpeg_pack_is_decoded_then_cached(tmp_path, monkeypatch, capsys):
    pack = tmp_path / "pack.npz"
    want = write_pack(pack)
    cache = tmp_path / "cache"
    data, source = datasets.load_cifar10(pack, cache=cache)
    _check(data, want)
    assert "decoded in" in source and str(cache) in source and "40 train / 20 test" in source
    assert source in capsys.readouterr().err  # announced once on stderr
    assert len(list(cache.glob("cifar10-*.npz"))) == 1

    def no_decoding(*a, **k):
        raise AssertionError("decoded again: the cache was not used")

    monkeypatch.setattr(datasets, "_decode_jpegs", no_decoding)
    data2, source2 = datasets.load_cifar10(pack, cache=cache)
    _check(data2, want)
    assert "cached at" in source2 and capsys.readouterr().err == ""  # same source: not announced twice
    # a changed pack (new modification time) is decoded again, and its stale cache removed
    monkeypatch.undo()
    st = os.stat(pack)
    os.utime(pack, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    _, source3 = datasets.load_cifar10(pack, cache=cache, verbose=False)
    assert "decoded in" in source3 and len(list(cache.glob("cifar10-*.npz"))) == 1
    # cache=False: nothing written
    _, source4 = datasets.load_cifar10(pack, cache=False, verbose=False)
    assert "decoded in" in source4 and "cached" not in source4


def test_other_sources_env_npz_and_keras_folder(tmp_path, monkeypatch):
    want = write_pack(tmp_path / "pack.npz")
    plain = tmp_path / "plain.npz"
    np.savez(plain, x_train=want["x_train"], y_train=want["y_train"][:, None], x_test=want["x_test"], y_test=want["y_test"][:, None])
    monkeypatch.setenv(datasets.CIFAR10_ENV_VAR, str(plain))
    data, source = datasets.load_cifar10(verbose=False)  # keras' (n, 1) labels come back as (n,)
    _check(data, want)
    assert source.startswith(f"CIFAR-10 from {plain} ")
    # keras' extracted cifar-10-batches-py folder: 5 training batches + test_batch (pickled, channels first)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    chunks = np.array_split(np.arange(len(want["x_train"])), 5)
    for i, idx in enumerate(chunks, start=1):
        batch = {b"data": want["x_train"][idx].transpose(0, 3, 1, 2).reshape(len(idx), -1), b"labels": list(want["y_train"][idx])}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
    test = {b"data": want["x_test"].transpose(0, 3, 1, 2).reshape(len(want["x_test"]), -1), b"labels": list(want["y_test"])}
    (folder / "test_batch").write_bytes(pickle.dumps(test))
    _check(datasets.cifar10(folder), want)  # the path argument comes before $TFPRUNE_CIFAR10
    with pytest.raises(ValueError, match="neither a CIFAR-10 JPEG pack"):
        np.savez(tmp_path / "bad.npz", x=np.zeros(3))
        datasets.cifar10(tmp_path / "bad.npz", cache=False)


def test_no_source_names_every_option(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise OSError("no network")

    monkeypatch.delenv(datasets.CIFAR10_ENV_VAR, raising=False)
    monkeypatch.setattr(datasets, "SHARED_CIFAR10", os.path.join("no-shared", "cifar10_jpeg.npz"))
    monkeypatch.setattr(datasets, "KERAS_CIFAR10_DIR", str(tmp_path / "keras" / "cifar-10-batches-py"))
    monkeypatch.setattr(keras.datasets.cifar10, "load_data", offline)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        datasets.cifar10(tmp_path / "nope.npz")
    msg = str(err.value)
    assert "path argument" in msg and "nope.npz (not found)" in msg and f"${datasets.CIFAR10_ENV_VAR}: not set" in msg
    assert "shared JPEG pack" in msg and "no-shared" in msg and "keras' extracted download" in msg
    assert "download: OSError: no network" in msg and "Fix:" in msg and "cifar-10-batches-py" in msg
    with pytest.raises(FileNotFoundError, match="not tried"):
        datasets.load_cifar10(download=False)


def _augmented_is_a_crop(aug: np.ndarray, img: np.ndarray) -> bool:
    padded = np.pad(img, ((4, 4), (4, 4), (0, 0)))
    for cand in (aug, aug[:, ::-1]):
        for dy in range(9):
            for dx in range(9):
                if np.array_equal(padded[dy:dy + 32, dx:dx + 32], cand):
                    return True
    return False


def test_pipeline_shapes_determinism_and_augmentation():
    x = _images(50, 3)
    y = (np.arange(50) % 10).astype(np.uint8)
    ev = list(datasets.cifar10_pipeline(x, y, 16, train=False))
    assert [len(a) for a, _ in ev] == [16, 16, 16, 2] and datasets.cifar10_steps(50, 16) == 4
    xe = np.concatenate([a.numpy() for a, _ in ev])
    assert ev[0][0].dtype == tf.float32 and ev[0][1].dtype == tf.int32
    np.testing.assert_array_equal(xe, x.astype(np.float32))  # eval: in order, unchanged
    np.testing.assert_array_equal(np.concatenate([b.numpy() for _, b in ev]), y)

    def batches(**kw):
        return [(a.numpy(), b.numpy()) for a, b in datasets.cifar10_pipeline(x, y, 16, **kw)]

    run = batches(seed=1, epochs=3)
    assert len(run) == 12 and run[0][0].shape == (16, 32, 32, 3) and run[3][0].shape == (2, 32, 32, 3)
    again = batches(seed=1, epochs=3)
    assert all(np.array_equal(a, b) and np.array_equal(la, lb) for (a, la), (b, lb) in zip(run, again))
    resumed = batches(seed=1, first_epoch=2, epochs=1)  # epoch 2 alone = epoch 2 of the full run
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(run[8:], resumed))
    other = batches(seed=2, epochs=1)
    assert not np.array_equal(run[0][0], other[0][0])
    assert not np.array_equal(run[0][0], run[4][0])  # every epoch reshuffled / re-augmented
    # every training image is a 32x32 window of the zero-padded original, maybe mirrored; most differ from it
    xa = np.concatenate([a for a, _ in run[:4]]).astype(np.uint8)
    ya = np.concatenate([b for _, b in run[:4]])
    assert all(any(_augmented_is_a_crop(xa[i], x[j]) for j in np.flatnonzero(y == ya[i])) for i in range(16))
    changed = sum(not any(np.array_equal(xa[i], x[j]) for j in range(50)) for i in range(50))
    assert changed > 40  # 1 in 162 (crop offset (4, 4), no flip) is unchanged
    assert sorted(ya.tolist()) == sorted(y.tolist())  # one epoch = every image once
    # normalisation in the pipeline (for a model without the layer)
    xn = next(iter(datasets.cifar10_pipeline(x, y, 16, train=False, normalize=True)))[0].numpy()
    np.testing.assert_allclose(xn, datasets.cifar10_normalize(x[:16]), rtol=1e-6)
    with pytest.raises(ValueError, match="labels"):
        datasets.cifar10_pipeline(x, y[:3])


def test_pipeline_trains_a_model_with_keras_fit():
    x = _images(64, 5)
    y = (np.arange(64) % 10).astype(np.uint8)
    keras.utils.set_random_seed(0)
    m = models.compile_classifier(models.vgg_cifar(11, 0.125))
    h = m.fit(datasets.cifar10_pipeline(x, y, 32, seed=0), epochs=2, steps_per_epoch=datasets.cifar10_steps(64, 32), verbose=0)
    assert len(h.history["loss"]) == 2 and np.isfinite(h.history["loss"]).all()
    assert np.isfinite(m.evaluate(x, y, verbose=0)[0])  # raw uint8 pixels: the model normalises


def _trainable(m) -> int:
    return int(sum(np.prod(w.shape) for w in m.trainable_weights))


def test_cifar_models_sizes_and_normalisation():
    r20, r56 = models.resnet_cifar(20), models.resnet_cifar(56)
    assert _trainable(r20) == 272_474 and _trainable(r56) == 855_770  # He et al.: 0.27 M, 0.85 M
    assert tfprune.profile(r20).macs == 40_813_184 and tfprune.profile(r56).macs == 125_747_840
    v16, v11 = models.vgg_cifar(16), models.vgg_cifar(11, 0.25)
    assert _trainable(v16) == 923_130 and _trainable(v11) == 579_098
    assert tfprune.profile(v16).macs == 19_907_840 and tfprune.profile(v11).macs == 9_880_832
    assert [layer.filters for layer in v16.layers if isinstance(layer, keras.layers.Conv2D)] == [16, 16, 32, 32] + [64] * 3 + [128] * 6
    for m in (r20, v16):
        assert isinstance(m.layers[1], keras.layers.Normalization) and m.layers[1].name == "normalize"
        ones = np.broadcast_to(np.asarray(datasets.CIFAR10_MEAN, np.float32), (1, 32, 32, 3))
        np.testing.assert_allclose(m.layers[1](ones).numpy(), 0, atol=1e-5)
    # MNIST-shaped and other inputs stay as they were: no normalisation layer unless asked
    assert not any(isinstance(layer, keras.layers.Normalization) for layer in models.resnet_cifar(20, (28, 28, 1)).layers)
    assert not any(isinstance(layer, keras.layers.Normalization) for layer in models.vgg_cifar(11, 0.25, normalize=False).layers)
    with pytest.raises(ValueError, match="3 channels"):
        models.resnet_cifar(20, (28, 28, 1), normalize=True)
    with pytest.raises(ValueError, match="depth"):
        models.vgg_cifar(13)
    decayed = models.resnet_cifar(8, weight_decay=1e-4)
    assert len(decayed.losses) == len([layer for layer in decayed.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))])
    assert not models.resnet_cifar(8).losses
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in models.vgg_cifar(11, 0.25, batch_norm=False).layers)


def test_cifar_mobilenet_v2_shape_sizes_and_channel_pruning():
    """Inverted residuals on 32x32 (strides 1, 1, 1, 2, 2, 1, 2, 1: a 4x4 map before pooling); expansion groups prunable through
    the depthwise convs, residual stages coupled; a uniform channel plan shrinks it with the masked model's outputs."""
    m = models.mobilenet_v2_cifar(0.5)
    assert _trainable(m) == 590_410 and tfprune.profile(m).macs == 26_324_224
    assert m.get_layer("head_conv").input.shape[1:3] == (4, 4) and m.get_layer("head_conv").filters == 640
    assert [ly.name for ly in m.layers if isinstance(ly, keras.layers.Add)][:2] == ["block2_add", "block4_add"]
    graph = tfprune.channel_graph(m)
    assert any("block3_expand" in g.name for g in graph.prunable)
    plan, small, _ = tfprune.structured.plan.plan_and_shrink(m, macs=0.4, allocation="uniform")
    assert tfprune.profile(small).macs <= 0.62 * tfprune.profile(m).macs
    with pytest.raises(ValueError, match="width"):
        models.mobilenet_v2_cifar(0)


@pytest.mark.parametrize("build", [lambda: models.resnet_cifar(20), lambda: models.vgg_cifar(16, 0.25)], ids=["resnet20", "vgg16"])
def test_cifar_models_prune_channels_and_weights(build):
    m = build()
    graph = tfprune.channel_graph(m)
    table = graph.table()
    first = table.splitlines()[0]
    n_prunable = int(first.split(",")[1].split()[0])
    assert n_prunable == (12 if m.name == "resnet20" else 13), first
    assert "normalize" not in [p.name for p in tfprune.prunable_layers(m)]
    wrapped = tfprune.wrap(m)
    assert sum(isinstance(layer, tfprune.PruneLayer) for layer in wrapped.layers) == len(tfprune.prunable_layers(m))
    cwrapped = tfprune.wrap(m, granularity="channel")
    x = _images(4, 9).astype(np.float32)
    np.testing.assert_allclose(cwrapped(x).numpy(), m(x).numpy(), rtol=1e-4, atol=1e-4)  # masks start all ones
    scores = tfprune.structured.channel_importance(m, "l2")
    small, report = tfprune.shrink(m, remove=tfprune.structured.lowest_channels(scores, 0.3))
    assert tfprune.profile(small).macs < tfprune.profile(m).macs and isinstance(small.layers[1], keras.layers.Normalization)


@pytest.mark.data_file
@pytest.mark.skipif(data_mode() == "bundled" or not SHARED_PACK.is_file(), reason="no shared CIFAR-10 pack here (or TFPRUNE_TEST_DATA=bundled)")
def test_real_shared_pack(tmp_path):
    data, source = datasets.load_cifar10(SHARED_PACK, cache=tmp_path, verbose=False)
    (xt, yt), (xs, ys) = data
    assert xt.shape == (50_000, 32, 32, 3) and xs.shape == (10_000, 32, 32, 3) and xt.dtype == np.uint8
    assert yt.shape == (50_000,) and ys.shape == (10_000,)
    assert np.bincount(yt).tolist() == [5000] * 10 and np.bincount(ys).tolist() == [1000] * 10
    mean = xt[::10].reshape(-1, 3).mean(0)
    np.testing.assert_allclose(mean, datasets.CIFAR10_MEAN, atol=2.0)  # the JPEG copy is within 1.3 pixel values
    ((xt2, _), _), source2 = datasets.load_cifar10(SHARED_PACK, cache=tmp_path, verbose=False)
    assert "cached at" in source2  # read back, not decoded again (no timing: test_jpeg_pack_is_decoded_then_cached)
    np.testing.assert_array_equal(xt2[:100], xt[:100])


def test_train_cifar_script_stops_and_resumes(tmp_path, monkeypatch):
    """benchmarks/train_cifar.py on a tiny pack: stopped by --max-minutes after epoch 1, resumed, finished, checkpoint written."""
    import importlib.util

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the script caches the decoded pack: not in ~/.cache

    spec = importlib.util.spec_from_file_location("train_cifar", ROOT / "benchmarks" / "train_cifar.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    pack = tmp_path / "pack.npz"
    write_pack(pack, n_train=40, n_test=20)
    out, ck = tmp_path / "res.json", tmp_path / "ck"
    argv = ["--model", "vgg11", "--width", "0.125", "--epochs", "2", "--batch-size", "32", "--data", str(pack),
            "--out", str(out), "--checkpoint-dir", str(ck)]
    assert script.main(argv + ["--max-minutes", "0.0001"]) == 0
    res = json.loads(out.read_text())["models"]["vgg11_w0.125"]
    assert res["epochs_done"] == 1 and (ck / "vgg11_w0.125.resume.keras").is_file() and not (ck / "vgg11_w0.125.keras").exists()
    with pytest.raises(SystemExit):  # an unfinished run is not overwritten without --resume
        script.main(argv)
    assert script.main(argv + ["--resume"]) == 0
    data = json.loads(out.read_text())
    res = data["models"]["vgg11_w0.125"]
    assert res["epochs_done"] == 2 and len(res["test_acc"]) == 2 and len(res["commands"]) == 2 and res["cpu_seconds"] > 0
    assert res["recipe"]["weight_decay"] == 5e-4 and data["config"]["cpu_minutes"] > 0 and "--resume" in data["config"]["command"]
    final = ck / "vgg11_w0.125.keras"
    assert final.is_file() and res["checkpoint_bytes"] == final.stat().st_size and not (ck / "vgg11_w0.125.resume.keras").exists()
    reloaded = tfprune.load_model(final)
    assert not reloaded.losses  # committed without regularizers
    assert (tmp_path / "res.md").is_file() and (tmp_path / "res.png").is_file()
    assert len(list((tmp_path / "cache" / "tfprune").glob("cifar10-*.npz"))) == 1


def test_a_missing_path_is_said_when_another_source_is_used(tmp_path, monkeypatch, capsys):
    want = write_pack(tmp_path / "pack.npz")
    monkeypatch.setenv(datasets.CIFAR10_ENV_VAR, str(tmp_path / "pack.npz"))
    data, source = datasets.load_cifar10(tmp_path / "typo.npz", cache=tmp_path / "cache")
    _check(data, want)
    err = capsys.readouterr().err
    assert source in err and "skipped path argument" in err and "typo.npz (not found)" in err
