"""Detectors: graphs with list inputs (a Concatenate of one tensor), keras-cv YOLOV8 built offline."""

import numpy as np
import pytest

import tfprune
from tfprune._keras import keras


def _head_model():
    inp = keras.Input((16, 16, 3))
    a = keras.layers.Conv2D(8, 3, padding="same", name="a")(inp)
    b = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="b")(a)
    flat_a = keras.layers.Reshape((-1, 8))(a)
    flat_b = keras.layers.Reshape((-1, 8))(b)
    both = keras.layers.Concatenate(axis=1, name="levels")([flat_a, flat_b])
    box = keras.layers.Concatenate(axis=1, name="box")([keras.layers.Dense(4, name="box_fc")(both)])  # identity that names the output
    cls = keras.layers.Dense(3, name="cls_fc")(both)
    return keras.Model(inp, {"boxes": box, "classes": cls})


def test_singleton_concatenate_rebuilds_saves_and_reloads(tmp_path):
    m = _head_model()
    with pytest.raises(ValueError, match="at least 1 input"):
        keras.models.clone_model(m)  # what Keras itself does with this graph
    x = np.random.default_rng(0).random((4, 16, 16, 3), dtype=np.float32)
    w = tfprune.wrap(m, 0.5)
    s = tfprune.strip(w)
    assert isinstance(s.get_layer("box"), keras.layers.Activation)
    ref = m.predict(x, verbose=0)
    for k in ("boxes", "classes"):
        np.testing.assert_allclose(tfprune.strip(tfprune.wrap(m)).predict(x, verbose=0)[k], ref[k], rtol=1e-6, atol=1e-6)
    path = str(tmp_path / "s.keras")
    s.save(path)
    np.testing.assert_allclose(tfprune.load_model(path).predict(x, verbose=0)["boxes"], s.predict(x, verbose=0)["boxes"], rtol=1e-6)


@pytest.mark.slow  # ~3 min on 2 cores: run with `make test-all`
@pytest.mark.filterwarnings("ignore")
def test_yolov8_detector_wrap_fit_prune_strip_export(tmp_path):
    keras_cv = pytest.importorskip("keras_cv")
    backbone = keras_cv.models.YOLOV8Backbone(stackwise_channels=[16, 32, 64, 128], stackwise_depth=[1, 1, 1, 1],
                                              include_rescaling=False, input_shape=(64, 64, 3))
    det = keras_cv.models.YOLOV8Detector(num_classes=3, bounding_box_format="xywh", backbone=backbone, fpn_depth=1)
    w = tfprune.wrap(det)
    inv = tfprune.prunable_layers(w)
    assert len(inv) > 20
    rng = np.random.default_rng(0)
    x = rng.random((16, 64, 64, 3), dtype=np.float32)
    raw = {k: v.numpy() for k, v in det(x[:4], training=False).items()}  # raw heads (predict() also decodes and runs NMS)
    targets = {k: rng.standard_normal((16,) + tuple(v.shape[1:])).astype(np.float32) for k, v in w.output.items()}
    w.compile("adam", loss={k: "mse" for k in targets})
    w.fit(x, targets, batch_size=8, epochs=2, callbacks=[tfprune.ImportancePruning(0.7, end_step=3)], verbose=0)
    assert tfprune.prunable_layers(w).total_sparsity() == pytest.approx(0.7, abs=1e-4)
    s = tfprune.strip(w)
    got = s.predict(x[:4], verbose=0)
    assert set(got) == set(raw) and all(got[k].shape == raw[k].shape for k in raw)
    unpruned = tfprune.strip(tfprune.wrap(det)).predict(x[:4], verbose=0)
    for k in raw:  # the rebuild alone changes nothing
        np.testing.assert_allclose(unpruned[k], raw[k], rtol=1e-5, atol=1e-5)
    # The .tflite holds the network up to the raw head outputs (box decoding and NMS stay outside); parity on both heads.
    single = keras.Model(s.inputs, keras.layers.Concatenate(axis=-1)([s.output["boxes"], s.output["classes"]]))
    report = tfprune.export_tflite(single, str(tmp_path / "yolo.tflite"), mode="sparse", sample_inputs=x[:4])
    assert report.max_abs_diff < 1e-3 * max(1.0, float(np.abs(single.predict(x[:4], verbose=0)).max()))
