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
    w.fit(x, targets, batch_size=8, epochs=2, callbacks=[tfprune.Pruning(0.7, end_step=3)], verbose=0)
    assert tfprune.prunable_layers(w).total_sparsity() == pytest.approx(0.7, abs=1e-4)
    s = tfprune.strip(w)
    got = s.predict(x[:4], verbose=0)
    assert set(got) == set(raw) and all(got[k].shape == raw[k].shape for k in raw)
    unpruned = tfprune.strip(tfprune.wrap(det)).predict(x[:4], verbose=0)
    for k in raw:  # the rebuild alone changes nothing
        np.testing.assert_allclose(unpruned[k], raw[k], rtol=1e-5, atol=1e-5)
    # The .tflite holds the network up to the raw head outputs (box decoding and NMS stay outside); parity on each head.
    report = tfprune.export_tflite(s, str(tmp_path / "yolo.tflite"), mode="sparse", sample_inputs=x[:4])
    assert [o.name for o in report.outputs] == ["boxes", "classes"]
    assert all(o.rel_error < 1e-5 for o in report.outputs)


def _yolov8(num_classes=3, side=64):
    keras_cv = pytest.importorskip("keras_cv")
    backbone = keras_cv.models.YOLOV8Backbone(stackwise_channels=[16, 32, 64, 128], stackwise_depth=[1, 1, 1, 1],
                                              include_rescaling=False, input_shape=(side, side, 3))
    det = keras_cv.models.YOLOV8Detector(num_classes=num_classes, bounding_box_format="xywh", backbone=backbone, fpn_depth=1)
    det.compile(box_loss="ciou", classification_loss="binary_crossentropy", optimizer="adam")  # YOLOV8's own losses
    return det


@pytest.mark.slow  # 6-18 min on 2 shared cores: keras-cv's label encoder traces slowly; run with `make test-all`
@pytest.mark.filterwarnings("ignore")
def test_yolov8_trained_with_its_own_losses_pruned_and_exported(tmp_path):
    """wrap -> TaskModel(net, det).fit with CIoU + BCE (YOLOV8's compute_loss and label encoder) and Pruning -> strip -> TFLite per head."""
    from tfprune.training.tasks import TaskModel, synthetic_boxes

    keras.utils.set_random_seed(0)
    det = _yolov8()
    x, y = synthetic_boxes(48, side=64, max_boxes=2, num_classes=3, seed=0)
    net = tfprune.wrap(det)
    trainer = TaskModel(net, det)
    trainer.compile(keras.optimizers.Adam(1e-3))
    start = trainer.evaluate(x, y, batch_size=16, verbose=0)
    assert start == pytest.approx(det.evaluate(x, y, batch_size=16, verbose=0)[0], rel=1e-4)  # det's own loss on the same weights
    hist = trainer.fit(x, y, epochs=4, batch_size=8, verbose=0, callbacks=[tfprune.Pruning(0.7)])
    loss = hist.history["loss"]  # the training loss (inference-mode BatchNorm statistics barely move in 24 steps)
    assert loss[-1] < 0.7 * loss[0]
    inv = tfprune.prunable_layers(net)  # pruned through the nested network
    assert len(inv) > 20 and inv.total_sparsity() == pytest.approx(0.7, abs=1e-3)
    pruned = tfprune.strip(net)
    assert tfprune.prunable_layers(pruned).total_sparsity() == pytest.approx(0.7, abs=1e-3)
    raw = trainer.predict(x[:8], verbose=0)
    assert set(raw) == {"boxes", "classes"} and raw["boxes"].shape == (8, 84, 64)  # 8x8 + 4x4 + 2x2 anchors, 4 x 16 distance bins
    # box decoding and NMS stay outside the network: the task decodes the pruned network's raw heads
    decoded = det.decode_predictions(pruned(x[:8], training=False), x[:8])
    assert decoded["boxes"].shape[0] == 8
    r = tfprune.export_tflite(pruned, tmp_path / "yolo.tflite", mode="sparse", sample_inputs=x[:8], n_samples=8)
    assert [o.name for o in r.outputs] == ["boxes", "classes"] and [o.shape for o in r.outputs] == [(84, 64), (84, 3)]
    assert all(o.rel_error < 1e-5 for o in r.outputs) and r.runtime == "xnnpack"
    assert any(t.stored == "sparse" and t.zero_fraction > 0.5 for t in r.tensors)


@pytest.mark.slow  # ~10 min on 2 shared cores; run with `make test-all`
@pytest.mark.filterwarnings("ignore")
def test_retinanet_trained_with_its_own_losses_backbone_pruned(tmp_path):
    """keras-cv RetinaNet built offline (small ResNetBackbone): focal + smooth-L1 through TaskModel, Pruning, strip, TFLite per output.

    Its FeaturePyramid and PredictionHead are subclassed keras-cv layers (their convs live inside the layer's Python): the
    layer-wise wrapper cannot reach them, so they are skipped with the reason and only the backbone's convs are pruned.
    """
    keras_cv = pytest.importorskip("keras_cv")
    from tfprune.training.tasks import TaskModel, synthetic_boxes

    keras.utils.set_random_seed(0)
    backbone = keras_cv.models.ResNetBackbone(stackwise_filters=[16, 32, 64, 128], stackwise_blocks=[1, 1, 1, 1],
                                              stackwise_strides=[1, 2, 2, 2], include_rescaling=False, input_shape=(64, 64, 3))
    det = keras_cv.models.RetinaNet(num_classes=3, bounding_box_format="xywh", backbone=backbone)
    det.compile(classification_loss="focal", box_loss="smoothl1", optimizer="adam")
    inv = tfprune.prunable_layers(det)
    opaque = {s.layer_type for s in inv.skipped if "not a prunable layer type" in s.reason}
    assert opaque == {"FeaturePyramid", "PredictionHead"}
    x, y = synthetic_boxes(32, side=64, max_boxes=2, num_classes=3, seed=0)
    net = tfprune.wrap(det)
    trainer = TaskModel(net, det)
    trainer.compile(keras.optimizers.Adam(1e-3))
    start = trainer.evaluate(x, y, batch_size=16, verbose=0)
    assert start == pytest.approx(det.evaluate(x, y, batch_size=16, verbose=0)[0], rel=1e-4)  # RetinaNet's own loss
    hist = trainer.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[tfprune.Pruning(0.7)])
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert len(tfprune.prunable_layers(net)) == len(inv) and tfprune.prunable_layers(net).total_sparsity() == pytest.approx(0.7, abs=1e-3)
    pruned = tfprune.strip(net)
    r = tfprune.export_tflite(pruned, tmp_path / "retinanet.tflite", mode="sparse", sample_inputs=x[:8], n_samples=8)
    assert [o.name for o in r.outputs] == ["box", "classification"] and [o.shape for o in r.outputs] == [(774, 4), (774, 3)]
    assert all(o.rel_error < 1e-5 for o in r.outputs)
