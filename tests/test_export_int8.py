"""Issue 12, item 2: int8 export on mobile networks (SE blocks, Dense heads) runs on XNNPack, with meaningful parity.

The fast tests use a small EfficientNet-like net (depthwise conv, squeeze-and-
excitation with a Reshape, Dense head). The slow tests build the real
tf_keras.applications / keras-cv networks; benchmarks/int8_matrix.py is the
matrix with numbers.
"""

import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tfprune._keras import keras
from tfprune.export import densified_values, densify_for_xnnpack, operators


def _digits(digits_data, n_train=2000, n_calib=200, n_test=200, side=16):
    (xt, yt), (xs, ys) = digits_data

    def resize(x):
        return np.repeat(tf.image.resize(x[..., None] if x.ndim == 3 else x, (side, side)).numpy(), 3, axis=-1)

    return (resize(xt[:n_train]), yt[:n_train]), resize(xt[n_train:n_train + n_calib]), (resize(xs[:n_test]), ys[:n_test])


def se_net(side=16, c=32):
    """Conv stem, an MBConv-like block with squeeze-and-excitation (Reshape as in EfficientNet), Dense head."""
    inp = keras.Input((side, side, 3))
    x = keras.layers.Conv2D(c, 3, padding="same", activation="relu", name="stem")(inp)
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", activation="relu", name="dw")(x)
    se = keras.layers.GlobalAveragePooling2D(name="se_squeeze")(x)
    se = keras.layers.Reshape((1, 1, c), name="se_reshape")(se)
    se = keras.layers.Conv2D(8, 1, activation="relu", name="se_reduce")(se)
    se = keras.layers.Conv2D(c, 1, activation="sigmoid", name="se_expand")(se)
    x = keras.layers.Multiply(name="se_excite")([x, se])
    x = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu", name="project")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    out = keras.layers.Dense(10, name="predictions")(x)
    return keras.Model(inp, out, name="se_net")


@pytest.fixture(scope="module")
def pruned_se(digits_data):
    keras.utils.set_random_seed(0)
    (xt, yt), _, _ = _digits(digits_data)
    w = tfprune.models.compile_classifier(tfprune.wrap(se_net()), 3e-3)
    w.fit(xt, yt, epochs=4, batch_size=64, verbose=0, callbacks=[tfprune.Pruning(0.7, include_outputs=True)])
    model = tfprune.strip(w)
    head = model.get_layer("predictions")  # the allocation leaves the small head dense-ish: prune it to 50% by magnitude
    k = head.kernel.numpy()
    head.kernel.assign(np.where(np.abs(k) < np.quantile(np.abs(k), 0.5), 0, k))
    return model


def test_se_net_int8_runs_on_xnnpack(pruned_se, digits_data, tmp_path):
    _, xc, (xs, ys) = _digits(digits_data)
    head = pruned_se.get_layer("predictions").kernel.numpy()
    assert np.mean(head == 0) >= 0.5  # the Dense head is pruned: the converter stores it sparse
    r = tfprune.export_tflite(pruned_se, tmp_path / "se.tflite", mode="int8", sample_inputs=(xs, ys), representative_data=xc, n_samples=200)
    assert r.runtime == "xnnpack"
    assert len(r.dense_for_xnnpack) == 1  # the head (named by the converter)
    ops = operators(open(r.path, "rb").read())
    assert "FULLY_CONNECTED" in ops and "SHAPE" in ops  # the Reshape of the SE block is dynamic, as in EfficientNet
    assert "DENSIFY" in ops  # conv kernels stay sparse (XNNPack densifies int8 conv weights itself)
    head_t = [t for t in r.tensors if t.shape == (10, 64)]
    assert head_t[0].stored == "dense" and head_t[0].zero_fraction >= 0.5  # dense storage, zeros kept
    assert any(t.stored == "sparse" and t.shape == (64, 3, 3, 32) for t in r.tensors)
    assert r.keras_accuracy > 0.3  # trained a little: well above chance (0.1), logits spread out
    assert r.rel_error < 0.05 and r.outputs[0].top1_samples >= 180 and r.top1_agreement >= 0.95
    assert abs(r.tflite_accuracy - r.keras_accuracy) <= 0.03 and r.calibration_overlap == 0


def test_se_net_all_sparse_falls_back_at_first_invoke(pruned_se, digits_data, tmp_path):
    """Without xnnpack_safe XNNPack accepts the file at allocate_tensors and refuses it at the first invoke (the EfficientNet failure)."""
    from ai_edge_litert.interpreter import Interpreter

    _, xc, (xs, ys) = _digits(digits_data)
    r = tfprune.export_tflite(pruned_se, tmp_path / "se.tflite", mode="int8", sample_inputs=(xs, ys), representative_data=xc,
                              n_samples=100, xnnpack_safe=False)
    content = open(r.path, "rb").read()
    it = Interpreter(model_content=content)
    it.allocate_tensors()  # no error here ...
    it.set_tensor(it.get_input_details()[0]["index"], xs[:1])
    with pytest.raises(RuntimeError, match="failed to delegate FULLY_CONNECTED"):
        it.invoke()  # ... but here
    assert r.runtime.startswith("builtin (XNNPack refused: failed to delegate FULLY_CONNECTED")
    assert r.dense_for_xnnpack == [] and [t.stored for t in r.tensors if t.shape == (10, 64)] == ["sparse"]
    safe = tfprune.export_tflite(pruned_se, tmp_path / "safe.tflite", mode="int8", sample_inputs=(xs, ys), representative_data=xc, n_samples=100)
    assert r.rel_error < 0.05 and abs(r.rel_error - safe.rel_error) < 0.01  # the same int8 model, on another runtime


def test_densify_for_xnnpack_keeps_the_values(tmp_path):
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="relu", name="a"), keras.layers.Dense(8, name="b")])
    rng = np.random.default_rng(0)
    for layer in m.layers:
        k = layer.kernel.numpy()
        k[rng.random(k.shape) < 0.8] = 0
        layer.kernel.assign(k)
    rep = rng.standard_normal((64, 64)).astype("float32")
    conv = tf.lite.TFLiteConverter.from_keras_model(m)
    conv.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY, tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([rep[i:i + 1]] for i in range(len(rep)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    sparse = conv.convert()
    assert operators(sparse).count("DENSIFY") == 2
    dense, names = densify_for_xnnpack(sparse)
    assert len(names) == 2 and operators(dense).count("DENSIFY") == 0
    assert operators(dense) == [op for op in operators(sparse) if op != "DENSIFY"]
    # the kernels in the new file are the DENSIFY outputs of the old one, value for value
    from ai_edge_litert import schema_py_generated as schema

    old, new = schema.Model.GetRootAs(sparse, 0).Subgraphs(0), schema.Model.GetRootAs(dense, 0).Subgraphs(0)
    assert new.TensorsLength() == old.TensorsLength() - 2
    model_old = schema.Model.GetRootAs(sparse, 0)
    opcodes = [model_old.OperatorCodes(k).BuiltinCode() for k in range(model_old.OperatorCodesLength())]
    densify = [old.Operators(k) for k in range(old.OperatorsLength()) if opcodes[old.Operators(k).OpcodeIndex()] == schema.BuiltinOperator.DENSIFY]
    pairs = {int(op.Outputs(0)): old.Tensors(int(op.Inputs(0))).Name() for op in densify}  # DENSIFY output -> its sparse input's name
    assert sorted(n.decode() for n in pairs.values()) == sorted(names)  # reported by the weights' own names
    values = densified_values(sparse, list(pairs))
    model = schema.Model.GetRootAs(dense, 0)
    for i, name in pairs.items():
        (j,) = [j for j in range(new.TensorsLength()) if new.Tensors(j).Name() == name]
        stored = np.frombuffer(model.Buffers(new.Tensors(j).Buffer()).DataAsNumpy().tobytes(), np.int8).reshape(values[i].shape)
        np.testing.assert_array_equal(stored, values[i])
        assert np.mean(stored == 0) >= 0.75  # the pruned zeros are there, stored dense
    # every buffer 16-byte aligned, as the converter writes them
    base = np.frombuffer(dense, np.uint8).ctypes.data
    for b in range(model.BuffersLength()):
        if model.Buffers(b).DataLength():
            assert (model.Buffers(b).DataAsNumpy().ctypes.data - base) % 16 == 0
    # both files compute the same outputs with the builtin kernels; only the dense one runs on XNNPack
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from tfprune.export import make_interpreter

    def builtin(content):
        it = Interpreter(model_content=content, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        it.allocate_tensors()
        outs = []
        for i in range(16):
            it.set_tensor(it.get_input_details()[0]["index"], rep[i:i + 1])
            it.invoke()
            outs.append(it.get_tensor(it.get_output_details()[0]["index"]))
        return np.concatenate(outs)

    np.testing.assert_array_equal(builtin(sparse), builtin(dense))
    assert make_interpreter(sparse)[1].startswith("builtin (XNNPack refused") and make_interpreter(dense)[1] == "xnnpack"
    assert densify_for_xnnpack(dense) == (dense, [])  # nothing left to do


def _effnetv2_classifier():
    from keras_cv.models import EfficientNetV2Backbone, ImageClassifier

    backbone = EfficientNetV2Backbone(
        include_rescaling=True, width_coefficient=0.5, depth_coefficient=0.5, stackwise_kernel_sizes=[3, 3, 3, 3],
        stackwise_num_repeats=[1, 2, 2, 2], stackwise_input_filters=[32, 16, 32, 64], stackwise_output_filters=[16, 32, 64, 96],
        stackwise_expansion_ratios=[1, 4, 4, 4], stackwise_squeeze_and_excite_ratios=[0.0, 0.0, 0.25, 0.25],
        stackwise_strides=[1, 2, 2, 2], stackwise_conv_types=["fused", "fused", "unfused", "unfused"], input_shape=(96, 96, 3),
    )
    return ImageClassifier(backbone=backbone, num_classes=10, activation=None)


def _app(name, side, **kw):
    return lambda: getattr(keras.applications, name)(weights=None, input_shape=(side, side, 3), classes=10, classifier_activation=None, **kw)


# name -> (builder, side, pixel scale, has a Dense head)
REAL_NETS = {
    "MobileNetV2": (_app("MobileNetV2", 96, alpha=0.35), 96, 1.0, True),
    "MobileNetV3Small": (_app("MobileNetV3Small", 96), 96, 255.0, False),
    "EfficientNetB0": (_app("EfficientNetB0", 96), 96, 255.0, True),
    "ResNet50": (_app("ResNet50", 64), 64, 1.0, True),
    "keras-cv EfficientNetV2": (_effnetv2_classifier, 96, 255.0, True),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(REAL_NETS))
def test_real_networks_int8_on_xnnpack(name, digits_data, tmp_path):
    """wrap -> fit (1 epoch, 512 digits, Pruning(0.8)) -> strip -> int8 on XNNPack (benchmarks/int8_matrix.py has the numbers)."""
    if name.startswith("keras-cv"):
        pytest.importorskip("keras_cv")
    build, side, scale, dense_head = REAL_NETS[name]
    (xt, yt), xc, (xs, ys) = _digits(digits_data, n_train=512, n_calib=64, n_test=32, side=side)
    keras.utils.set_random_seed(0)
    w = tfprune.models.compile_classifier(tfprune.wrap(build()), 1e-3)
    w.fit(xt * scale, yt, epochs=1, batch_size=64, verbose=0, callbacks=[tfprune.Pruning(0.8)])
    pruned = tfprune.strip(w)
    r = tfprune.export_tflite(pruned, tmp_path / "m.tflite", mode="int8", sample_inputs=(xs * scale, ys), representative_data=xc * scale, n_samples=32)
    assert r.runtime == "xnnpack" and r.calibration_overlap == 0 and r.n_calibration == 64
    assert densify_for_xnnpack(open(r.path, "rb").read())[1] == []  # no int8 FC kernel left behind a DENSIFY
    if not dense_head:
        assert r.dense_for_xnnpack == []  # MobileNetV3's head is a 1x1 convolution
    assert r.rel_error < 0.05  # int8 against float, relative to the output's norm
    out = r.outputs[0]
    assert out.shape == (10,) and out.top1_samples + out.top1_ties == 32
    if out.top1_samples:
        assert r.top1_agreement >= 0.9


def _small_dense_head(inputs=8):
    """conv -> global pool -> Dense(10) with ``inputs`` (< 16) inputs to the Dense; kernels 60% zeros."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 12, 1))
    x = keras.layers.Conv2D(inputs, 3, activation="relu", name="conv")(inp)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    m = keras.Model(inp, keras.layers.Dense(10, name="head")(x))
    for name in ("conv", "head"):
        k = m.get_layer(name).kernel
        v = k.numpy()
        k.assign(np.where(np.abs(v) < np.quantile(np.abs(v), 0.6), 0.0, v))
    return m


@pytest.mark.parametrize("xnnpack_safe", [True, False])
def test_int8_dense_head_with_few_inputs_is_stored_right(tmp_path, xnnpack_safe):
    """TF 2.21 encodes the int8 kernel of a Dense with < 16 inputs as 1x16 blocks: the file computes wrong outputs unless it is stored dense."""
    from tfprune.quantize import tflite_kernels

    m = _small_dense_head()
    rng = np.random.default_rng(0)
    xc, xs = rng.random((64, 12, 12, 1), dtype=np.float32), rng.random((64, 12, 12, 1), dtype=np.float32)
    kw = dict(mode="int8", sample_inputs=xs, representative_data=xc, n_samples=64, xnnpack_safe=xnnpack_safe)
    bad = tfprune.export_tflite(m, tmp_path / "bad.tflite", check_encoding=False, **kw)
    head = [k for k in tflite_kernels(open(bad.path, "rb").read()) if k["op"] == "FULLY_CONNECTED"][0]
    assert head["sparse"] and head["error"] is not None and "outside the shape (10, 8)" in head["error"]  # the converter's encoding
    assert bad.rel_error > 0.5 and bad.dense_wrong_encoding == []  # what export_tflite wrote before the check
    with pytest.warns(UserWarning, match=r"1 kernel\(s\) stored dense because the converter's sparse encoding"):
        r = tfprune.export_tflite(m, tmp_path / "good.tflite", **kw)
    assert len(r.dense_wrong_encoding) == 1 and "(10, 8)" in r.dense_wrong_encoding[0]
    assert any("sparse encoding does not hold" in n for n in r.notes)
    assert r.rel_error < 0.05 and r.runtime == "xnnpack"
    kernels = {t.shape: t for t in r.tensors if len(t.shape) in (2, 4)}
    assert kernels[(10, 8)].stored == "dense" and kernels[(10, 8)].zero_fraction >= 0.5  # zeros kept, stored dense
    assert kernels[(8, 3, 3, 1)].stored == "sparse"  # the conv kernel's encoding is right: it stays sparse
    for mode in ("sparse", "dynamic"):  # float / hybrid kernels of the same shape encode right: nothing changed
        ok = tfprune.export_tflite(m, tmp_path / f"{mode}.tflite", mode=mode, sample_inputs=xs, n_samples=16)
        assert ok.dense_wrong_encoding == [] and ok.rel_error < 1e-4
