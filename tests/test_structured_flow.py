"""The whole structured flow on the models users ship: plan -> shrink -> verified TFLite export (float and int8),
and keras-cv backbones built offline (what cannot be pruned is listed with its reason)."""

from __future__ import annotations

import numpy as np
import pytest

import tfprune
from tfprune._keras import keras
from tfprune.export import export_tflite
from tfprune.inventory.profiling import profile
from tfprune.structured import channel_graph, prune_channels

L = keras.layers


@pytest.fixture(scope="module")
def trained_resnet():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(640, 16, 16, 1)).astype("float32")
    y = (x[:, :8].mean(axis=(1, 2, 3)) > x[:, 8:].mean(axis=(1, 2, 3))).astype("int64")
    model = tfprune.models.resnet_cifar(8, (16, 16, 1), num_classes=2)
    tfprune.models.compile_classifier(model, 1e-3)
    model.fit(x[:512], y[:512], epochs=2, batch_size=64, verbose=0)
    train, test = (x[:512], y[:512]), (x[512:], y[512:])
    small, rep = prune_channels(model, macs=0.5, data=train, eval_data=test, finetune_epochs=1, batch_size=64)
    return model, small, rep, train, test


@pytest.mark.parametrize("mode", ["float", pytest.param("int8", marks=pytest.mark.slow)])
def test_shrunk_model_goes_through_the_verified_export(trained_resnet, mode, tmp_path):
    model, small, rep, train, test = trained_resnet
    assert profile(small).macs == rep.plan.macs_after <= 0.52 * profile(model).macs
    kw = {"representative_data": train[0][:128]} if mode == "int8" else {}
    ex = export_tflite(small, tmp_path / f"small_{mode}.tflite", mode=mode, sample_inputs=test, **kw)
    assert ex.n_samples == len(test[0]) and not ex.inputs_were_random
    # float: the file computes the Keras model; int8: quantization error only, same decisions nearly everywhere
    assert ex.max_abs_diff <= (1e-4 if mode == "float" else 0.5 * max(1.0, float(np.abs(small.predict(test[0], verbose=0)).max())))
    assert ex.top1_agreement >= (1.0 if mode == "float" else 0.9)
    assert ex.tflite_accuracy == pytest.approx(rep.acc_after, abs=0.0 if mode == "float" else 0.1)
    dense = export_tflite(model, tmp_path / "dense.tflite", mode=mode, sample_inputs=test, **kw)
    assert ex.bytes < dense.bytes


@pytest.mark.slow  # keeps the default suite under 12 min; make test-all runs it
def test_keras_cv_yolov8_backbone_flow(tmp_path):
    """keras-cv YOLOV8Backbone built offline with constructor arguments: plan 30% of MACs, shrink (checked inside
    against the masked model), export float TFLite with parity; its Rescaling input and its output stay."""
    pytest.importorskip("keras_cv")
    from keras_cv.models import YOLOV8Backbone

    keras.utils.set_random_seed(0)
    model = YOLOV8Backbone(stackwise_channels=[8, 16, 16, 32], stackwise_depth=[1, 1, 1, 1], include_rescaling=True, input_shape=(32, 32, 3))
    cg = channel_graph(model)
    assert cg.frozen and all(reason for reason in cg.frozen.values())  # the input and the output, with their reasons
    small, rep = prune_channels(model, macs=0.3, min_channels=2)
    assert rep.max_abs_diff <= 1e-4
    assert abs(rep.plan.achieved - 0.3) <= 0.05 and profile(small).macs == rep.plan.macs_after
    assert small.output_shape == model.output_shape  # the output channels are never pruned by default
    x = (np.random.default_rng(0).random((8, 32, 32, 3)) * 255).astype("float32")
    ex = export_tflite(small, tmp_path / "yolo.tflite", mode="float", sample_inputs=x)
    assert ex.max_abs_diff <= 1e-3 * max(1.0, float(np.abs(small.predict(x, verbose=0)).max()))


def test_keras_cv_efficientnetv2_backbone_lists_what_it_cannot_prune():
    """keras-cv EfficientNetV2Backbone hides its convolutions inside MBConv/FusedMBConv block layers: those groups are
    frozen with a reason naming the layer (here: all of them), and a plan refuses with those reasons and a fix."""
    pytest.importorskip("keras_cv")
    from keras_cv.models import EfficientNetV2Backbone

    keras.utils.set_random_seed(0)
    model = EfficientNetV2Backbone(
        include_rescaling=True, width_coefficient=0.5, depth_coefficient=0.5, stackwise_kernel_sizes=[3, 3, 3, 3],
        stackwise_num_repeats=[1, 1, 1, 1], stackwise_input_filters=[32, 16, 32, 64], stackwise_output_filters=[16, 32, 64, 96],
        stackwise_expansion_ratios=[1, 4, 4, 4], stackwise_squeeze_and_excite_ratios=[0.0, 0.0, 0.25, 0.25],
        stackwise_strides=[1, 2, 2, 2], stackwise_conv_types=["fused", "fused", "unfused", "unfused"], input_shape=(64, 64, 3),
    )
    cg = channel_graph(model)
    frozen = cg.frozen
    assert frozen, "expected frozen groups"
    reasons = " ".join(frozen.values())
    assert "MBConv" in reasons or "FusedMBConv" in reasons, reasons
    assert not cg.prunable and "MBConvBlock" in cg.table()
    with pytest.raises(ValueError, match="no channel group tfprune can remove.*MBConvBlock.*Fix:"):
        tfprune.plan(model, macs=0.3, granularity="channel")
