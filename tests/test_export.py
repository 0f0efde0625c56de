"""Item 8: TFLite export in four modes, verified with ai-edge-litert."""

import gzip
import importlib.util
import re

import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tfprune._keras import keras
from tfprune.export import micro_arena_bytes, micro_interpreter, operators, run_micro, run_tflite_outputs, tflite_tensor_sparsity

needs_tflm = pytest.mark.skipif(
    importlib.util.find_spec("tflite_micro") is None,
    reason="tflite-micro is not installed (pip install 'tfprune[micro]'; CI installs it with the test extra)",
)


@pytest.fixture(scope="module")
def pruned(trained_tiny, digits_data):
    (xt, yt), _ = digits_data
    w = tfprune.models.compile_classifier(tfprune.wrap(tfprune.clone(trained_tiny)))
    w.fit(xt[:1280], yt[:1280], batch_size=64, epochs=2, verbose=0,
          callbacks=[tfprune.Pruning({"conv1": 0.5, "conv2": 0.8, "fc1": 0.9, "fc2": 0.7}, end_step=20, verbose=0)])
    return w


@pytest.mark.parametrize("mode", ["float", "sparse", "dynamic", "int8"])
def test_modes_parity_and_report(pruned, digits_data, tmp_path, mode):
    (xt, _), (xs, ys) = digits_data
    before = [v.numpy().copy() for v in pruned.weights]
    # calibration from train digits, parity on test digits
    r = tfprune.export_tflite(pruned, tmp_path / f"m_{mode}.tflite", mode=mode, sample_inputs=(xs[:300], ys[:300]), representative_data=xt[:100], n_samples=300)
    content = open(r.path, "rb").read()
    assert r.bytes == len(content) and r.gzip_bytes == len(gzip.compress(content, compresslevel=9))
    assert r.n_samples == 300 and not r.inputs_were_random
    assert (r.n_calibration, r.calibration_overlap) == ((100, 0) if mode == "int8" else (0, 0))
    tol = {"float": 1e-4, "sparse": 1e-4, "dynamic": 0.5, "int8": 2.0}[mode]
    assert r.max_abs_diff < tol
    assert r.rel_error < (1e-5 if mode in ("float", "sparse") else 0.05)
    (out,) = r.outputs
    assert out.shape == (10,) and out.rel_error == r.rel_error and out.top1_agreement == r.top1_agreement
    assert out.top1_samples + out.top1_ties == 300 and out.top1_samples >= 280
    assert r.top1_agreement >= (0.999 if mode in ("float", "sparse") else 0.97)
    assert abs(r.tflite_accuracy - r.keras_accuracy) <= (0.0 if mode in ("float", "sparse") else 0.03)
    keras_pred = pruned.predict(xs[:300], verbose=0)
    assert r.keras_accuracy == pytest.approx(np.mean(keras_pred.argmax(-1) == ys[:300]), abs=1e-12)
    # float32 noise: Keras predicts in batches of 32 here and of 256 in export_tflite (about 1e-9 apart per output)
    assert out.rel_error == pytest.approx(np.linalg.norm(keras_pred - _tflite_outputs(content, xs[:300])) / np.linalg.norm(keras_pred), rel=1e-4, abs=1e-8)
    assert 0.5 < r.tflite_accuracy <= 1  # trained and fine-tuned: far above chance (0.1)
    # the flatbuffer's weight tensors carry the sparsity that training produced
    fc1 = [t for t in r.tensors if t.shape == (32, 16 * 6 * 6) or t.shape == (32, 576)]
    assert fc1, [t.shape for t in r.tensors]
    assert fc1[0].zero_fraction == pytest.approx(0.9, abs=0.01)
    # int8 / dynamic: the FC kernels are stored dense so that XNNPack runs the file (xnnpack_safe)
    assert fc1[0].stored == ("sparse" if mode == "sparse" else "dense")
    assert fc1[0].dtype == ("int8" if mode in ("dynamic", "int8") else "float32")
    assert ("fc1" in " ".join(r.dense_for_xnnpack)) == (mode in ("dynamic", "int8"))
    conv2 = [t for t in r.tensors if t.shape == (16, 3, 3, 8)]
    assert conv2[0].stored == ("sparse" if mode in ("sparse", "int8") else "dense")  # int8 convs stay sparse
    assert r.to_dict()["runtime"] == r.runtime == "xnnpack"  # every mode runs on the default delegate
    table = r.table()
    assert f"[{mode}] {r.bytes} bytes, {r.gzip_bytes} gzipped" in table and f"top-1 agreement = {r.top1_agreement:.4f}" in table
    assert f"relative error = {r.rel_error:.3g}" in table
    assert f"accuracy: keras {r.keras_accuracy:.4f}, tflite {r.tflite_accuracy:.4f}" in table
    for a, b in zip(before, [v.numpy() for v in pruned.weights]):
        np.testing.assert_array_equal(a, b)  # export never changes the model


def _tflite_outputs(content, x):
    (out,), _ = run_tflite_outputs(content, np.asarray(x, "float32"))
    return out


def test_int8_sparse_fc_runs_on_builtin_kernels_and_says_so(pruned, digits_data, tmp_path):
    (xt, _), (xs, ys) = digits_data
    r = tfprune.export_tflite(pruned, tmp_path / "s.tflite", mode="int8", sample_inputs=(xs[:200], ys[:200]),
                              representative_data=xt[:100], xnnpack_safe=False)
    fc1 = [t for t in r.tensors if t.shape == (32, 576)]
    assert fc1[0].stored == "sparse" and r.dense_for_xnnpack == []
    assert r.runtime.startswith("builtin (XNNPack refused: failed to delegate FULLY_CONNECTED")
    assert any("builtin (reference) kernels ran it" in n for n in r.notes) and "note: XNNPack refused" in r.table()
    assert r.top1_agreement >= 0.97
    safe = tfprune.export_tflite(pruned, tmp_path / "d.tflite", mode="int8", sample_inputs=(xs[:200], ys[:200]), representative_data=xt[:100])
    assert safe.runtime == "xnnpack" and safe.bytes > r.bytes  # dense FC kernels: a bigger file ...
    assert safe.tflite_accuracy == pytest.approx(r.tflite_accuracy, abs=0.01)  # ... the same int8 model


def test_sparse_is_smaller_than_float(pruned, digits_data, tmp_path):
    _, (xs, ys) = digits_data
    f = tfprune.export_tflite(pruned, tmp_path / "f.tflite", mode="float", sample_inputs=xs[:20])
    s = tfprune.export_tflite(pruned, tmp_path / "s.tflite", mode="sparse", sample_inputs=xs[:20])
    assert s.bytes < 0.6 * f.bytes
    assert f.keras_accuracy is None  # no labels, no accuracy


def test_tf_data_samples_and_random_inputs(pruned, digits_data, tmp_path):
    _, (xs, ys) = digits_data
    ds = tf.data.Dataset.from_tensor_slices((xs[:100], ys[:100])).batch(32)
    r = tfprune.export_tflite(pruned, tmp_path / "d.tflite", mode="sparse", sample_inputs=ds, n_samples=70)
    assert r.n_samples == 70 and not r.inputs_were_random
    keras_pred = pruned.predict(xs[:70], verbose=0).argmax(-1)  # the first 70 of the batched dataset
    assert r.keras_accuracy == pytest.approx(np.mean(keras_pred == ys[:70]), abs=1e-12)
    assert r.tflite_accuracy == r.keras_accuracy and r.top1_agreement == 1.0
    rr = tfprune.export_tflite(pruned, tmp_path / "r.tflite", mode="float", n_samples=8)
    assert rr.inputs_were_random and rr.n_samples == 8 and rr.top1_agreement == 1.0


def test_c_header_refused_for_sparse_files(pruned, digits_data, tmp_path):
    (xt, _), (xs, _) = digits_data
    for mode in ("sparse", "int8", "dynamic"):
        with pytest.raises(ValueError, match=r"no DENSIFY kernel and no sparse tensors \(tflite-micro#491\).*Fix: mode='micro'"):
            tfprune.export_tflite(pruned, tmp_path / f"{mode}.tflite", mode=mode, sample_inputs=xs[:10], representative_data=xt[:10], c_header=tmp_path / "m.h")
        assert not (tmp_path / "m.h").exists() and not (tmp_path / f"{mode}.tflite").exists()


@needs_tflm
def test_micro_mode_runs_on_tflm(pruned, trained_tiny, digits_data, tmp_path):
    (xt, _), (xs, ys) = digits_data
    r = tfprune.export_tflite(pruned, tmp_path / "m.tflite", mode="micro", sample_inputs=(xs[:300], ys[:300]), representative_data=xt[:200],
                              n_samples=300, c_header=tmp_path / "model_data.h", c_var_name="g_lenet")
    content = open(r.path, "rb").read()
    # what TFLM runs: int8, dense encoding, no DENSIFY; the pruned zeros are still in the array
    assert "DENSIFY" not in operators(content) and all(t.stored == "dense" for t in r.tensors)
    fc1 = [t for t in r.tensors if t.shape == (32, 576)]
    assert fc1[0].dtype == "int8" and fc1[0].zero_fraction == pytest.approx(0.9, abs=0.01)
    m = r.micro
    assert m.runtime.startswith("tflite-micro ") and m.flash_bytes == r.bytes == len(content) and m.n_samples == 300
    assert m.top1_agreement >= 0.97 and m.rel_error < 0.05 and r.top1_agreement >= 0.97
    assert m.accuracy == pytest.approx(r.tflite_accuracy, abs=0.01) and f", accuracy {m.accuracy:.4f}" in r.table()
    # the arena is the smallest that allocates (to 16 bytes), and the model runs in it
    assert micro_arena_bytes(content) == m.arena_bytes > 0
    with pytest.raises(RuntimeError, match="TFLM failed to allocate tensors"):
        micro_interpreter(content, m.arena_bytes - 16)
    # TFLM and TFLite's builtin kernels run the same int8 model: outputs within one quantization step
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=content)
    it.allocate_tensors()
    (inp,), (out,) = it.get_input_details(), it.get_output_details()
    assert inp["dtype"] == out["dtype"] == np.int8  # int8 input and output
    tflm = run_micro(content, xs[:50], m.arena_bytes)[0]
    assert np.max(np.abs(tflm - _tflite_outputs(content, xs[:50]))) <= out["quantization"][0] * 1.001
    # the C array is the file, byte for byte
    text = open(r.c_header).read()
    assert "alignas(16) const unsigned char g_lenet[]" in text and f"g_lenet_len = {r.bytes};" in text
    body = text[text.index("g_lenet[] = {"):text.index("};")]
    assert bytes(int(h, 16) for h in re.findall(r"0x([0-9a-f]{2})", body)) == content
    table = r.table()
    assert f"TFLM ({m.runtime}): flash {m.flash_bytes} bytes ({r.gzip_bytes} gzipped), arena {m.arena_bytes} bytes" in table
    # the zeros do not shrink the array, they shrink it compressed
    unpruned = tfprune.export_tflite(trained_tiny, tmp_path / "u.tflite", mode="micro", sample_inputs=xs[:20], representative_data=xt[:200])
    assert abs(unpruned.bytes - r.bytes) < 0.02 * r.bytes and r.gzip_bytes < 0.6 * unpruned.gzip_bytes
    # a float file in a C header runs on TFLM too
    f = tfprune.export_tflite(pruned, tmp_path / "f.tflite", mode="float", sample_inputs=xs[:20], c_header=tmp_path / "f.h")
    assert f.micro.max_abs_diff < 1e-4 and f.micro.top1_agreement == 1.0


def test_c_header_without_tflite_micro_warns(pruned, digits_data, tmp_path, monkeypatch):
    import tfprune.export.micro as micro

    (xt, _), (xs, _) = digits_data
    monkeypatch.setattr(micro, "micro_runtime", lambda: None)
    with pytest.warns(UserWarning, match=r"tflite-micro is not installed: the file was not run with TensorFlow Lite Micro. Fix: pip install"):
        r = tfprune.export_tflite(pruned, tmp_path / "m.tflite", mode="micro", sample_inputs=xs[:20], representative_data=xt[:50], c_header=tmp_path / "m.h")
    assert r.micro is None and open(r.c_header).read().count("0x") == r.bytes


def test_tensor_reader_counts_zeros_exactly(tmp_path):
    from tfprune._keras import keras

    m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, name="d")])
    k = np.arange(1, 33, dtype="float32").reshape(8, 4)
    k[:5] = 0
    m.get_layer("d").kernel.assign(k)
    content = tf.lite.TFLiteConverter.from_keras_model(m).convert()
    infos = [t for t in tflite_tensor_sparsity(content) if t.n_elements == 32]
    assert infos[0].zero_fraction == pytest.approx(20 / 32) and infos[0].stored == "dense"


def test_bad_inputs(pruned, digits_data, tmp_path):
    (xt, _), (xs, ys) = digits_data
    with pytest.raises(ValueError, match="mode must be one of"):
        tfprune.export_tflite(pruned, tmp_path / "x.tflite", mode="fp16")
    for mode in ("int8", "micro"):
        with pytest.raises(ValueError, match="needs calibration data apart from the parity samples. Fix: pass representative_data"):
            tfprune.export_tflite(pruned, tmp_path / "x.tflite", mode=mode, sample_inputs=(xs[:10], ys[:10]))
    with pytest.raises(ValueError, match="n_samples"):
        tfprune.export_tflite(pruned, tmp_path / "x.tflite", n_samples=0)
    with pytest.raises(ValueError, match="shape"):
        tfprune.export_tflite(pruned, tmp_path / "x.tflite", sample_inputs=np.zeros((4, 10, 10, 1), "float32"))


def test_calibration_on_the_parity_samples_is_counted_and_warned(pruned, digits_data, tmp_path):
    (xt, _), (xs, ys) = digits_data
    mixed = np.concatenate([xs[:30], xt[:70]])  # 30 of the 100 parity samples calibrate too
    with pytest.warns(UserWarning, match="30 of the 100 parity samples are also calibration samples"):
        r = tfprune.export_tflite(pruned, tmp_path / "x.tflite", mode="int8", sample_inputs=(xs[:100], ys[:100]), representative_data=mixed, n_samples=100)
    assert (r.n_calibration, r.calibration_overlap) == (100, 30)
    assert "calibration: 100 samples, 30 of them also parity samples" in r.table()


def test_parity_math():
    from tfprune.export import relative_error, top1_stats

    ref = np.array([[1.0, 2.0, 0.0], [3.0, 0.0, 1.0], [0.0, 0.0, 5.0], [1.0, 1.0, 0.0]])
    got = np.array([[1.0, 2.5, 0.0], [1.0, 1.0, 1.0], [0.0, 4.0, 4.0], [2.0, 0.0, 0.0]])
    assert relative_error(ref, ref) == 0.0
    assert relative_error(ref, got) == pytest.approx(np.sqrt(0.25 + 4 + 1 + 1 + 16 + 1 + 1) / np.sqrt(1 + 4 + 9 + 1 + 25 + 1 + 1))
    assert relative_error(np.zeros(3), np.ones(3)) == float("inf") and relative_error(np.zeros(3), np.zeros(3)) == 0.0
    # row 0 agrees; rows 1 and 2 tie in `got` (no top-1 there); row 3 ties in `ref`: 1 sample counted
    assert top1_stats(ref, got) == (1.0, 1, 2)
    assert top1_stats(ref[:1], got[:1][:, [1, 0, 2]]) == (0.0, 1, 0)
    agreement, counted, ties = top1_stats(np.ones((2, 3)), np.ones((2, 3)))
    assert np.isnan(agreement) and counted == 0 and ties == 2
    with pytest.raises(ValueError, match="classes>1"):
        top1_stats(np.ones((4, 1)), np.ones((4, 1)))


def test_outputs_matched_by_name_top1_only_on_class_outputs(tmp_path):
    from tfprune._keras import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inp)
    feats = keras.layers.GlobalAveragePooling2D(name="features")(h)
    probs = keras.layers.Dense(5, activation="softmax", name="probs")(feats)
    spatial = keras.layers.Conv2D(2, 1, name="spatial")(h)
    m = keras.Model(inp, [spatial, probs, feats])
    x = np.random.default_rng(1).standard_normal((20, 8, 8, 3)).astype("float32")
    r = tfprune.export_tflite(m, tmp_path / "multi.tflite", mode="float", sample_inputs=x)
    by_name = {o.name: o for o in r.outputs}
    assert [o.name for o in r.outputs] == m.output_names
    assert by_name["spatial"].shape == (8, 8, 2) and by_name["probs"].shape == (5,) and by_name["features"].shape == (4,)
    assert all(o.max_abs_diff < 1e-5 and o.rel_error < 1e-5 for o in r.outputs)  # right output to right output
    assert by_name["probs"].top1_agreement == 1.0 and by_name["probs"].top1_samples == 20
    assert np.isnan(by_name["spatial"].top1_agreement) and np.isnan(by_name["features"].top1_agreement)  # not classes
    assert r.top1_agreement == 1.0 and "| probs | (5,) |" in r.to_markdown()


def _three_heads(as_dict: bool):
    """Three outputs whose Keras order (zbox, acls, mid) differs from the converter's (alphabetical), two 3-D, one classification-like."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    a = keras.layers.Conv2D(8, 3, padding="same", name="a")(inp)
    f = keras.layers.Reshape((-1, 8), name="flat")(a)
    box = keras.layers.Dense(4, name="zbox")(f)
    cls = keras.layers.Dense(3, name="acls")(f)
    mid = keras.layers.Dense(5, name="mid")(keras.layers.GlobalAveragePooling2D(name="gap")(a))
    return keras.Model(inp, {"boxes": box, "classes": cls, "k": mid} if as_dict else [box, cls, mid])


@pytest.mark.parametrize("as_dict", [True, False])
def test_multi_output_parity_per_output(tmp_path, as_dict):
    m = _three_heads(as_dict)
    rng = np.random.default_rng(0)
    x, xc = rng.random((32, 16, 16, 3), dtype=np.float32), rng.random((64, 16, 16, 3), dtype=np.float32)
    ref = m.predict(x, verbose=0)
    ref = [ref[k] for k in ("boxes", "classes", "k")] if as_dict else ref
    names = ["boxes", "classes", "k"] if as_dict else ["zbox", "acls", "mid"]
    for mode in ("float", "int8"):
        r = tfprune.export_tflite(m, tmp_path / f"{mode}.tflite", mode=mode, sample_inputs=x, representative_data=xc, n_samples=32)
        assert [o.name for o in r.outputs] == names and [o.shape for o in r.outputs] == [(256, 4), (256, 3), (5,)]
        # each output against the right Keras output (the file's outputs are in another order: acls, mid, zbox)
        got, _ = run_tflite_outputs(open(r.path, "rb").read(), x)
        by_shape = {g.shape[1:]: g for g in got}
        for o, want in zip(r.outputs, ref):
            assert o.rel_error == pytest.approx(np.linalg.norm(by_shape[want.shape[1:]] - want) / np.linalg.norm(want), rel=1e-4, abs=1e-8)
            assert o.rel_error < (1e-5 if mode == "float" else 0.05)
        assert r.rel_error == max(o.rel_error for o in r.outputs)
        assert [o.top1_samples > 0 for o in r.outputs] == [False, False, True]  # top-1 only on the (batch, classes) output
        table = r.table()
        assert all(f"{n} " in table for n in names)  # one row per output
