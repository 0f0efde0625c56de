"""Item 8: TFLite export in four modes, verified with ai-edge-litert."""

import gzip
import re

import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tfprune.export import tflite_tensor_sparsity


@pytest.fixture(scope="module")
def pruned(trained_tiny, digits_data):
    (xt, yt), _ = digits_data
    w = tfprune.models.compile_classifier(tfprune.wrap(tfprune.clone(trained_tiny)))
    w.fit(xt[:1280], yt[:1280], batch_size=64, epochs=2, verbose=0,
          callbacks=[tfprune.LayerwisePruning({"conv1": 0.5, "conv2": 0.8, "fc1": 0.9, "fc2": 0.7}, end_step=20, verbose=0)])
    return w


@pytest.mark.parametrize("mode", ["float", "sparse", "dynamic", "int8"])
def test_modes_parity_and_report(pruned, digits_data, tmp_path, mode):
    (xt, _), (xs, ys) = digits_data
    before = [v.numpy().copy() for v in pruned.weights]
    r = tfprune.export_tflite(pruned, tmp_path / f"m_{mode}.tflite", mode=mode, sample_inputs=(xs[:300], ys[:300]), representative_data=xt[:100], n_samples=300)
    content = open(r.path, "rb").read()
    assert r.bytes == len(content) and r.gzip_bytes == len(gzip.compress(content, compresslevel=9))
    assert r.n_samples == 300 and not r.inputs_were_random
    tol = {"float": 1e-4, "sparse": 1e-4, "dynamic": 0.5, "int8": 2.0}[mode]
    assert r.max_abs_diff < tol
    assert r.top1_agreement >= (0.999 if mode in ("float", "sparse") else 0.95)
    assert abs(r.tflite_accuracy - r.keras_accuracy) <= (0.0 if mode in ("float", "sparse") else 0.03)
    keras_pred = pruned.predict(xs[:300], verbose=0).argmax(-1)
    assert r.keras_accuracy == pytest.approx(np.mean(keras_pred == ys[:300]), abs=1e-12)
    assert 0.5 < r.tflite_accuracy <= 1  # trained and fine-tuned: far above chance (0.1)
    # the flatbuffer's weight tensors carry the sparsity that training produced
    fc1 = [t for t in r.tensors if t.shape == (32, 16 * 6 * 6) or t.shape == (32, 576)]
    assert fc1, [t.shape for t in r.tensors]
    assert fc1[0].zero_fraction == pytest.approx(0.9, abs=0.01)
    assert fc1[0].stored == ("dense" if mode == "float" else "sparse")
    assert fc1[0].dtype == ("int8" if mode in ("dynamic", "int8") else "float32")
    assert r.to_dict()["runtime"] == r.runtime and (r.runtime == "xnnpack" or r.runtime.startswith("builtin"))
    table = r.table()
    assert f"[{mode}] {r.bytes} bytes, {r.gzip_bytes} gzipped" in table and f"top-1 agreement = {r.top1_agreement:.4f}" in table
    assert f"accuracy: keras {r.keras_accuracy:.4f}, tflite {r.tflite_accuracy:.4f}" in table
    for a, b in zip(before, [v.numpy() for v in pruned.weights]):
        np.testing.assert_array_equal(a, b)  # export never changes the model


def test_sparse_is_smaller_than_float(pruned, digits_data, tmp_path):
    _, (xs, ys) = digits_data
    f = tfprune.export_tflite(pruned, tmp_path / "f.tflite", mode="float", sample_inputs=xs[:20])
    s = tfprune.export_tflite(pruned, tmp_path / "s.tflite", mode="sparse", sample_inputs=xs[:20])
    assert s.bytes < 0.6 * f.bytes
    assert f.keras_accuracy is None  # no labels, no accuracy


def test_tf_data_samples_random_inputs_and_c_header(pruned, digits_data, tmp_path):
    _, (xs, ys) = digits_data
    ds = tf.data.Dataset.from_tensor_slices((xs[:100], ys[:100])).batch(32)
    r = tfprune.export_tflite(pruned, tmp_path / "d.tflite", mode="sparse", sample_inputs=ds, n_samples=70,
                              c_header=tmp_path / "model_data.h", c_var_name="g_lenet")
    assert r.n_samples == 70 and not r.inputs_were_random
    keras_pred = pruned.predict(xs[:70], verbose=0).argmax(-1)  # the first 70 of the batched dataset
    assert r.keras_accuracy == pytest.approx(np.mean(keras_pred == ys[:70]), abs=1e-12)
    assert r.tflite_accuracy == r.keras_accuracy and r.top1_agreement == 1.0
    text = open(r.c_header).read()
    assert "alignas(16) const unsigned char g_lenet[]" in text and f"g_lenet_len = {r.bytes};" in text
    body = text[text.index("g_lenet[] = {"):text.index("};")]
    assert bytes(int(h, 16) for h in re.findall(r"0x([0-9a-f]{2})", body)) == open(r.path, "rb").read()  # the file, byte for byte
    rr = tfprune.export_tflite(pruned, tmp_path / "r.tflite", mode="float", n_samples=8)
    assert rr.inputs_were_random and rr.n_samples == 8 and rr.top1_agreement == 1.0


def test_tensor_reader_counts_zeros_exactly(tmp_path):
    from tfprune._keras import keras

    m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, name="d")])
    k = np.arange(1, 33, dtype="float32").reshape(8, 4)
    k[:5] = 0
    m.get_layer("d").kernel.assign(k)
    content = tf.lite.TFLiteConverter.from_keras_model(m).convert()
    infos = [t for t in tflite_tensor_sparsity(content) if t.n_elements == 32]
    assert infos[0].zero_fraction == pytest.approx(20 / 32) and infos[0].stored == "dense"


def test_bad_inputs(pruned, tmp_path):
    with pytest.raises(ValueError, match="mode must be one of"):
        tfprune.export_tflite(pruned, tmp_path / "x.tflite", mode="fp16")
    with pytest.raises(ValueError, match="needs calibration data. Fix: pass representative_data"):
        tfprune.export_tflite(pruned, tmp_path / "x.tflite", mode="int8")
    with pytest.raises(ValueError, match="n_samples"):
        tfprune.export_tflite(pruned, tmp_path / "x.tflite", n_samples=0)
    with pytest.raises(ValueError, match="shape"):
        tfprune.export_tflite(pruned, tmp_path / "x.tflite", sample_inputs=np.zeros((4, 10, 10, 1), "float32"))
